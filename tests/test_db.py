"""db/bridge.db on a real soft IOC: TaskStatus states and alarms, heartbeat-age alarm, CycleEnd group."""

from __future__ import annotations

import time
from typing import Tuple

from conftest import ROOT
from helpers import MonitorQueue, client_for, read
from p4p.client.thread import Context

from epics_bridge.io import BridgeIO
from epics_bridge.ioc.softioc import Database
from epics_bridge.status import TaskStatus

NO_ALARM, MINOR, MAJOR = 0, 1, 2
#: The states of TaskStatus in db/bridge.db: value -> (string, severity).
STATES = {
    TaskStatus.SUCCESS: ("Success", NO_ALARM),
    TaskStatus.LOGIC_FAILURE: ("Task Fail", MINOR),
    TaskStatus.IO_FAILURE: ("IO Failure", MINOR),
    TaskStatus.EXCEPTION: ("Code Crash", MAJOR),
    TaskStatus.SKIPPED: ("Skipped", NO_ALARM),
}
CYCLE_END_ORDER = ["TaskStatus", "TaskDuration", "Busy", "Trigger"]


def stamp(ctx: Context, pv: str) -> Tuple[int, int]:
    v = ctx.get(pv)
    return v["timeStamp.secondsPastEpoch"], v["timeStamp.nanoseconds"]


# -- TaskStatus --------------------------------------------------------------------------------
def test_task_status_reads_back_each_state_with_its_severity(client, prefix):
    seen = {}
    for status in STATES:
        client.put(prefix + "TaskStatus", int(status))
        v = client.get(prefix + "TaskStatus")
        index = v["value.index"]
        seen[index] = (v["value.choices"][index], v["alarm.severity"])
    assert seen == {int(s): state for s, state in STATES.items()}


def test_task_status_before_any_cycle_raises_no_alarm(client, prefix):
    v = client.get(prefix + "TaskStatus")
    assert v["alarm.severity"] == NO_ALARM, "an IOC reboot must not light up the alarm tree"


def test_task_status_three_is_code_crash_major_for_bridge_io(io, prefix):
    io.put({prefix + "TaskStatus": TaskStatus.EXCEPTION})
    value = io.get(prefix + "TaskStatus")
    assert value == 3 and value.label == "Code Crash"


def test_heartbeat_age_default_limit_is_five_seconds(client, prefix):
    age = client.get(prefix + "HeartbeatAge")
    assert age["valueAlarm.highAlarmLimit"] == 5


# -- HeartbeatAge on a private IOC -----------------------------------------------------------------
HBTMO = 3


def test_heartbeat_age_alarms_when_pulses_stop_and_clears_on_the_next(make_ioc):
    hb = "HB:"
    soft_ioc = make_ioc(extra=[Database(ROOT / "db" / "bridge.db", {"P": hb, "HBTMO": HBTMO})])
    ctx = client_for(soft_ioc.client_env)
    io = BridgeIO(ctx)
    io.put({hb + "Heartbeat": 0})  # before subscribing: the age counted since iocInit is not ours
    ages = MonitorQueue(ctx, hb + "HeartbeatAge")
    try:
        # Pulsing for longer than HBTMO keeps the age low: no alarm at any point.
        end = time.monotonic() + HBTMO + 1.5
        n = 1
        while time.monotonic() < end:
            io.put({hb + "Heartbeat": n % 2})
            last_pulse = time.monotonic()
            n += 1
            time.sleep(0.2)
        pulsing = ages.drain()
        assert pulsing and all(v["alarm.severity"] == NO_ALARM for v in pulsing)
        assert max(v["value"] for v in pulsing) < HBTMO

        major = ages.next(lambda v: v["alarm.severity"] == MAJOR, HBTMO + 10, what="MAJOR")
        assert major["value"] >= HBTMO
        assert time.monotonic() - last_pulse >= HBTMO - 1.5  # the 1 s scan ticks at any phase

        io.put({hb + "Heartbeat": 1})
        cleared = ctx.get(hb + "HeartbeatAge")
        assert cleared["value"] == 0 and cleared["alarm.severity"] == NO_ALARM
    finally:
        ages.sub.close()
        ctx.close()


# -- the CycleEnd group ----------------------------------------------------------------------------
def test_cycle_end_writes_status_duration_busy_trigger_in_order(io, client, prefix):
    io.put({prefix + "Busy": 1, prefix + "Trigger": 1})
    before = {rec: stamp(client, prefix + rec) for rec in CYCLE_END_ORDER}
    io.put({prefix + "CycleEnd": {"status": 3, "duration": 0.25, "busy": 0, "trigger": 0}})
    after = [stamp(client, prefix + rec) for rec in CYCLE_END_ORDER]
    assert after == sorted(after) and len(set(after)) == 4, dict(zip(CYCLE_END_ORDER, after))
    assert all(new > before[rec] for rec, new in zip(CYCLE_END_ORDER, after))
    assert [read(client, prefix + rec) for rec in CYCLE_END_ORDER] == [3, 0.25, 0, 0]


def test_cycle_end_without_trigger_leaves_trigger_alone(io, client, prefix):
    io.put({prefix + "Trigger": 1, prefix + "Busy": 1})
    trigger_stamp = stamp(client, prefix + "Trigger")
    io.put({prefix + "CycleEnd": {"status": 4, "duration": 0.5, "busy": 0}})
    assert [read(client, prefix + rec) for rec in CYCLE_END_ORDER] == [4, 0.5, 0, 1]
    assert stamp(client, prefix + "Trigger") == trigger_stamp
