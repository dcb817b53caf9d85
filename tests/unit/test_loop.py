"""The loop's trigger monitor, timer, polling, start-up recovery and cycle end, on the in-memory IO.

The same behaviour is tested end to end on the real soft IOC (tests/test_cycle.py, test_faults.py);
here each rule is pinned down alone, in milliseconds.
"""

from __future__ import annotations

import queue
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, List, Tuple

import pytest
from helpers import wait_for
from p4p.client.thread import Disconnected, RemoteError

from epics_bridge.engine import cycle, handshake
from epics_bridge.engine.cycle import Loop, Poll, Timer, TriggerMonitor
from epics_bridge.engine.hooks import Hooks
from epics_bridge.io import PVTimeoutError
from epics_bridge.memory_io import MemoryIO
from epics_bridge.registry import Registry
from epics_bridge.status import TaskStatus
from epics_bridge.task import Task

P = "UNIT:"
TRIGGER, BUSY, STATUS, DURATION, GROUP = (P + n for n in ("Trigger", "Busy", "TaskStatus", "TaskDuration", "CycleEnd"))


class Finished(Hooks):
    """The statuses of finished cycles, queued for the test thread."""

    def __init__(self) -> None:
        self.statuses: queue.SimpleQueue = queue.SimpleQueue()

    def cycle_finished(self, task: Task, status: TaskStatus, duration: float) -> None:
        self.statuses.put(status)

    def next(self, timeout: float = 2.0) -> TaskStatus:
        return self.statuses.get(timeout=timeout)


def _task(func: Callable[[Any], object] = lambda t: None, **options: Any) -> Task:
    return Registry.make(func, prefix=P, name="unit", **options)


def _io(**values: Any) -> MemoryIO:
    return MemoryIO({TRIGGER: 0, P + "Heartbeat": 0, BUSY: 0, STATUS: 0, DURATION: 0.0, **values})


@contextmanager
def looping(task: Task, io: MemoryIO) -> Iterator[Tuple[Loop, Finished]]:
    finished = Finished()
    loop = Loop(task, io, finished)
    loop.start()
    try:
        yield loop, finished
    finally:
        loop.stop()
        loop.thread.join(2.0)
        assert not loop.thread.is_alive()


def _handshake(writes: List[dict]) -> List[dict]:
    """The writes with the duration's value blanked (it is a measurement)."""
    blank = {DURATION: "d", GROUP: "refused"}
    return [{pv: blank.get(pv, v) for pv, v in batch.items()} for batch in writes]


# -- trigger mode ---------------------------------------------------------------------------------------
def test_a_trigger_runs_one_cycle_with_the_handshake_in_order():
    calls: List[float] = []
    io = _io()
    with looping(_task(lambda t: calls.append(t.get("busy"))), io) as (_, finished):
        io.set(TRIGGER, 1)
        assert finished.next() == TaskStatus.SUCCESS
    assert calls == [1]  # Busy=1 was acknowledged before the function ran
    assert _handshake(io.writes) == [{BUSY: 1}, {STATUS: 0, DURATION: "d"}, {BUSY: 0, TRIGGER: 0}]


def test_a_trigger_set_before_start_is_served_once():
    io = _io(**{TRIGGER: 1})
    with looping(_task(), io) as (_, finished):
        assert finished.next() == TaskStatus.SUCCESS
        with pytest.raises(queue.Empty):
            finished.next(timeout=0.2)
    assert io.values[TRIGGER] == 0


@pytest.mark.parametrize(
    "raised, status",
    [
        (PVTimeoutError("get", {"X:Y": TimeoutError()}), TaskStatus.IO_FAILURE),
        (ValueError("bug"), TaskStatus.EXCEPTION),
    ],
)
def test_what_the_function_raises_decides_the_status(raised, status):
    def task(t):
        raise raised

    io = _io()
    with looping(_task(task), io) as (_, finished):
        io.set(TRIGGER, 1)
        assert finished.next() == status
    assert io.values[STATUS] == int(status) and io.values[BUSY] == 0


def test_a_stale_update_after_the_acknowledge_is_confirmed_by_a_read():
    io = _io()
    source = Loop(_task(), io, Hooks()).source
    assert isinstance(source, TriggerMonitor)
    source.update(1)
    assert source.due()
    source.acknowledged()
    source.update(1)  # posted before our Trigger=0 reached the IOC: the IOC now holds 0
    assert not source.due()
    io.values[TRIGGER] = 1
    source.update(1)  # still unconfirmed (no 0 seen yet): read again, and this one is a request
    assert source.due()


def test_a_zero_update_confirms_so_the_next_request_needs_no_read():
    io = _io()
    source = Loop(_task(), io, Hooks()).source
    source.update(1)
    source.acknowledged()
    source.update(0)
    io.fail[TRIGGER] = TimeoutError("a read now would fail")
    source.update(1)
    assert source.due()


def test_no_cycle_while_disconnected_and_the_value_after_reconnect_counts():
    io = _io()
    source = Loop(_task(), io, Hooks()).source
    source.update(1)
    source.update(Disconnected())
    assert not source.due()
    source.update(1)  # a reconnect delivers the current value
    assert source.due()


def test_a_disconnect_and_reconnect_through_the_monitor_serves_the_trigger():
    io = _io()
    with looping(_task(), io) as (_, finished):
        io.disconnect(TRIGGER)
        io.set(TRIGGER, 1)
        assert finished.next() == TaskStatus.SUCCESS


# -- start-up recovery ------------------------------------------------------------------------------------
def test_busy_left_at_start_up_is_reported_and_not_run_again():
    calls: List[int] = []
    io = _io(**{BUSY: 1, TRIGGER: 1})
    with looping(_task(lambda t: calls.append(1)), io) as (_, finished):
        wait_for(lambda: io.values[BUSY] == 0, 2.0, what="Busy cleared")
    assert calls == []
    assert io.values[STATUS] == int(TaskStatus.EXCEPTION) and io.values[TRIGGER] == 0
    assert finished.statuses.empty()  # the interrupted cycle is not a cycle of this process


def test_the_loop_waits_for_the_ioc_before_starting(monkeypatch):
    monkeypatch.setattr(handshake, "UNREACHABLE_RETRY", 0.02)
    io = _io()
    down = [TRIGGER, BUSY, P + "Heartbeat", STATUS, DURATION]
    io.fail.update({pv: TimeoutError("IOC not up") for pv in down})
    with looping(_task(), io) as (_, finished):
        io.set(TRIGGER, 1)
        with pytest.raises(queue.Empty):
            finished.next(timeout=0.1)
        for pv in down:
            del io.fail[pv]
        assert finished.next() == TaskStatus.SUCCESS


# -- the cycle end ------------------------------------------------------------------------------------
def test_the_cycle_end_is_one_put_to_the_group_when_the_ioc_serves_it():
    io = _io(**{GROUP: {}})
    with looping(_task(), io) as (_, finished):
        io.set(TRIGGER, 1)
        assert finished.next() == TaskStatus.SUCCESS
    end = io.writes[-1][GROUP]
    assert end == {"status": 0, "duration": end["duration"], "busy": 0, "trigger": 0}
    assert isinstance(end["duration"], float)


def test_a_group_of_the_previous_bridge_db_is_written_field_by_field():
    """An IOC still running the previous release's bridge.db: members of whole normative types."""
    io = _io(**{GROUP: {"status.value": 0}})  # what the engine looks for in the group's value
    with looping(_task(), io) as (_, finished):
        io.set(TRIGGER, 1)
        assert finished.next() == TaskStatus.SUCCESS
    end = io.writes[-1][GROUP]
    nested = {"status.value.index": 0, "duration.value": end.get("duration.value"), "busy.value.index": 0}
    assert end == {**nested, "trigger.value.index": 0}
    assert isinstance(end["duration.value"], float)


def test_without_the_group_the_cycle_end_is_two_ordered_puts():
    io = _io()
    with looping(_task(), io) as (_, finished):
        io.set(TRIGGER, 1)
        assert finished.next() == TaskStatus.SUCCESS
    assert _handshake(io.writes) == [{BUSY: 1}, {STATUS: 0, DURATION: "d"}, {BUSY: 0, TRIGGER: 0}]


def test_a_group_refusing_the_put_is_dropped_after_one_try():
    io = _io(**{GROUP: {}})
    io.reject[GROUP] = RemoteError("no write access")
    with looping(_task(), io) as (_, finished):
        for _ in range(2):
            io.set(TRIGGER, 1)
            assert finished.next() == TaskStatus.SUCCESS
    ordered = [{BUSY: 1}, {STATUS: 0, DURATION: "d"}, {BUSY: 0, TRIGGER: 0}]
    assert _handshake(io.writes) == [{BUSY: 1}, {GROUP: "refused"}] + ordered[1:] + ordered
    assert io.values[GROUP] == {}


def test_a_group_that_stops_answering_while_the_records_do_gives_way_to_ordered_puts():
    """An IOC rebooted into a bridge.db without the group: the end goes by ordered puts at once."""
    io = _io(**{GROUP: {}})

    def rebooted(t):  # after the handshake found the group
        io.fail[GROUP] = TimeoutError("no such PV now")

    with looping(_task(rebooted), io) as (_, finished):
        for _ in range(2):
            io.set(TRIGGER, 1)
            assert finished.next() == TaskStatus.SUCCESS
    ordered = [{BUSY: 1}, {STATUS: 0, DURATION: "d"}, {BUSY: 0, TRIGGER: 0}]
    assert _handshake(io.writes) == [{BUSY: 1}, {GROUP: "refused"}] + ordered[1:] + ordered


class LateGroup(MemoryIO):
    """The group's write lands, but its answer never comes back in time."""

    def _put(self, data, timeout):
        if GROUP not in data:
            return super()._put(data, timeout)
        self.writes.append(dict(data))
        self.set(BUSY, 0)
        self.set(TRIGGER, 0)
        return {GROUP: TimeoutError("the answer was lost")}


def test_a_group_write_that_landed_without_an_answer_is_not_written_again():
    io = LateGroup({TRIGGER: 0, P + "Heartbeat": 0, BUSY: 0, STATUS: 0, DURATION: 0.0, GROUP: {}})
    with looping(_task(), io) as (_, finished):
        for _ in range(2):
            io.set(TRIGGER, 1)
            assert finished.next() == TaskStatus.SUCCESS
    assert _handshake(io.writes) == [{BUSY: 1}, {GROUP: "refused"}] * 2  # the group kept, nothing ordered


def test_a_group_write_failing_while_the_ioc_answers_nothing_is_retried_by_the_group(monkeypatch):
    monkeypatch.setattr(cycle, "RETRY_PERIOD", 0.02)
    io = _io(**{GROUP: {}})

    def ioc_gone(t):
        io.fail[GROUP] = io.fail[BUSY] = TimeoutError("IOC frozen")

    with looping(_task(ioc_gone), io) as (_, finished):
        io.set(TRIGGER, 1)
        assert finished.next() == TaskStatus.SUCCESS
        wait_for(lambda: any(GROUP in batch for batch in io.writes), 2.0, what="the group's write")
        assert io.values[BUSY] == 1
        del io.fail[GROUP], io.fail[BUSY]
        # the in-memory group holds what was written to it (no records behind it)
        wait_for(lambda: io.values[GROUP].get("busy") == 0, 2.0, what="the cycle end written")
    assert sum(GROUP in batch for batch in io.writes) == 2, "retried by the group"
    assert all(STATUS not in batch for batch in io.writes), "never fell back to ordered puts"


def test_an_unwritten_cycle_end_is_retried_before_anything_else(monkeypatch):
    monkeypatch.setattr(cycle, "RETRY_PERIOD", 0.02)
    calls: List[int] = []
    io = _io()
    with looping(_task(lambda t: calls.append(1)), io) as (_, finished):
        io.fail[STATUS] = TimeoutError("IOC frozen")
        io.set(TRIGGER, 1)
        assert finished.next() == TaskStatus.SUCCESS
        wait_for(lambda: sum(STATUS in batch for batch in io.writes) >= 3, 2.0, what="retries")
        assert io.values[BUSY] == 1
        del io.fail[STATUS]
        wait_for(lambda: io.values[BUSY] == 0, 2.0, what="the cycle end written")
    assert calls == [1] and io.values[TRIGGER] == 0


def test_a_timer_task_does_not_write_trigger():
    io = _io()
    with looping(_task(period=0.01), io) as (_, finished):
        assert finished.next() == TaskStatus.SUCCESS
    assert all(TRIGGER not in batch for batch in io.writes)


# -- timer and poll ---------------------------------------------------------------------------------------
def test_the_timer_keeps_a_fixed_grid_and_counts_skipped_periods(caplog_loguru):
    loop = Loop(_task(period=1.0), _io(), Hooks())
    timer = loop.source
    assert isinstance(timer, Timer)
    start = timer.next
    assert timer.due() and timer.next == start + 1.0
    assert not timer.due() and 0 < timer.timeout() <= 1.0
    timer.next = time.monotonic() - 3.5  # the loop was busy for 3.5 periods
    grid = timer.next
    assert timer.due()
    assert timer.next == grid + 4.0  # on the grid, skipped periods dropped, never a burst
    assert "skipped 3 period(s)" in caplog_loguru.text


def test_poll_runs_only_when_the_poll_function_says_so(caplog_loguru):
    answers = iter([0, 1, RuntimeError("poll broke")])

    def poll():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    source = Poll(Loop(_task(), _io(), Hooks()), poll, period=1.0)
    results = []
    for _ in range(3):
        source.next = time.monotonic()
        results.append(source.due())
    assert results == [False, True, False]
    assert "trigger() raised" in caplog_loguru.text


# -- stall detection ------------------------------------------------------------------------------------
def test_stalled_names_a_cycle_running_past_stall_timeout():
    loop = Loop(_task(stall_timeout=2.0), _io(), Hooks())
    assert loop.stalled(time.monotonic()) == "its loop thread has ended"  # never started
    loop.thread.is_alive = lambda: True  # type: ignore[method-assign]
    loop.busy_since, loop.in_cycle = time.monotonic() - 3.0, True
    assert loop.stalled(time.monotonic()).startswith("a cycle has been running for 3.")
    loop.busy_since = None  # waiting for a trigger is never a stall
    assert loop.stalled(time.monotonic()) is None


# -- logging --------------------------------------------------------------------------------------------
def test_plain_loguru_lines_on_the_loop_thread_are_credited_to_the_task(caplog_loguru):
    from loguru import logger

    io = _io()
    with looping(_task(lambda t: logger.info("plain line from a helper")), io) as (_, finished):
        io.set(TRIGGER, 1)
        assert finished.next() == TaskStatus.SUCCESS
    logger.info("plain line from the test")
    lines = caplog_loguru.lines
    assert "INFO | {'task': 'unit'} | plain line from a helper" in lines
    assert "INFO | {} | plain line from the test" in lines
