"""Kept writes (epics_bridge/kept/) on a real soft IOC: one pvxs operation per PV, re-executed, with
the same outcomes as p4p's path: acknowledged values, timeouts, refusals, a reboot in between. And
the subscriptions read in C++ on the same client context: a task's Trigger watch, which wakes its
loop only for what the loop must act on, and the client's feed of many PVs."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterator, List, Tuple

import pytest
from conftest import VALUES
from helpers import Trigger, client_for, running, wait_for, wait_heartbeat
from p4p.client.thread import Disconnected

from epics_bridge import Registry, TaskStatus
from epics_bridge.io import BridgeIO, PVError, PVRejectedError, PVTimeoutError
from epics_bridge.ioc.softioc import SoftIOC
from epics_bridge.kept import KeptPuts, Watch, available

pytestmark = pytest.mark.skipif(not available(), reason="epics_bridge.kept._pvxs is not built here (no C++ compiler)")

#: Slack on top of an operation's own timeout for a loaded machine: a bound, not a speed test.
MARGIN = 3.0


#: The PVs of a prefix these tests keep (the engine keeps Busy, CycleEnd and Heartbeat).
KEPT = ("Busy", "CycleEnd", "Heartbeat", "TaskDuration")


@pytest.fixture
def kept_io(ioc: SoftIOC, prefix: str) -> Iterator[Tuple[BridgeIO, KeptPuts]]:
    from p4p.client.thread import Context

    ctx = Context("pva", nt=False)
    kept = KeptPuts(ctx)
    kept.keep(*(prefix + name for name in KEPT), VALUES + "NoSuchRecord")
    yield BridgeIO(ctx, timeout=5.0, kept=kept), kept
    kept.close()
    ctx.close()


def test_a_number_is_written_again_through_one_operation(kept_io, prefix):
    io, kept = kept_io
    for n in range(5):
        io.put({prefix + "TaskDuration": n * 1.5})
        assert io.get(prefix + "TaskDuration") == n * 1.5
    for value in (1, 0, 1):  # an enum record (bo): the number is its index
        io.put({prefix + "Busy": value})
        assert io.get(prefix + "Busy") == value
    assert kept.writer(prefix + "TaskDuration").inits == 1
    assert kept.writer(prefix + "Busy").inits == 1


def test_a_group_write_sets_its_fields(kept_io, prefix):
    io, kept = kept_io
    for status in (1, 2):
        io.put({prefix + "CycleEnd": {"status": status, "duration": 0.25, "busy": 0}})
        assert io.get([prefix + "TaskStatus", prefix + "TaskDuration", prefix + "Busy"]) == {
            prefix + "TaskStatus": status,
            prefix + "TaskDuration": 0.25,
            prefix + "Busy": 0,
        }
    assert kept.writer(prefix + "CycleEnd").inits == 1


def test_what_is_not_a_number_or_not_kept_goes_through_p4p(kept_io, prefix):
    io, kept = kept_io
    io.put({prefix + "Busy": "Busy"})  # an enum choice by name: p4p fetches the choices
    assert io.get(prefix + "Busy") == 1
    io.put({prefix + "Trigger": 1})  # a number, but not a kept PV (as a task's own writes)
    assert io.get(prefix + "Trigger") == 1
    io.put({VALUES + "Wave": [1.0, 2.0, 3.0]})
    assert list(io.get(VALUES + "Wave")) == [1.0, 2.0, 3.0]
    assert kept._writers == {}  # noqa: SLF001 - none was made for them


def test_a_field_the_pv_lacks_is_refused_and_the_operation_stays(kept_io, prefix):
    io, kept = kept_io
    pv = prefix + "CycleEnd"
    with pytest.raises(PVRejectedError, match=f"{pv}.*no field nosuch"):
        io.put({pv: {"nosuch": 1}})
    io.put({pv: {"duration": 2.5}})
    assert io.get(prefix + "TaskDuration") == 2.5
    assert kept.writer(pv).inits == 1


def test_a_pv_nobody_serves_times_out_in_time(kept_io):
    io, _ = kept_io
    started = time.monotonic()
    with pytest.raises(PVTimeoutError, match="NoSuchRecord"):
        io.put({VALUES + "NoSuchRecord": 1}, timeout=0.5)
    assert time.monotonic() - started < 0.5 + MARGIN


def test_writes_of_one_pv_from_two_threads_all_land(kept_io, prefix):
    """A write already in flight sends the other thread's through p4p: neither waits for the other."""
    io, _ = kept_io
    pv = prefix + "TaskDuration"
    errors = []

    def write(base: float) -> None:
        try:
            for n in range(50):
                io.put({pv: base + n})
        except PVError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(base,)) for base in (0.0, 1000.0)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert io.get(pv) in (49.0, 1049.0)


def test_a_sent_pulse_reports_its_acknowledgement(kept_io, prefix):
    io, kept = kept_io
    pv = prefix + "Heartbeat"
    for value in (1, 0, 1):
        sent = io.send(pv, value)
        deadline = time.monotonic() + 5.0
        while sent.failure() is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sent.failure() is None
        sent.close()
        assert io.get(pv) == value
    assert kept.writer(pv).inits == 1


@pytest.fixture
def private(make_ioc) -> Iterator[Callable[[str], Tuple[SoftIOC, BridgeIO]]]:
    """A private IOC (to stop or freeze) and a BridgeIO with kept writes on it."""
    opened: List[Tuple[Any, KeptPuts]] = []

    def open_(prefix: str) -> Tuple[SoftIOC, BridgeIO]:
        soft_ioc = make_ioc(prefix)
        ctx = client_for(soft_ioc.client_env)
        kept = KeptPuts(ctx)
        kept.keep(*(prefix + name for name in KEPT))
        opened.append((ctx, kept))
        return soft_ioc, BridgeIO(ctx, timeout=5.0, kept=kept)

    yield open_
    for ctx, kept in opened:
        kept.close()
        ctx.close()


def test_writes_go_on_across_an_ioc_reboot(private):
    """The kept operation follows the IOC through a reboot (a new INIT on reconnection); a write
    while the IOC is down fails in its own time, and the next one after the reboot lands."""
    prefix = "KEPT:R:"
    soft_ioc, io = private(prefix)
    io.put({prefix + "Busy": 1})
    soft_ioc.stop()
    with pytest.raises(PVError):
        io.put({prefix + "Busy": 0}, timeout=0.5)
    soft_ioc.start()
    deadline = time.monotonic() + 15.0
    while True:
        try:
            io.put({prefix + "TaskDuration": 4.5}, timeout=2.0)
            break
        except PVError:
            if time.monotonic() > deadline:
                raise
    io.put({prefix + "Busy": 1})
    assert io.get([prefix + "Busy", prefix + "TaskDuration"]) == {prefix + "Busy": 1, prefix + "TaskDuration": 4.5}


def test_a_write_to_a_frozen_ioc_times_out_and_the_next_after_it_thaws_lands(private):
    prefix = "KEPT:F:"
    soft_ioc, io = private(prefix)
    io.put({prefix + "TaskDuration": 1.0})
    soft_ioc.freeze()
    try:
        started = time.monotonic()
        with pytest.raises(PVTimeoutError):
            io.put({prefix + "TaskDuration": 2.0}, timeout=0.5)
        assert time.monotonic() - started < 0.5 + MARGIN
        sent = io.send(prefix + "Heartbeat", 1)
        assert "timeout" in (sent.failure() or "")
        sent.close()
    finally:
        soft_ioc.thaw()
    io.put({prefix + "TaskDuration": 3.0})
    assert io.get(prefix + "TaskDuration") == 3.0


def test_closed_kept_writes_fall_back_to_p4p(kept_io, prefix):
    io, kept = kept_io
    kept.close()
    io.put({prefix + "TaskDuration": 7.0})
    assert io.get(prefix + "TaskDuration") == 7.0
    assert kept.writer(prefix + "TaskDuration") is None


def test_the_engine_writes_busy_cycle_end_and_heartbeat_through_one_operation_each(client, prefix):
    """Five cycles and several pulses of a running task: one INIT per PV, and only those three kept."""
    reg = Registry()

    @reg.task(prefix=prefix, heartbeat_period=0.2)
    def noop(t):
        t.put(task_duration=0.5)  # a task's own write goes through p4p

    with running(reg.tasks) as runner:
        io_kept, pulse_kept = runner._contexts[:2]  # noqa: SLF001 - the runner's own KeptPuts
        trigger = Trigger(client, prefix)
        try:
            assert [trigger.cycle() for _ in range(5)] == [TaskStatus.SUCCESS] * 5
        finally:
            trigger.close()
        wait_heartbeat(client, prefix, pulses=3)
        assert pulse_kept._writers[prefix + "Heartbeat"].inits == 1  # noqa: SLF001
        assert io_kept.writer(prefix + "Busy").inits == 1
        assert io_kept.writer(prefix + "CycleEnd").inits == 1
        assert sorted(io_kept._writers) == [prefix + "Busy", prefix + "CycleEnd"]  # noqa: SLF001


class Rings:
    """A watch's wake: counts the calls (made on pvxs's thread)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def _popped(watch: Watch, count: int, what: str) -> List[Any]:
    """The first ``count`` updates the watch gives, popped as they come (the test's own loop)."""
    got: List[Any] = []
    wait_for(lambda: got.extend(watch.pop()) or len(got) >= count, 10.0, what=what)
    assert len(got) == count, got
    return got


def test_a_watch_rings_for_requests_and_not_for_a_return_to_zero(kept_io, prefix):
    """A zero on a live link (a task's own acknowledge) waits for the loop's next read without a
    call into Python; a request, and the first value of the link, ring. Nothing is lost or reordered."""
    io, kept = kept_io
    pv = prefix + "Trigger"
    io.put({pv: 0})
    rings = Rings()
    watch = kept.watch(pv, rings)
    assert watch is not None
    try:
        assert _popped(watch, 1, "the first value") == [0]
        wait_for(lambda: rings.count == 1, 5.0, what="the first value's ring")
        for n in range(3):
            io.put({pv: 1})
            wait_for(lambda n=n: rings.count == 2 + 2 * n, 5.0, what="a request's ring")
            assert _popped(watch, 1, "the request") == [1]
            io.put({pv: 0})
            assert _popped(watch, 1, "the return to zero") == [0]
            io.put({pv: 1})  # the pvxs thread rings for this only after it handled the zero's update
            wait_for(lambda n=n: rings.count == 3 + 2 * n, 5.0, what="the next request's ring")
            assert _popped(watch, 1, "the next request") == [1]
            io.put({pv: 0})
            assert _popped(watch, 1, "the return to zero") == [0]
        io.put({pv: 1})
        wait_for(lambda: rings.count == 8, 5.0, what="the last request's ring")
        assert rings.count == 8  # 1 first value + 7 requests, none for the 6 zeros
    finally:
        watch.close()


def test_a_watch_reads_each_kind_of_value(kept_io):
    """Numbers as numbers (an enum as its index), any other kind named, as the loop's warning says."""
    _, kept = kept_io
    expected = {"Long": 42, "Double": 1.5, "Int64": 1234567890123, "Bool": 1, "Text": "string", "Wave": "array"}
    watches = {name: kept.watch(VALUES + name, Rings()) for name in expected}
    try:
        for name, value in expected.items():
            got = _popped(watches[name], 1, f"{name}'s first value")
            assert got == [value] and type(got[0]) is type(value), (name, got)
    finally:
        for watch in watches.values():
            watch.close()


def test_a_watch_rings_for_a_dropped_link_and_again_for_the_value_after_the_reboot(private):
    prefix = "KEPT:W:"
    soft_ioc, io = private(prefix)
    pv = prefix + "Trigger"
    rings = Rings()
    watch = io.kept.watch(pv, rings)
    try:
        assert _popped(watch, 1, "the first value") == [0]
        soft_ioc.stop()
        wait_for(lambda: rings.count == 2, 10.0, what="the ring of the dropped link")
        dropped = _popped(watch, 1, "the dropped link")
        assert isinstance(dropped[0], Disconnected)
        soft_ioc.start()
        wait_for(lambda: rings.count == 3, 20.0, what="the ring of the value after the reboot")
        assert _popped(watch, 1, "the value after the reboot") == [0]
    finally:
        watch.close()


def test_a_feed_hands_over_every_number_with_its_ioc_timestamp(kept_io, prefix):
    io, kept = kept_io
    names = [VALUES + "Scratch", prefix + "TaskDuration"]
    io.put({names[0]: 0.0, names[1]: 0.0})
    feed = kept.feed(names)
    assert feed is not None
    try:
        got: List[Any] = []
        wait_for(lambda: got.extend(feed.take(0.1)) or len(got) >= 2, 10.0, what="both first values")
        since, started = time.time(), time.perf_counter()
        for n in range(1, 4):
            io.put({names[0]: float(n), names[1]: n * 10.0})
        got = []
        wait_for(lambda: got.extend(feed.take(0.1)) or len(got) >= 6, 10.0, what="six updates")
        assert [(i, v) for i, v, _, _ in got if i == 0] == [(0, 1.0), (0, 2.0), (0, 3.0)]
        assert [(i, v) for i, v, _, _ in got if i == 1] == [(1, 10.0), (1, 20.0), (1, 30.0)]
        assert all(since - 0.5 <= stamp <= time.time() + 0.5 for _, _, stamp, _ in got)  # the host's clock
        assert all(started <= arrival <= time.perf_counter() for _, _, _, arrival in got)
        assert feed.take(0.05) == []
    finally:
        feed.close()


def test_a_task_is_woken_once_a_cycle_and_not_again_by_its_own_acknowledge(client, prefix):
    """The loop's Trigger watch: each request wakes the loop once; the Trigger=0 that ends the cycle
    is read by the loop before it next decides, with no wake-up of its own (p4p's path: two a cycle)."""
    reg = Registry()

    @reg.task(prefix=prefix)
    def noop(t):
        pass

    with running(reg.tasks) as runner:
        loop = runner.loops[0]
        wait_for(lambda: runner.ready() and loop.source.connected, 20.0, what="the task serving, its watch connected")
        wakes: List[Any] = []
        wake = loop.wake
        loop.wake = lambda drain: (wakes.append(drain), wake(drain))  # type: ignore[method-assign]
        trigger = Trigger(client, prefix)
        try:
            assert [trigger.cycle() for _ in range(5)] == [TaskStatus.SUCCESS] * 5
        finally:
            trigger.close()
        assert len(wakes) == 5
