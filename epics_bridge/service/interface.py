"""The one interface of whatever runs tasks, and how a process serves it until a signal.

:class:`~epics_bridge.engine.runner.Runner` (every task in this process) and
:class:`~epics_bridge.service.supervisor.Supervisor` (worker processes) both are a
:class:`Service`; the launcher, ``bridge.run()``, ``BridgeDaemon`` and the ``bridge_ioc`` fixture
use nothing else of them.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Callable, NoReturn, Optional, Protocol

from loguru import logger

__all__ = ["Service", "exit_process", "serve"]


class Service(Protocol):
    """What runs tasks: :class:`~epics_bridge.engine.runner.Runner` (this process) and
    :class:`~epics_bridge.service.supervisor.Supervisor` (worker processes)."""

    def start(self) -> None:
        """Start every task; returns once they were started."""

    def stop(self) -> None:
        """Ask for a graceful stop: safe from a signal handler and from any thread."""

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        """Serve until a stop was asked for and carried out: the exit status (None: ``timeout``
        passed first)."""

    def ready(self) -> bool:
        """Every task serves its prefix now."""


def serve(service: Service) -> int:
    """Start ``service``, serve until SIGTERM/SIGINT, stop it gracefully; the exit status."""
    restore = _on_signals(service.stop)
    try:
        service.start()
        status = service.wait()
        assert status is not None, "wait() without a timeout returns only once stopped"
        return status
    finally:
        restore()


def _on_signals(stop: Callable[[], None]) -> Callable[[], None]:
    """SIGTERM and SIGINT ask for a graceful stop; SIGHUP (a reload, which needs worker processes:
    the supervisor takes it over) and SIGUSR1/2 must at least not kill. Only the main thread can
    set handlers: elsewhere (a test driving a service) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.signal(sig, lambda *_: stop()) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        previous[sig] = signal.signal(sig, signal.SIG_IGN)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


def exit_process(status: int) -> NoReturn:
    """End the process once its service has stopped. Threads that tasks started and left running
    (a non-daemon thread, an executor's job) would keep the interpreter alive after the stop, past
    any grace, until the supervisor or systemd kills it: they are abandoned, and the log says so."""
    left = [t.name for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if not left:
        sys.exit(status)
    logger.warning("abandoning {} thread(s) the tasks left running: {}", len(left), ", ".join(left))
    logger.remove()  # flushes and closes every sink
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(status)
