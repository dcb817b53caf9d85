"""Runs tasks in this process: a loop and a heartbeat thread per task, stop on SIGTERM/SIGINT, and the
watchdog's exit.

All loops share one p4p context (one TCP connection per IOC, however many tasks) and all
heartbeats share a second one, kept apart so that task IO never delays a pulse.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import List, Optional, Sequence, Union

from loguru import logger
from p4p.client.thread import Context

from .cycle import Loop
from .heartbeat import Heartbeat
from .hooks import HookList, Hooks
from .io import BridgeIO, PVError
from .logs import LogConfig, configure
from .registry import ConfigError, Task
from .status import TaskStatus

__all__ = ["Runner", "run", "EXIT_OK", "EXIT_CONFIG", "EXIT_STUCK"]

EXIT_OK = 0
#: Bad configuration: nothing was started.
EXIT_CONFIG = 2
#: The watchdog ended the process because a task stayed stuck.
EXIT_STUCK = 3


class Runner:
    """Start with :meth:`start`, end with :meth:`stop`; :meth:`run` does both around the signals."""

    def __init__(self, tasks: Sequence[Task], hooks: Sequence[Hooks] = (), stop_grace: float = 5.0) -> None:
        if not tasks:
            raise ConfigError("no tasks to run")
        self.tasks = list(tasks)
        self.hooks = HookList(hooks)
        self.stop_grace = stop_grace
        self.loops: List[Loop] = []
        self.heartbeats: List[Heartbeat] = []
        self._stop_requested = threading.Event()
        self._exit_lock = threading.Lock()
        self._contexts: List[Context] = []

    def start(self) -> None:
        io_context, pulse_context = Context("pva", nt=False), Context("pva", nt=False)
        self._contexts = [io_context, pulse_context]
        for task in self.tasks:
            _log_summary(task)
            loop = Loop(task, BridgeIO(io_context, task.timeout), self.hooks)
            self.loops.append(loop)
            self.heartbeats.append(Heartbeat(task, loop, BridgeIO(pulse_context, task.timeout), self.hooks,
                                             self._stuck_limit))
        for part in [*self.loops, *self.heartbeats]:
            part.start()
        logger.info("running {} task(s) in process {}", len(self.tasks), os.getpid())
        self.hooks.started(self.tasks)

    def request_stop(self, *_: object) -> None:
        """Safe from a signal handler: only sets a flag the main thread waits on."""
        self._stop_requested.set()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until a stop is requested (True) or ``timeout`` passes (False)."""
        return self._stop_requested.wait(timeout)

    def stop(self) -> None:
        """Let running cycles finish for up to ``stop_grace`` s, abandon the rest with Busy=0."""
        logger.info("stopping: waiting up to {:g} s for running cycles", self.stop_grace)
        self.hooks.stopping()
        for loop in self.loops:
            loop.stop()
        deadline = time.monotonic() + self.stop_grace
        for loop in self.loops:
            loop.thread.join(max(0.0, deadline - time.monotonic()))
        for loop in self.loops:
            if loop.thread.is_alive() and loop.in_cycle:
                _abandon(loop)
        for heartbeat in self.heartbeats:
            heartbeat.stop()
        for heartbeat in self.heartbeats:
            heartbeat.thread.join(timeout=2.0)
        for context in self._contexts:
            context.close()
        logger.info("stopped")

    def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT, stop gracefully; returns the exit status (0)."""
        restore = _install_signal_handlers(self.request_stop)
        try:
            self.start()
            self.wait()
            self.stop()
        finally:
            restore()
        return EXIT_OK

    def _stuck_limit(self, task: Task, reason: str) -> None:
        """Called from a heartbeat thread; never returns."""
        with self._exit_lock:
            logger.bind(task=task.name).critical(
                "watchdog: stuck for {} heartbeat periods in a row; ending the process", task.max_stuck_cycles)
            logger.critical("watchdog: task '{}' stuck for {} heartbeat periods in a row ({}); exiting with "
                            "status {} so that the supervisor restarts the process",
                            task.name, task.max_stuck_cycles, reason, EXIT_STUCK)
            self.hooks.fatal(task, reason)
            os._exit(EXIT_STUCK)


def _abandon(loop: Loop) -> None:
    """End a cycle that did not finish in the grace time: it counts as interrupted."""
    loop.log.error("cycle still running at shutdown: abandoned, reported as EXCEPTION with Busy=0")
    pvs = loop.task.pvs
    try:
        loop.io.put({pvs.task_status: int(TaskStatus.EXCEPTION)}, timeout=2.0)
        loop.io.put({pvs.busy: 0, **({pvs.trigger: 0} if loop.task.period is None else {})}, timeout=2.0)
    except PVError as exc:
        loop.log.error("could not clear Busy for the abandoned cycle: {}", exc)


def _install_signal_handlers(handler):
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    return lambda: [signal.signal(sig, old) for sig, old in previous.items()]


def _log_summary(task: Task) -> None:
    log = logger.bind(task=task.name)
    log.info("task '{}' ({}) on prefix {}: {}; heartbeat every {:g} s, stalled after {:g} s, exit after {} "
             "stuck periods, PV timeout {:g} s", task.name, task.source, task.prefix, task.mode,
             task.heartbeat_period, task.stall_timeout, task.max_stuck_cycles, task.timeout)
    for logical, pv in task.pvs.as_dict.items():
        log.info("  {:<16} -> {}", logical, pv)


def run(
    tasks: Sequence[Task],
    *,
    log_dir: Union[str, Path, None] = "logs",
    log_level: str = "INFO",
    log_rotation: Union[str, int] = "10 MB",
    log_retention: Union[str, int] = 5,
    hooks: Sequence[Hooks] = (),
    stop_grace: float = 5.0,
) -> int:
    """Configure logging and run ``tasks`` until stopped; returns the process exit status."""
    configure(tasks, LogConfig(directory=Path(log_dir) if log_dir is not None else None, level=log_level,
                               rotation=log_rotation, retention=log_retention))
    return Runner(tasks, hooks=hooks, stop_grace=stop_grace).run()
