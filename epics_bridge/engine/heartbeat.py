"""Each task's heartbeat thread: pulse ``{main}Heartbeat`` while the loop is alive, count stuck periods.

It runs beside the loop with its own p4p context, so neither a hung task function nor a busy IO
context can hold the pulse back. A period is *stuck* when the loop is stalled (the heartbeat then
stops pulsing, which the IOC's HeartbeatAge alarm shows) or when the pulse could not be written.
After ``max_stuck_cycles`` stuck periods in a row the process must go: the loop may be deadlocked,
so the exit is taken here, never asked of the loop.
"""

from __future__ import annotations

import math
import threading
import time
import zlib
from typing import Callable, Optional

from loguru import logger

from ..io import BridgeIO, PVError
from ..task import Task
from .cycle import Loop
from .hooks import Hooks

__all__ = ["Heartbeat", "next_grid_point", "phase"]


def phase(name: str, period: float) -> float:
    """Where in each period a task pulses: spread over the period by its name, the same in every
    run and process, so hundreds of tasks pulse one after another rather than all at once (no
    burst of wakeups and puts on the GIL, the network thread and the IOC every period)."""
    return (zlib.crc32(name.encode()) % 1000) / 1000.0 * period


def next_grid_point(now: float, period: float, offset: float) -> float:
    """The first time after ``now`` on the grid ``offset + k * period`` (monotonic clock)."""
    return offset + period * (math.floor((now - offset) / period) + 1)


class Heartbeat:
    def __init__(
        self, task: Task, loop: Loop, io: BridgeIO, hooks: Hooks, on_stuck_limit: Callable[[Task, str], None]
    ) -> None:
        self.task, self.loop, self.io, self.hooks = task, loop, io, hooks
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
        period = self.task.heartbeat_period
        timeout = min(period, self.task.timeout)
        values = ({self.task.pvs.heartbeat: 0}, {self.task.pvs.heartbeat: 1})  # prepared once
        offset = phase(self.task.name, period)
        pulse = 0
        next_beat = time.monotonic()  # the first period at once, then on the task's own grid
        while not self._stop.wait(max(0.0, next_beat - time.monotonic())):
            now = time.monotonic()
            # On the task's grid; late beats skipped; the first interval between 0.5 and 1.5 periods.
            next_beat = next_grid_point(max(now, next_beat + period / 2), period, offset)
            reason = self.loop.stalled(now)
            if reason is None and self.loop.pulsing:  # not before the task serves its prefix
                try:
                    self.io.put(values[1 - pulse], timeout=timeout)
                    pulse = 1 - pulse
                except PVError as exc:
                    reason = f"the heartbeat could not be written ({exc})"
            self._count(reason)

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
