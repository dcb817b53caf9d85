"""Kept writes (epics_bridge/kept/) on a real soft IOC: one pvxs operation per PV, re-executed, with
the same outcomes as p4p's path: acknowledged values, timeouts, refusals, a reboot in between."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterator, List, Tuple

import pytest
from conftest import VALUES
from helpers import Trigger, client_for, running, wait_heartbeat

from epics_bridge import Registry, TaskStatus
from epics_bridge.io import BridgeIO, PVError, PVRejectedError, PVTimeoutError
from epics_bridge.ioc.softioc import SoftIOC
from epics_bridge.kept import KeptPuts, available

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
