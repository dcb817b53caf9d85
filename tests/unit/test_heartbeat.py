"""The heartbeat's pulse and its count of stuck periods, on the in-memory IO."""

from __future__ import annotations

import threading
import time
from typing import List, Optional, Tuple

from helpers import wait_for

from epics_bridge.engine.heartbeat import SLOTS, Heartbeat, Pulses, lead, next_grid_point, phase, process_shift
from epics_bridge.engine.hooks import Hooks
from epics_bridge.memory_io import MemoryIO
from epics_bridge.registry import Registry
from epics_bridge.task import Task

P = "HB:"
PULSE = P + "Heartbeat"


class FakeLoop:
    """Only what the heartbeat asks of a loop: why it is stalled, if it is."""

    def __init__(self) -> None:
        self.reason: Optional[str] = None
        self.pulsing = True  # the task serves its prefix

    def stalled(self, now: float) -> Optional[str]:
        return self.reason


class Counts(Hooks):
    def __init__(self) -> None:
        self.stuck: List[Tuple[int, Optional[str]]] = []

    def heartbeat(self, task: Task, stuck: int, reason: Optional[str]) -> None:
        self.stuck.append((stuck, reason))


class Beat:
    """A heartbeat thread at 10 ms periods, on a fake loop; records the watchdog's verdict."""

    def __init__(self, max_stuck_cycles: int = 3, sender: bool = True, batching: bool = True) -> None:
        self.sender = sender
        self.task = Registry.make(
            lambda t: None, prefix=P, name="hb", heartbeat_period=0.01, max_stuck_cycles=max_stuck_cycles
        )
        self.io, self.loop, self.counts = MemoryIO({PULSE: 0}), FakeLoop(), Counts()
        self.limit = threading.Event()
        self.verdict: List[str] = []
        self.pulses = Pulses(self.io, batching)
        self.heartbeat = Heartbeat(self.task, self.loop, self.pulses, self.counts, self._on_limit)  # type: ignore[arg-type]

    def _on_limit(self, task: Task, reason: str) -> None:
        self.verdict.append(reason)
        self.limit.set()
        self.heartbeat.stop()  # the runner's handler never returns: it ends the process

    def __enter__(self) -> Beat:
        if self.sender:
            self.pulses.start()
        self.heartbeat.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.heartbeat.stop()
        self.heartbeat.thread.join(2.0)
        self.pulses.stop(2.0)
        assert not self.heartbeat.thread.is_alive() and not self.pulses.thread.is_alive()


def test_a_live_loop_pulses_zero_one_zero():
    with Beat() as beat:
        wait_for(lambda: len(beat.io.writes) >= 4, 2.0, what="four pulses")
    pulses = [batch[PULSE] for batch in beat.io.writes]
    assert pulses[:4] == [1, 0, 1, 0]
    assert all(stuck == 0 for stuck, _ in beat.counts.stuck)


def test_with_the_sender_a_period_behind_the_heartbeat_sends_its_own_pulses_and_is_not_stuck():
    with Beat(sender=False) as beat:  # a sender that never gets to run, as when starved for the GIL
        wait_for(lambda: len(beat.counts.stuck) >= 4, 2.0, what="four periods")
        wait_for(lambda: len(beat.io.writes) >= 3, 2.0, what="pulses sent by the heartbeat thread")
    pulses = [batch[PULSE] for batch in beat.io.writes]
    assert pulses[:3] == [1, 0, 1]  # every period's, but the first (never sent: not counted as written)
    assert all(stuck == 0 for stuck, _ in beat.counts.stuck)


def test_in_a_process_of_few_tasks_each_heartbeat_sends_its_own_pulse_at_its_instant():
    with Beat(batching=False) as beat:
        wait_for(lambda: len(beat.io.writes) >= 4, 2.0, what="four pulses")
        assert not beat.pulses.thread.is_alive()  # started, but no sender thread where it is not used
    assert [batch[PULSE] for batch in beat.io.writes][:4] == [1, 0, 1, 0]  # every period's, none waits for a sender
    assert all(stuck == 0 for stuck, _ in beat.counts.stuck)


def test_a_stalled_loop_stops_the_pulse_and_ends_at_max_stuck_cycles():
    with Beat(max_stuck_cycles=3) as beat:
        beat.loop.reason = "a cycle has been running for 12.0 s"
        assert beat.limit.wait(2.0)
    assert beat.verdict == ["a cycle has been running for 12.0 s"]
    stuck = [n for n, reason in beat.counts.stuck if reason]
    assert stuck[:3] == [1, 2, 3]


def test_a_pulse_that_cannot_be_written_counts_as_stuck():
    with Beat(max_stuck_cycles=2) as beat:
        beat.io.fail[PULSE] = TimeoutError("IOC frozen")
        assert beat.limit.wait(2.0)
    assert beat.verdict[0].startswith("the heartbeat could not be written")


def test_the_count_restarts_after_a_healthy_period():
    beat = Beat(max_stuck_cycles=3)
    for reason in ("stalled", "stalled", None, "stalled", "stalled"):
        beat.heartbeat._count(reason)
    assert [n for n, _ in beat.counts.stuck] == [1, 2, 0, 1, 2]
    assert not beat.limit.is_set()
    beat.heartbeat._count("stalled")
    assert beat.verdict == ["stalled"]


def test_each_task_pulses_at_its_own_phase_the_same_in_every_run():
    phases = [phase(f"noop{i:03d}", 1.0) for i in range(1000)]
    assert phases == [phase(f"noop{i:03d}", 1.0) for i in range(1000)]
    assert all(0.0 <= p < 1.0 for p in phases)
    # spread over the period: every tenth of it holds some of the 1000 tasks, none more than twice its share
    tenths = [sum(1 for p in phases if k / 10 <= p < (k + 1) / 10) for k in range(10)]
    assert min(tenths) > 0 and max(tenths) < 200
    assert phase("noop001", 2.0) == 2 * phase("noop001", 1.0)


def test_the_workers_of_a_service_shift_their_slots_apart_the_same_in_every_run():
    files = [[f"noop{i:03d}" for i in range(f * 100, (f + 1) * 100)] for f in range(10)]
    shifts = [process_shift(names) for names in files]
    assert shifts == [process_shift(reversed(names)) for names in files]  # by the names, not their order
    assert all(0.0 <= s < 1.0 for s in shifts)
    assert len({round(s, 3) for s in shifts}) == 10  # ten workers, ten different instants per slot
    # a shift moves a task within its own slot, never past the period
    assert phase("noop001", 1.0) <= phase("noop001", 1.0, shift=0.999) < phase("noop001", 1.0) + 0.1
    assert all(0.0 <= phase(n, 1.0, shift=s) < 1.0 for names, s in zip(files, shifts) for n in names)


def test_the_next_grid_point_is_strictly_after_now_on_the_tasks_grid():
    assert next_grid_point(10.0, 1.0, 0.25) == 10.25
    assert next_grid_point(10.25, 1.0, 0.25) == 11.25  # a beat on the grid point goes to the next one
    assert next_grid_point(12.9, 1.0, 0.25) == 13.25  # late: the missed points are skipped
    assert next_grid_point(0.1, 0.5, 0.3) == 0.3


def test_pulses_due_together_leave_together_in_the_order_given_every_period():
    names = [f"P{i}:Heartbeat" for i in range(20)]
    io = MemoryIO({name: 0 for name in names})
    pulses = Pulses(io)  # type: ignore[arg-type]
    due = time.monotonic() + 0.2
    posted = [pulses.post(due, order, names[order], 1) for order in reversed(range(20))]  # handed in any order
    pulses.start()
    try:
        wait_for(lambda: len(io.writes) == 20, 5.0, what="the slot's pulses")
        assert [next(iter(batch)) for batch in io.writes] == names  # in their order, not as handed in
        assert all(pulse.failure() is None for pulse in posted)
    finally:
        pulses.stop(2.0)
    assert not pulses.thread.is_alive()


def test_a_pulse_is_not_sent_before_it_is_due_and_never_once_closed():
    io = MemoryIO({"A:Heartbeat": 0, "B:Heartbeat": 0})
    pulses = Pulses(io)  # type: ignore[arg-type]
    pulses.start()
    try:
        later = pulses.post(time.monotonic() + 0.3, 0, "A:Heartbeat", 1)
        closed = pulses.post(time.monotonic() + 0.3, 1, "B:Heartbeat", 1)
        closed.close()
        assert later.sent is None
        late = pulses.post(time.monotonic() - 1.0, 2, "A:Heartbeat", 0)  # overdue: sent at once
        wait_for(lambda: late.sent is not None, 2.0, what="the overdue pulse")
        assert io.writes == [{"A:Heartbeat": 0}]
        wait_for(lambda: len(io.writes) == 2, 2.0, what="the pulse due later")
        assert io.writes[1] == {"A:Heartbeat": 1} and closed.sent is None
    finally:
        pulses.stop(2.0)


def test_a_heartbeat_thread_wakes_in_the_middle_half_of_the_slot_before_its_pulse():
    slot = 1.0 / SLOTS
    leads = [lead(f"noop{i:03d}", 1.0) for i in range(1000)]
    assert all(0.25 * slot <= x < 0.75 * slot for x in leads)
    assert max(leads) - min(leads) > 0.4 * slot  # spread, so that a slot's threads do not wake at once
    assert lead("noop001", 2.0) == 2 * lead("noop001", 1.0)
