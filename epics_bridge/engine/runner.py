"""Runs tasks in this process: a loop and a heartbeat thread per task, stop on SIGTERM/SIGINT, and the
watchdog's exit.

All loops share one p4p context (one TCP connection per IOC, however many tasks) and all
heartbeats share a second one, kept apart so that task IO never delays a pulse.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, List, Optional, Sequence, Union

from loguru import logger
from p4p.client.thread import Context

from ..io import BridgeIO
from ..observe.hooks import HookList, Hooks
from ..observe.logs import LogConfig, configure
from ..registry import ConfigError, Task
from . import memory
from .cycle import Loop, line_in_task
from .exits import EXIT_CONFIG, EXIT_OK, EXIT_STUCK
from .heartbeat import Heartbeat
from .timelimit import TimeLimits

__all__ = ["Runner", "prepare", "run", "EXIT_OK", "EXIT_CONFIG", "EXIT_STUCK"]


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
        memory.limit_arenas()
        _pace_gil(len(self.tasks))
        io_context, pulse_context = Context("pva", nt=False), Context("pva", nt=False)
        self._contexts = [io_context, pulse_context]
        limits = TimeLimits()
        for task in self.tasks:
            _log_summary(task)
            loop = Loop(task, BridgeIO(io_context, task.timeout), self.hooks, limits)
            self.loops.append(loop)
            self.heartbeats.append(
                Heartbeat(task, loop, BridgeIO(pulse_context, task.timeout), self.hooks, self._stuck_limit)
            )
        parts: List[Union[Loop, Heartbeat]] = [*self.loops, *self.heartbeats]
        for part in parts:
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
                loop.abandon()
        for heartbeat in self.heartbeats:
            heartbeat.stop()
        for heartbeat in self.heartbeats:
            heartbeat.thread.join(timeout=2.0)
        for context in self._contexts:
            context.close()
        self.hooks.close()
        logger.info("stopped")

    def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT, stop gracefully; returns the exit status (0)."""
        restore = _install_signal_handlers(self.request_stop)
        try:
            self.start()
            self._housekeep()
            self.stop()
        finally:
            restore()
        return EXIT_OK

    def _housekeep(self) -> None:
        """Until a stop is requested: memory tidied once start-up's burst is over, then now and then."""
        up_by = time.monotonic() + memory.START_LIMIT
        while not all(loop.serving for loop in self.loops) and time.monotonic() < up_by:
            if self.wait(1.0):
                return
        delay = memory.SETTLE
        while not self.wait(delay):
            logger.debug("memory tidied: free pages returned in {:.3f} s", memory.tidy())
            delay = memory.PERIOD

    def _stuck_limit(self, task: Task, reason: str) -> None:
        """Called from a heartbeat thread; never returns."""
        with self._exit_lock:
            stack = _stalled_stack(next(loop for loop in self.loops if loop.task is task))
            trace = "; its loop thread is at:\n" + "".join(stack.format()).rstrip() if stack else ""
            where = f"; its loop is at {line_in_task(stack, task)}" if stack else ""
            logger.bind(task=task.name).critical(
                "watchdog: stuck for {} heartbeat periods in a row; ending the process{}", task.max_stuck_cycles, trace
            )
            logger.critical(
                "watchdog: task '{}' stuck for {} heartbeat periods in a row ({}){}; exiting "
                "with status {} so that the supervisor restarts the process",
                task.name,
                task.max_stuck_cycles,
                reason,
                where,
                EXIT_STUCK,
            )
            self.hooks.fatal(task, reason + where)
            os._exit(EXIT_STUCK)


def _stalled_stack(loop: Loop) -> Optional[traceback.StackSummary]:
    """The loop thread's stack if it is stalled (not when it waits and only the IOC is gone)."""
    ident = loop.thread.ident
    frame = sys._current_frames().get(ident) if ident is not None and loop.stalled(time.monotonic()) else None
    return traceback.extract_stack(frame) if frame is not None else None


def _install_signal_handlers(handler):
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    # A reload (SIGHUP, systemctl reload) needs worker processes; here it must at least not kill.
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    return lambda: [signal.signal(sig, old) for sig, old in previous.items()]


def _log_summary(task: Task) -> None:
    log = logger.bind(task=task.name)
    log.info(
        "task '{}' ({}) on prefix {}: {}; heartbeat every {:g} s, stalled after {:g} s, exit after {} "
        "stuck periods, PV timeout {:g} s",
        task.name,
        task.source,
        task.prefix,
        task.mode,
        task.heartbeat_period,
        task.stall_timeout,
        task.max_stuck_cycles,
        task.timeout,
    )
    for logical, pv in task.pvs.as_dict.items():
        log.info("  {:<16} -> {}", logical, pv)


def prepare(
    tasks: Sequence[Task],
    *,
    log_dir: Union[str, Path, None] = "logs",
    log_level: str = "INFO",
    log_rotation: Union[str, int] = "10 MB",
    log_retention: Union[str, int] = 5,
    p4p_log_level: str = "WARNING",
    process_log: bool = True,
    log_pvs: bool = True,
    metrics_port: Optional[int] = None,
    metrics_addr: str = "127.0.0.1",
    hooks: Sequence[Hooks] = (),
    stop_grace: float = 5.0,
) -> Runner:
    """Everything that can refuse to start, done before anything starts: logging configured, the
    metrics port bound (ConfigError if either is impossible), the systemd notifier and the log PV
    publisher attached. Returns a runner ready to :meth:`~Runner.run`.

    ``log_pvs``: publish each task's lines to its log PVs where its IOC serves them (db/bridge-logs.db).
    ``metrics_port``: serve Prometheus metrics on ``metrics_addr``.
    """
    configure(
        tasks,
        LogConfig(
            directory=Path(log_dir) if log_dir is not None else None,
            level=log_level,
            rotation=log_rotation,
            retention=log_retention,
            p4p_level=p4p_log_level,
            process_file=process_log,
        ),
    )
    from ..observe.logpvs import LogPVs
    from ..observe.systemd import from_environment

    observers: List[Hooks] = []
    if metrics_port is not None:
        from ..observe.metrics import Metrics  # prometheus_client brings http.client and ssl: ~3 MB

        metrics = Metrics(tasks)
        metrics.serve(metrics_port, metrics_addr)
        observers.append(metrics)
    notifier = from_environment()  # READY/STATUS/WATCHDOG, only when systemd set NOTIFY_SOCKET
    if notifier is not None:
        observers.append(notifier)
    if log_pvs:  # collecting lines from now on, so the start-up summary reaches the PVs
        observers.append(LogPVs(tasks))
    return Runner(tasks, hooks=[*hooks, *observers], stop_grace=stop_grace)


#: How many times a second, at most, the threads waiting for the GIL may wake to ask for it.
GIL_WAKEUPS = 20_000


def _pace_gil(tasks: int) -> None:
    """Lengthen the GIL's switch interval in a process of many tasks (5 ms up to 100 tasks, 50 ms at
    1000). Each thread waiting for the GIL wakes every interval to ask for it: when a batch trigger
    wakes 1000 loops at once, 1000 waiters at 5 ms are 200 000 wake-ups a second contending for
    the GIL's mutex, and a process could then spend seconds of CPU on them (the benchmark saw a
    batch take 6-24 s in one run and 1.1 s in the next). The cost: a cycle that computes without
    pause holds the GIL up to the interval before another thread runs."""
    sys.setswitchinterval(max(sys.getswitchinterval(), tasks / GIL_WAKEUPS))


def run(tasks: Sequence[Task], **options: Any) -> int:
    """Run ``tasks`` until SIGTERM/SIGINT; returns the exit status. ``options``: see :func:`prepare`."""
    return prepare(tasks, **options).run()
