"""Runs tasks in this process: a loop and a heartbeat thread per task, a graceful stop on request, and
the watchdog's exit.

All loops share one p4p context (one TCP connection per IOC, however many tasks) and all
heartbeats share a second one, kept apart so that task IO never delays a pulse; in a process of
many tasks the heartbeats hand their pulses to one sender (heartbeat.Pulses), which sends those
due together at once.
"""

from __future__ import annotations

import os
import queue
import resource
import sys
import threading
import time
import traceback
from typing import List, Optional, Sequence, Union

from loguru import logger
from p4p.client.thread import Context

from ..exits import EXIT_OK, EXIT_STUCK
from ..io import BridgeIO
from ..kept import KeptPuts
from ..sinks import drain
from ..task import ConfigError, Task
from . import heap
from .cycle import Loop, line_in_task
from .gate import Gate
from .handshake import group_pv
from .heartbeat import SENDER_FROM, Heartbeat, Pulses, process_shift
from .hooks import HookList, Hooks
from .timelimit import TimeLimits

__all__ = ["Runner"]

#: At a stop, seconds of ``stop_grace`` (half of it at most) left to an async task's cancelled
#: coroutine to unwind and report.
CANCEL_GRACE = 1.0
#: Seconds the watchdog's exit gives the log sinks to write its last lines, at most (a sink found
#: blocked is not waited for at all).
LAST_LINES = 0.5


class Runner:
    """Every task of this process, as a service: :meth:`start`, then :meth:`wait` until a
    :meth:`stop` request (a signal, another thread), which ends with a graceful stop."""

    def __init__(self, tasks: Sequence[Task], hooks: Sequence[Hooks], stop_grace: float) -> None:
        if not tasks:
            raise ConfigError("no tasks to run")
        self.tasks = list(tasks)
        self.hooks = HookList(hooks)
        self.stop_grace = stop_grace
        self.loops: List[Loop] = []
        self.heartbeats: List[Heartbeat] = []
        self.pulses: Optional[Pulses] = None
        # Not a threading.Event: its set() takes the lock its wait() holds, and a signal handled in
        # the main thread while it waits would then wait for itself for ever. put() takes no lock.
        self._stop_requested: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._exit_lock = threading.Lock()
        self._contexts: List[Union[KeptPuts, Context]] = []  # closed in this order
        self._status: Optional[int] = None
        self._started_at = 0.0
        self._next_tidy: Optional[float] = None

    def start(self) -> None:
        self._started_at = time.monotonic()
        heap.limit_arenas()
        _pace_gil(len(self.tasks))
        _allow_event_loops(sum(task.is_async for task in self.tasks))
        io_context, pulse_context = Context("pva", nt=False), Context("pva", nt=False)
        io_kept, pulse_kept = KeptPuts(io_context), KeptPuts(pulse_context)
        self._contexts = [io_kept, pulse_kept, io_context, pulse_context]
        limits, gate = TimeLimits(), Gate()
        shift = process_shift(task.name for task in self.tasks)
        pulses = self.pulses = Pulses(BridgeIO(pulse_context, kept=pulse_kept), len(self.tasks) >= SENDER_FROM)
        for order, task in enumerate(self.tasks):
            _log_summary(task)
            io_kept.keep(task.pvs.busy, *filter(None, [group_pv(task)]))
            pulse_kept.keep(task.pvs.heartbeat)
            loop = Loop(task, BridgeIO(io_context, task.timeout, io_kept), self.hooks, limits, gate)
            self.loops.append(loop)
            self.heartbeats.append(Heartbeat(task, loop, pulses, self.hooks, self._stuck_limit, shift, order))
        pulses.start()
        parts: List[Union[Loop, Heartbeat]] = [*self.loops, *self.heartbeats]
        for part in parts:
            part.start()
        logger.info("running {} task(s) in process {}", len(self.tasks), os.getpid())
        self.hooks.started(self.tasks)

    def stop(self) -> None:
        """Ask for a graceful stop; safe from a signal handler and any thread (it only queues a
        request, taking no lock, that :meth:`wait` acts on)."""
        self._stop_requested.put(None)

    def ready(self) -> bool:
        """Every task serves its prefix."""
        return bool(self.loops) and all(loop.serving for loop in self.loops)

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        """Serve until a stop is requested, then stop gracefully and return the exit status; None
        if ``timeout`` passed first (the tasks keep running)."""
        if self._status is None:
            if not self._housekeep(None if timeout is None else time.monotonic() + timeout):
                return None
            self._shutdown()
            self._status = EXIT_OK
        return self._status

    def _shutdown(self) -> None:
        """Let running cycles finish for up to ``stop_grace`` s, abandon the rest with Busy=0."""
        logger.info("stopping: waiting up to {:g} s for running cycles", self.stop_grace)
        self.hooks.stopping()
        for loop in self.loops:
            loop.stop()
        deadline = time.monotonic() + self.stop_grace
        # An async task's coroutine still running then is cancelled, with the rest of the grace to
        # unwind and report; a plain function cannot be, and is abandoned at the deadline.
        cancel_at = deadline - min(CANCEL_GRACE, self.stop_grace / 2)
        for loop in self.loops:
            loop.thread.join(max(0.0, cancel_at - time.monotonic()))
        for loop in self.loops:
            if loop.thread.is_alive():
                loop.cancel(f"stopping, and the cycle ran to the end of its {self.stop_grace:g} s stop grace")
        for loop in self.loops:
            loop.thread.join(max(0.0, deadline - time.monotonic()))
        for loop in self.loops:
            if loop.thread.is_alive() and loop.in_cycle:
                loop.abandon()
        for heartbeat in self.heartbeats:
            heartbeat.stop()
        for heartbeat in self.heartbeats:
            heartbeat.thread.join(timeout=2.0)
        if self.pulses is not None:
            self.pulses.stop(timeout=2.0)
        for context in self._contexts:
            context.close()
        self.hooks.close()
        logger.info("stopped")

    def _housekeep(self, until: Optional[float]) -> bool:
        """Until a stop is requested (True) or ``until`` passes (False): what start-up made frozen once
        every task serves (or START_LIMIT s passed), memory tidied SETTLE s later, then every PERIOD s."""
        while True:
            now = time.monotonic()
            if self._next_tidy is None and (self.ready() or now >= self._started_at + heap.START_LIMIT):
                heap.freeze()
                self._next_tidy = now + heap.SETTLE
            due = now + 1.0 if self._next_tidy is None else self._next_tidy  # readiness asked every second
            try:
                self._stop_requested.get(timeout=max(0.0, (due if until is None else min(due, until)) - now))
                return True
            except queue.Empty:
                pass
            now = time.monotonic()
            if self._next_tidy is not None and now >= self._next_tidy:
                logger.debug("memory tidied: free pages returned in {:.3f} s", heap.tidy())
                self._next_tidy = now + heap.PERIOD
            if until is not None and now >= until:
                return False

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
            self._let_neighbours_finish(task)
            drain(LAST_LINES)
            os._exit(EXIT_STUCK)

    def _let_neighbours_finish(self, stuck: Task) -> None:
        """Before the process goes, the other tasks take no new trigger, finish the cycles they are
        running (up to ``stop_grace`` s) and write their acknowledges; a trigger put meanwhile
        stays set on the IOC and is served once after the restart."""
        others = [loop for loop in self.loops if loop.task is not stuck and loop.thread.is_alive()]
        if not others:
            return
        busy = sum(loop.in_cycle for loop in others)
        logger.info(
            "{} other task(s) of this process take no new trigger; {} running cycle(s) finish first (up to {:g} s)",
            len(others),
            busy,
            self.stop_grace,
        )
        for loop in others:
            loop.stop()
        deadline = time.monotonic() + self.stop_grace
        for loop in others:
            loop.thread.join(max(0.0, deadline - time.monotonic()))


def _stalled_stack(loop: Loop) -> Optional[traceback.StackSummary]:
    """The loop thread's stack if it is stalled (not when it waits and only the IOC is gone). For
    an async task, the frames of its coroutine follow: suspended at an ``await``, the coroutine is
    on no thread's stack (the thread waits in the event loop)."""
    ident = loop.thread.ident
    frame = sys._current_frames().get(ident) if ident is not None and loop.stalled(time.monotonic()) else None
    if frame is None:
        return None
    stack = traceback.extract_stack(frame)
    if loop.events is not None:
        stack.extend(loop.events.awaiting())
    return stack


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


#: Files an ``async def`` task's event loop keeps open: its epoll and its self-pipe's two ends.
FILES_PER_EVENT_LOOP = 3
#: Files the process may open beyond those open when its tasks start (sockets, libraries).
FILES_SPARE = 1024


def _allow_event_loops(count: int) -> None:
    """Raise the soft limit on open files (towards the hard one) so that ``count`` event loops fit.
    systemd's default soft limit is 1024: without this, about 340 async tasks would be the most
    one process can start. Nothing changes for plain tasks."""
    if not count:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = _open_files() + FILES_PER_EVENT_LOOP * count + FILES_SPARE
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if raised < wanted:
        logger.warning(
            "{} async task(s) need about {} open files; the hard limit is {} (raise LimitNOFILE)", count, wanted, hard
        )
    if raised > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
        logger.debug("open files limit raised from {} to {} for {} async task(s)", soft, raised, count)


def _open_files() -> int:
    """Files this process holds open now (its log files among them: one per task)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # no /proc: the spare covers them
        return 0
