"""Each task's heartbeat thread: pulse ``{main}Heartbeat`` while the loop is alive, count stuck periods.

It runs beside the loop with its own p4p context, so neither a hung task function nor a busy IO
context can hold the pulse back. A period is *stuck* when the loop is stalled (the heartbeat then
stops pulsing, which the IOC's HeartbeatAge alarm shows) or when the previous period's pulse was
not acknowledged: a pulse is sent without waiting, and its outcome read one period later.

Tasks pulse in :data:`SLOTS` phase slots spread over the period: the pulses of one slot leave in
the same instant and pvxs sends them in a few TCP segments, while the slots keep the whole
service from waking at once. More slots spread the wakeups thinner but coalesce less (one slot per
task was every pulse its own segment and syscall on both sides); each worker shifts its slots a
little, so that a service's workers do not pulse at the same instants; see docs/pulses.md.

In a process of :data:`SENDER_FROM` tasks or more, each heartbeat thread decides its pulse a
little ahead (:func:`lead`: its own moment in the slot before, so a slot's hundred threads do not
wake at once) and hands it to the process's one :class:`Pulses` sender, which sends a slot's
pulses at its instant in the tasks' order: a task's place in the burst is the same every period,
so its interval is too. A stuck loop still stops its own pulse at once (its thread hands none
over), and a sender that falls behind (a process starved for the GIL) does not count against
anyone: each thread then sends its own pulses until it catches up.

After ``max_stuck_cycles`` stuck periods in a row the process must go: the loop may be deadlocked,
so the exit is taken here, never asked of the loop.
"""

from __future__ import annotations

import heapq
import math
import threading
import time
import zlib
from typing import Callable, Iterable, List, Optional, Tuple

from loguru import logger

from ..io import BridgeIO, Sent
from ..task import Task
from .cycle import Loop
from .hooks import Hooks

__all__ = ["SENDER_FROM", "SLOTS", "Heartbeat", "Pulse", "Pulses", "lead", "next_grid_point", "phase", "process_shift"]

#: Phase slots per heartbeat period (see the module's docstring).
SLOTS = 10
#: Tasks a process needs for its pulses to go through one sender (five a slot on average): below,
#: each heartbeat thread sends its own pulse at its instant, as the sender would cost a process of
#: one task two more wake-ups a period (0.10 -> 0.20 % of a core) for bursts too short to reorder.
SENDER_FROM = 5 * SLOTS


def phase(name: str, period: float, slots: int = SLOTS, shift: float = 0.0) -> float:
    """Where in each period a task pulses: its slot, chosen by its name, the same in every run, so
    the tasks of a process pulse in a few groups rather than all at once or one by one. ``shift``
    (a fraction of one slot, see :func:`process_shift`) moves all the slots of one process."""
    return ((zlib.crc32(name.encode()) % slots) + shift) / slots * period


def process_shift(names: Iterable[str]) -> float:
    """Where in a slot the slots of the process running ``names`` lie, in [0, 1): the same in every
    run, different between a service's workers, so that ten workers do not all pulse at the same
    ten instants (2-core runs of 1000 tasks in 10 files: heartbeat error p99 37 ms without it)."""
    return (zlib.crc32("\n".join(sorted(names)).encode()) % 1000) / 1000


def lead(name: str, period: float, slots: int = SLOTS) -> float:
    """How long before its pulse is due a task's heartbeat thread wakes to decide it: somewhere in
    the middle half of the slot before, by its name, so that a slot's threads do not all wake in one
    instant and queue on the GIL."""
    return (0.25 + 0.5 * (zlib.crc32(name.encode()) // slots % 1000) / 1000) * period / slots


def next_grid_point(now: float, period: float, offset: float) -> float:
    """The first time after ``now`` on the grid ``offset + k * period`` (monotonic clock)."""
    return offset + period * (math.floor((now - offset) / period) + 1)


class Pulse:
    """One pulse handed to :class:`Pulses`: sent at its due instant, its outcome read a period later."""

    __slots__ = ("pv", "value", "sent", "closed")

    def __init__(self, pv: str, value: int) -> None:
        self.pv, self.value = pv, value
        self.sent: Optional[Sent] = None  # None until the sender got to it
        self.closed = False

    def failure(self) -> Optional[str]:
        """None once the IOC has acknowledged the pulse; else why not (it must have been sent)."""
        assert self.sent is not None
        return self.sent.failure()

    def close(self) -> None:
        """Cancel the pulse if it is still on its way, or not sent yet; release it."""
        self.closed = True
        sent = self.sent
        if sent is not None:
            sent.close()


class Pulses:
    """Sends the pulses of one process from one thread, each at its due instant, those due together
    in one fixed order (the tasks'): a slot's pulses leave in one burst that pvxs coalesces, and
    each task keeps its place in the burst from one period to the next, so its interval does not
    move with the order in which a hundred threads happened to get the GIL. Sending only starts a
    write (never waits for the IOC), so one blocked PV cannot hold back the others."""

    def __init__(self, io: BridgeIO, batching: bool = True) -> None:
        self.io = io
        self.batching = batching  # False: each thread sends its own pulses (see SENDER_FROM)
        self._due: List[Tuple[float, int, Pulse]] = []  # a heap
        self._changed = threading.Condition()
        self._stopped = False
        self.thread = threading.Thread(target=self._run, name="pulses", daemon=True)

    def start(self) -> None:
        """Start the sender where it is used: a process of few tasks pays no thread for it."""
        if self.batching:
            self.thread.start()

    def stop(self, timeout: float) -> None:
        """Stop the sender; wait up to ``timeout`` s for it to end."""
        with self._changed:
            self._stopped = True
            self._changed.notify()
        if self.thread.is_alive():
            self.thread.join(timeout)

    def post(self, due: float, order: int, pv: str, value: int) -> Pulse:
        """Send ``value`` to ``pv`` at ``due`` (monotonic clock); ``order`` places it among the
        pulses due in the same instant."""
        pulse = Pulse(pv, value)
        with self._changed:
            heapq.heappush(self._due, (due, order, pulse))
            if self._due[0][2] is pulse:
                self._changed.notify()
        return pulse

    def overdue(self, now: float) -> float:
        """How long past its due instant the oldest waiting pulse is (0: the sender keeps up)."""
        with self._changed:
            return max(0.0, now - self._due[0][0]) if self._due else 0.0

    def send(self, pv: str, value: int) -> Pulse:
        """Send ``value`` to ``pv`` now, from the calling thread (no sender here, or it is behind)."""
        pulse = Pulse(pv, value)
        self._send(pulse)
        return pulse

    def _send(self, pulse: Pulse) -> None:
        if pulse.closed:
            return
        pulse.sent = self.io.send(pulse.pv, pulse.value)
        if pulse.closed:  # closed while it was being sent
            pulse.sent.close()

    def _run(self) -> None:
        while True:
            with self._changed:  # held only to take the pulses due: a poster never waits for a send
                while not self._stopped and (not self._due or self._due[0][0] > time.monotonic()):
                    self._changed.wait(self._due[0][0] - time.monotonic() if self._due else None)
                if self._stopped:
                    return
                now = time.monotonic()
                due = []
                while self._due and self._due[0][0] <= now:
                    due.append(heapq.heappop(self._due)[2])
            for pulse in due:
                self._send(pulse)


class Heartbeat:
    def __init__(
        self,
        task: Task,
        loop: Loop,
        pulses: Pulses,
        hooks: Hooks,
        on_stuck_limit: Callable[[Task, str], None],
        shift: float = 0.0,
        order: int = 0,
    ) -> None:
        self.task, self.loop, self.pulses, self.hooks = task, loop, pulses, hooks
        self.shift = shift  # this process's, see process_shift
        self.order = order  # the task's place among the pulses due with its own
        self.on_stuck_limit = on_stuck_limit
        self.log = logger.bind(task=task.name)
        self.stuck = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"heartbeat:{task.name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        period, pv = self.task.heartbeat_period, self.task.pvs.heartbeat
        offset = phase(self.task.name, period, shift=self.shift)
        early = lead(self.task.name, period) if self.pulses.batching else 0.0
        value = 0
        pulse: Optional[Pulse] = None
        due = time.monotonic()  # the first period at once, then on the task's own grid
        try:
            while not self._stop.wait(max(0.0, due - early - time.monotonic())):
                now = time.monotonic()
                stalled = self.loop.stalled(now)
                value, failed, behind = self._settle(pulse, value)
                pulse = None
                if stalled is None and self.loop.pulsing:  # not before the task serves its prefix
                    # The sender behind (a process starved for the GIL, e.g. by a thousand cycles
                    # at once): this thread sends its own pulses until it catches up.
                    direct = behind or not self.pulses.batching or self.pulses.overdue(now) > early
                    pulse = self._hand_over(pv, 1 - value, max(due, now), direct)
                self._count(stalled or failed)
                # On the task's grid; late beats skipped; the first interval between 0.5 and 1.5 periods.
                due = next_grid_point(max(now + early, due + period / 2), period, offset)
        finally:
            if pulse is not None:
                pulse.close()

    def _settle(self, pulse: Optional[Pulse], value: int) -> Tuple[int, Optional[str], bool]:
        """The previous pulse, read a period later (acknowledged by now unless the IOC is in
        trouble): the value the IOC holds, why the period is stuck (None: it is not), and whether
        the sender never got to it (nobody's stuck period: the process was starved, not the IOC)."""
        if pulse is None:
            return value, None, False
        behind = pulse.sent is None
        failure = None if behind else pulse.failure()
        pulse.close()
        if behind or failure is not None:
            return value, None if behind else f"the heartbeat could not be written ({failure})", behind
        return 1 - value, None, False

    def _hand_over(self, pv: str, value: int, due: float, direct: bool) -> Pulse:
        if direct:
            return self.pulses.send(pv, value)
        return self.pulses.post(due, self.order, pv, value)

    def _count(self, reason: Optional[str]) -> None:
        if reason is None:
            if self.stuck:
                self.log.info("healthy again after {} stuck heartbeat period(s)", self.stuck)
            self.stuck = 0
        else:
            self.stuck += 1
            self.log.warning("stuck heartbeat period {}/{}: {}", self.stuck, self.task.max_stuck_cycles, reason)
        self.hooks.heartbeat(self.task, self.stuck, reason)
        if reason is not None and self.stuck >= self.task.max_stuck_cycles:
            self.on_stuck_limit(self.task, reason)
