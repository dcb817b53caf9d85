"""Typed PV declarations on a real soft IOC: reads come back as the declared types, a write that
does not fit fails its cycle (IO_FAILURE) with nothing of the batch written, ``t.get(tag=...)``
reads a group in one batch, and a record of another type fails the read naming it.

The tasks run under the ``bridge_ioc`` fixture (their own IOC, the engine in this process); what
the IOC holds is checked with the fixture's own client, as an operator's display would see it.
"""

from __future__ import annotations

from typing import Any, Callable, Dict

import numpy as np
from conftest import ROOT

from epics_bridge import PV, TaskStatus
from epics_bridge.registry import Registry
from epics_bridge.task import Task

TYPED_DB = ROOT / "tests" / "db" / "typed.db"
PVS = {
    "pressure": PV("Press:RBV", float, tags=["inputs"], units="mbar", precision=3),
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
    assert seen["status"] is TaskStatus.SKIPPED
    assert isinstance(seen["wave"], np.ndarray) and seen["wave"].tolist() == [0.5, -0.25, 1.0]
    assert ioc.get(task.pvs.status) == TaskStatus.SKIPPED  # the index went to the mbbo


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
    assert ioc.get(task, "valve") == 1
    assert ioc.get(task, "limit") == 1e-5


def test_a_record_of_another_type_fails_the_read_naming_pv_type_and_value(bridge_ioc):
    def misread(t):
        return t.get("wrong") > 0

    task = typed_task(misread, "TYPED:WRONG:")
    ioc = bridge_ioc(task)
    result = ioc.cycle(task)
    assert result.status == TaskStatus.IO_FAILURE
    assert "get refused for TYPED:WRONG:Wrong: declared float, the IOC sent 'abc' (str)" in result.log
