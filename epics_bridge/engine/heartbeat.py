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
After ``max_stuck_cycles`` stuck periods in a row the process must go: the loop may be deadlocked,
so the exit is taken here, never asked of the loop.
"""

from __future__ import annotations

import math
import threading
import time
import zlib
from typing import Callable, Iterable, Optional

from loguru import logger

from ..io import BridgeIO, Sent
from ..task import Task
from .cycle import Loop
from .hooks import Hooks

__all__ = ["SLOTS", "Heartbeat", "next_grid_point", "phase", "process_shift"]

#: Phase slots per heartbeat period (see the module's docstring).
SLOTS = 10


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


def next_grid_point(now: float, period: float, offset: float) -> float:
    """The first time after ``now`` on the grid ``offset + k * period`` (monotonic clock)."""
    return offset + period * (math.floor((now - offset) / period) + 1)


class Heartbeat:
    def __init__(
        self,
        task: Task,
        loop: Loop,
        io: BridgeIO,
        hooks: Hooks,
        on_stuck_limit: Callable[[Task, str], None],
        shift: float = 0.0,
    ) -> None:
        self.task, self.loop, self.io, self.hooks = task, loop, io, hooks
        self.shift = shift  # this process's, see process_shift
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
        pulse = 0
        sent: Optional[Sent] = None
        next_beat = time.monotonic()  # the first period at once, then on the task's own grid
        try:
            while not self._stop.wait(max(0.0, next_beat - time.monotonic())):
                now = time.monotonic()
                # On the task's grid; late beats skipped; the first interval between 0.5 and 1.5 periods.
                next_beat = next_grid_point(max(now, next_beat + period / 2), period, offset)
                reason = stalled = self.loop.stalled(now)
                if sent is not None:  # the previous pulse, acknowledged by now unless the IOC is in trouble
                    failure = sent.failure()
                    sent.close()
                    sent = None
                    if failure is None:
                        pulse = 1 - pulse
                    elif reason is None:
                        reason = f"the heartbeat could not be written ({failure})"
                if stalled is None and self.loop.pulsing:  # not before the task serves its prefix
                    sent = self.io.send(pv, 1 - pulse)
                self._count(reason)
        finally:
            if sent is not None:
                sent.close()

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
