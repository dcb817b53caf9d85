"""Typed PV declarations on a real soft IOC: reads come back as the declared types, a write that
does not fit fails its cycle (IO_FAILURE) with nothing of the batch written, ``t.get(tag=...)``
reads a group in one batch, and a record of another type is named at start-up and fails the read.
``epics-bridge db`` writes records that load in the soft IOC and serve the declared units, limits
and alarms; ``--ioc`` (and the ``bridge_ioc`` fixture) serve typed PVs with no database at all; a
class-API daemon reads its typed interface through ``self.context``.

Most tasks run under the ``bridge_ioc`` fixture (their own IOC, the engine in this process); what
the IOC holds is checked with the fixture's own client, as an operator's display would see it.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np
from conftest import ROOT
from helpers import (
    client_for,
    daemon,
    embedded_client_env,
    embedded_ports,
    read,
    ready_trigger,
    wait_for,
    wait_heartbeat,
    write_tasks,
)
from loguru import logger

from epics_bridge import PV, BasePVInterface, BridgeDaemon, TaskStatus
from epics_bridge.ioc.softioc import Database
from epics_bridge.registry import Registry
from epics_bridge.task import Task

NO_ALARM, MINOR, MAJOR = 0, 1, 2
TYPED_DB = ROOT / "tests" / "db" / "typed.db"
PVS = {
    "pressure": PV("Press:RBV", float, ["EGU", "PREC"], tags=["inputs"], units="mbar", precision=3),
    "limit": PV("Limit:SP", float, tags=["inputs"], limits=(0.0, 1e-3)),
    "count": PV("Count", int, limits=(0, 10)),
    "valve": PV("Valve:SP", bool, choices=["Closed", "Open"]),
    "state": PV("State", choices=["Off", "Standby", "On"], tags=["inputs"]),
    "status": PV("Status", TaskStatus, writable=True),
    "name": PV("Name", str),
    "wave": PV("Wave", float, length=4, limits=(-1, 1)),
    "wrong": PV("Wrong", float),
}


def typed_task(func: Callable[[Any], Any], prefix: str) -> Task:
    return Registry.make(func, name=func.__name__, prefix=prefix, pvs=PVS, db=[TYPED_DB])


def test_reads_come_back_as_the_declared_types(bridge_ioc):
    seen: Dict[str, Any] = {}

    def reader(t):
        seen.update(t.get(["pressure", "limit", "count", "valve", "state", "name"]))
        seen["tagged"] = t.get(tag="inputs")
        seen["fields"] = t.fields("pressure")
        t.put(status=TaskStatus.SKIPPED, wave=[0.5, -0.25, 1])
        seen["status"], seen["wave"] = t.get("status"), t.get("wave")

    task = typed_task(reader, "TYPED:READ:")
    ioc = bridge_ioc(task)
    assert ioc.cycle(task).status == TaskStatus.SUCCESS
    assert seen["pressure"] == 2.5e-6 and type(seen["pressure"]) is float
    assert seen["count"] == 3 and type(seen["count"]) is int
    assert seen["valve"] is True
    assert seen["state"] == "On" and seen["name"] == "pump"
    assert seen["tagged"] == {"pressure": 2.5e-6, "limit": 1e-5, "state": "On"}
    assert seen["fields"] == {"EGU": "mbar", "PREC": 3}
    assert seen["status"] is TaskStatus.SKIPPED
    assert isinstance(seen["wave"], np.ndarray) and seen["wave"].tolist() == [0.5, -0.25, 1.0]
    assert ioc.get(task, "status") is TaskStatus.SKIPPED  # the index went to the mbbo, read back typed


def test_a_put_outside_limits_fails_the_cycle_naming_pv_value_and_range_with_nothing_written(bridge_ioc):
    def closer(t):
        t.put(valve=False, limit=2e-3)

    task = typed_task(closer, "TYPED:PUT:")
    ioc = bridge_ioc(task)
    result = ioc.cycle(task)
    assert result.status == TaskStatus.IO_FAILURE
    assert "put refused for TYPED:PUT:Limit:SP: 0.002 (float) must be within [0, 0.001] (limits)" in result.log
    assert "nothing of the batch was written" in result.log
    # the valve of the same batch stayed open; the setpoint was not clipped to DRVH by the IOC
    assert ioc.get(task, "valve") is True
    assert ioc.get(task, "limit") == 1e-5


def test_a_record_of_another_type_is_named_at_start_up_and_fails_the_read(bridge_ioc):
    def misread(t):
        return t.get("wrong") > 0

    task = typed_task(misread, "TYPED:WRONG:")
    lines: List[str] = []
    sink = logger.add(lines.append, format="{level} {message}", filter=lambda r: r["extra"].get("task") == "misread")
    try:
        ioc = bridge_ioc(task)
        result = ioc.cycle(task)
    finally:
        logger.remove(sink)
    assert result.status == TaskStatus.IO_FAILURE
    assert "get refused for TYPED:WRONG:Wrong: declared float, the IOC sent 'abc' (str)" in result.log
    startup = [line for line in lines if "served by a record of another type" in line]
    assert len(startup) == 1 and startup[0].startswith("ERROR 1 typed PV(s)")
    assert "wrong (TYPED:WRONG:Wrong: declared float, the IOC serves a string)" in startup[0]


# -- epics-bridge db ---------------------------------------------------------------------------------
INTERLOCK = """\
from enum import IntEnum
from epics_bridge import PV, bridge

class Mode(IntEnum):
    IDLE = 0
    PUMP = 1
    VENT = 3

@bridge.task(
    prefix="DBGEN:PUMP:",
    prefixes={"sys": "DBGEN:SYS:"},
    pvs={
        "pressure": PV("Press:RBV", float, units="mbar", precision=2, alarm=(None, 1e-9, 1e-5, 1e-4),
                       description="Pressure readback"),
        "limit": PV("Limit:SP", float, units="mbar", limits=(0, 1e-3)),
        "valve": PV("Valve:SP", bool, choices=["Closed", "Open"]),
        "count": PV("Count", int, limits=(0, 10)),
        "mode": PV("Mode", Mode, writable=True),
        "state": PV("State", choices=["Off", "On"]),
        "name": PV("Name", str),
        "wave": PV("Wave", float, length=8, units="V"),
        "counts": PV("Counts:SP", int, length=4),
        "temp": PV("{sys}Temp", float),
        "plain": "Plain",
    },
)
def interlock(t):
    pass
"""


def db_command(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "epics_bridge", "db", *args],
        cwd=folder,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_db_writes_records_that_load_in_the_soft_ioc_with_the_declared_metadata(make_ioc, tmp_path):
    write_tasks(tmp_path / "tasks", INTERLOCK)
    done = db_command(tmp_path, "tasks", "-o", "out/typed.db")
    assert done.returncode == 0, done.stderr
    assert "wrote out/typed.db: 10 record(s) for 1 task(s)" in done.stdout
    text = (tmp_path / "out" / "typed.db").read_text()
    assert "Plain" not in text and "Trigger" not in text  # untyped, and bridge.db's own
    assert 'record(ai, "$(P=DBGEN:PUMP:)Press:RBV")' in text and 'record(ai, "$(sys=DBGEN:SYS:)Temp")' in text

    # as it is (the declared prefixes), and again for a second pump under another P
    ioc = make_ioc(
        extra=[Database(tmp_path / "out" / "typed.db", ""), Database(tmp_path / "out" / "typed.db", "P=DBGEN:PUMP2:")]
    )
    ctx = client_for(ioc.client_env)
    try:
        kinds = {
            name: ctx.get("DBGEN:PUMP:" + name).getID().split("/")[-1] for name in ("Press:RBV", "Valve:SP", "Wave")
        }
        assert kinds == {"Press:RBV": "NTScalar:1.0", "Valve:SP": "NTEnum:1.0", "Wave": "NTScalarArray:1.0"}
        pressure = ctx.get("DBGEN:PUMP:Press:RBV")
        assert (pressure["display.units"], pressure["display.precision"]) == ("mbar", 2)
        assert pressure["display.description"] == "Pressure readback"
        assert (pressure["valueAlarm.lowWarningLimit"], pressure["valueAlarm.highWarningLimit"]) == (1e-9, 1e-5)
        assert pressure["valueAlarm.highAlarmLimit"] == 1e-4
        for value, severity in ((5e-5, MINOR), (2e-4, MAJOR), (1e-6, NO_ALARM)):
            ctx.put("DBGEN:PUMP:Press:RBV", value)
            assert ctx.get("DBGEN:PUMP:Press:RBV")["alarm.severity"] == severity
        limit = ctx.get("DBGEN:PUMP2:Limit:SP")
        assert (limit["control.limitLow"], limit["control.limitHigh"]) == (0.0, 1e-3)  # DRVL/DRVH
        assert (limit["display.limitLow"], limit["display.limitHigh"]) == (0.0, 1e-3)  # LOPR/HOPR
        count = ctx.get("DBGEN:PUMP:Count")
        assert type(count["value"]) is int and count["display.limitHigh"] == 10
        assert ctx.get("DBGEN:PUMP:Valve:SP")["value.choices"] == ["Closed", "Open"]
        assert ctx.get("DBGEN:PUMP:Mode")["value.choices"] == ["IDLE", "PUMP", "", "VENT"]
        assert ctx.get("DBGEN:PUMP:State")["value.choices"] == ["Off", "On"]
        assert ctx.get("DBGEN:PUMP:Name")["value"] == ""
        ctx.put("DBGEN:PUMP:Wave", list(range(8)))
        assert ctx.get("DBGEN:PUMP:Wave")["value"].tolist() == list(range(8))
        ctx.put("DBGEN:PUMP:Counts:SP", [1, 2, 3, 4])
        assert ctx.get("DBGEN:PUMP:Counts:SP")["value"].dtype == np.int32  # FTVL LONG
        assert ctx.get("DBGEN:SYS:Temp")["display.description"] == "temp"
    finally:
        ctx.close()


def test_db_refuses_a_name_no_prefix_macro_can_express_naming_task_and_pv(tmp_path):
    write_tasks(
        tmp_path,
        """\
        from dataclasses import dataclass
        from epics_bridge import PV, BasePVInterface, bridge

        @dataclass
        class Interface(BasePVInterface):
            temperature: PV = PV("OTHER:IOC:Temp", float)

        @bridge.task(prefix="DBGEN:FIXED:", pvs=Interface)
        def fixed(t):
            pass
        """,
    )
    done = db_command(tmp_path, ".", "-o", "out.db")
    assert done.returncode == 2
    assert "task 'fixed': PV 'temperature' (OTHER:IOC:Temp)" in done.stderr
    assert "uses no prefix key, so no macro can express it" in done.stderr
    assert not (tmp_path / "out.db").exists()


def test_db_refuses_tasks_without_typed_pvs(tmp_path):
    write_tasks(
        tmp_path,
        "from epics_bridge import bridge\n\n@bridge.task(prefix='DBGEN:U:', pvs={'a': 'A'})\ndef u(t):\n    pass\n",
    )
    done = db_command(tmp_path, ".", "-o", "out.db")
    assert done.returncode == 2 and "declare no typed PV" in done.stderr


# -- --ioc and bridge_ioc: records for the typed PVs no database defines ----------------------------------
def test_the_embedded_ioc_serves_typed_pvs_without_a_database_and_a_given_db_wins(bridge_ioc, tmp_path):
    seen: Dict[str, Any] = {}

    def first_run(t):
        seen.update(t.get(["pressure", "state", "name"]))
        t.put(limit=5e-4, valve=True, wave=[0.5], counts=[1, 2])

    db = tmp_path / "own.db"
    db.write_text('record(stringin, "$(P)Name") { field(VAL, "from own.db") field(PINI, "YES") }\n')
    pvs = {
        "pressure": PV("Press:RBV", float, units="mbar", precision=3),
        "limit": PV("Limit:SP", float, limits=(0, 1e-3)),
        "valve": PV("Valve:SP", bool, choices=["Closed", "Open"]),
        "state": PV("State", choices=["Off", "On"]),
        "name": PV("Name", str),
        "wave": PV("Wave:SP", float, length=4),
        "counts": PV("Counts:SP", int, length=2),
    }
    task = Registry.make(first_run, name="first_run", prefix="TYPED:FIRST:", pvs=pvs, db=[db])
    ioc = bridge_ioc(task)
    assert ioc.cycle(task).status == TaskStatus.SUCCESS
    assert seen == {"pressure": 0.0, "state": "Off", "name": "from own.db"}
    assert ioc.get(task, "limit") == 5e-4 and ioc.get(task, "valve") is True
    assert ioc.get(task, "counts").tolist() == [1, 2]
    assert ioc.io.ctx.get(task.pvs.pressure)["display.units"] == "mbar"


def test_db_of_the_shipped_tasks_loads_in_the_soft_ioc_beside_bridge_db(make_ioc, tmp_path):
    done = db_command(tmp_path, str(ROOT / "tasks"), "-o", "shipped.db")
    assert done.returncode == 0, done.stderr
    ioc = make_ioc("IOC:MOTOR:01:", extra=[Database(tmp_path / "shipped.db", "")])
    ctx = client_for(ioc.client_env)
    try:
        temperature = ctx.get("IOC:SYS:Temp:Mon")
        assert (temperature["display.units"], temperature["valueAlarm.highAlarmLimit"]) == ("C", 80.0)
        assert ctx.get("IOC:MOTOR:01:Vel:SP")["control.limitHigh"] == 10.0
    finally:
        ctx.close()


FIRST_RUN = """\
from epics_bridge import PV, bridge

@bridge.task(
    prefix="TYPED:IOC:",
    pvs={
        "request": PV("Request", float, units="mbar", precision=4),
        "limit": PV("Limit:SP", float, units="mbar", precision=4, limits=(0.0, 1e-3)),
        "valve": PV("Valve:SP", bool, choices=["Closed", "Open"]),
    },
)
def setter(t):
    t.put(valve=True, limit=t.get("request"))
"""


def test_a_typed_task_runs_under_ioc_with_no_database_and_a_put_outside_limits_writes_nothing(tmp_path):
    write_tasks(tmp_path / "tasks", FIRST_RUN)
    ports = embedded_ports()
    with daemon(["tasks/", "--ioc"], ports, tmp_path) as d:
        ctx = client_for(embedded_client_env(ports))
        try:
            wait_heartbeat(ctx, "TYPED:IOC:", timeout=30)
            assert ctx.get("TYPED:IOC:Limit:SP")["display.units"] == "mbar"
            trigger = ready_trigger(ctx, "TYPED:IOC:")
            ctx.put("TYPED:IOC:Request", 5e-4)
            assert trigger.cycle(timeout=30) == TaskStatus.SUCCESS
            assert (read(ctx, "TYPED:IOC:Limit:SP"), read(ctx, "TYPED:IOC:Valve:SP")) == (5e-4, 1)
            ctx.put("TYPED:IOC:Valve:SP", 0)
            ctx.put("TYPED:IOC:Request", 2e-3)
            assert trigger.cycle(timeout=30) == TaskStatus.IO_FAILURE
            assert (read(ctx, "TYPED:IOC:Limit:SP"), read(ctx, "TYPED:IOC:Valve:SP")) == (5e-4, 0)
            trigger.close()
        finally:
            ctx.close()
        wanted = "put refused for TYPED:IOC:Limit:SP: 0.002 (float) must be within [0, 0.001] (limits)"
        wait_for(lambda: wanted in d.log("setter"), timeout=10, what="the refusal in the task's log")
        d.signal()
        assert d.wait_exit(30) == 0
    assert not list(tmp_path.rglob("*.db"))


# -- the class API ---------------------------------------------------------------------------------------
@dataclass
class StageInterface(BasePVInterface):
    """epics-bridge 5.0.0-style declarations, beside the standard fields (1.0.1-style strings)."""

    position: PV = PV("{main}Pos:RBV", float, tags=["readback"])
    encoder: PV = PV("{main}Enc:RBV", int, tags=["readback"])
    velocity: PV = PV("{main}Vel:SP", float, limits=(0.0, 5.0))


class StageDaemon(BridgeDaemon):
    def run_task(self, inputs=None) -> TaskStatus:
        t = self.context
        readback = t.get(tag="readback")
        self.seen = readback
        t.put(velocity=readback["position"] * 2)
        return TaskStatus.DONE


def test_a_class_api_daemon_reads_its_typed_interface_by_tag_and_its_writes_are_checked(bridge_ioc):
    daemon = StageDaemon(StageInterface(prefixes={"main": "TYPED:STAGE:"}), name="stage")
    task = daemon.as_task()
    ioc = bridge_ioc(task)  # no database: the IOC serves records made from the declarations
    ioc.put(task, position=1.5, encoder=7)
    assert ioc.cycle(task).status == TaskStatus.SUCCESS
    assert daemon.seen == {"position": 1.5, "encoder": 7} and type(daemon.seen["encoder"]) is int
    assert ioc.get(task, "velocity") == 3.0
    ioc.put(task, position=4.0)
    result = ioc.cycle(task)
    assert result.status == TaskStatus.IO_FAILURE
    assert "TYPED:STAGE:Vel:SP: 8.0 (float) must be within [0, 5] (limits)" in result.log
    assert ioc.get(task, "velocity") == 3.0
