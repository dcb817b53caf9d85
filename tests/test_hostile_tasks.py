"""A task cannot reach into the engine: ``t`` and ``t.pvs`` are read-only, and whatever a task raises,
``BaseException`` included, ends that cycle with EXCEPTION while the loop goes on."""

from __future__ import annotations

import asyncio
from typing import Any, Dict, List

import pytest
from conftest import PREFIXES
from helpers import MonitorQueue, Trigger, running

from epics_bridge import Registry, TaskStatus
from epics_bridge.task_context import ReadOnlyError

#: A prefix of the session IOC that no other test hands out: the neighbour a hostile task aims at.
NEIGHBOUR = PREFIXES[-1]


def test_a_task_cannot_rename_its_pvs_or_reach_another_tasks_records(prefix, client):
    reg = Registry()
    raised: List[BaseException] = []

    @reg.task(prefix=prefix)
    def hostile(t):
        for assign in (
            lambda: setattr(t.pvs, "busy", NEIGHBOUR + "Busy"),
            lambda: delattr(t.pvs, "trigger"),
            lambda: setattr(t, "io", None),
        ):
            try:
                assign()
            except ReadOnlyError as exc:
                raised.append(exc)
        t.pvs.busy = NEIGHBOUR + "Busy"  # uncaught: the cycle ends with EXCEPTION

    neighbour_busy = MonitorQueue(client, NEIGHBOUR + "Busy")
    try:
        with running(reg.tasks):
            trigger = Trigger(client, prefix)
            for _ in range(3):
                assert trigger.cycle() == TaskStatus.EXCEPTION
                assert trigger.cycle() == TaskStatus.EXCEPTION  # and the loop goes on
            trigger.close()
        updates = [u for u in neighbour_busy.drain() if not isinstance(u, Exception)]
    finally:
        neighbour_busy.close()
    assert len(raised) == 18 and all(isinstance(e, AttributeError) for e in raised)
    assert "t.pvs.busy is read-only" in str(raised[0]) and "t.io is read-only" in str(raised[2])
    assert [u["value.index"] for u in updates] == [0], "the neighbour's Busy was never written"
    assert reg.tasks[0].pvs.busy == prefix + "Busy"


@pytest.mark.parametrize(
    "exception", [SystemExit(0), KeyboardInterrupt(), asyncio.CancelledError(), GeneratorExit()], ids=repr
)
def test_a_base_exception_ends_the_cycle_not_the_loop(exception, prefix, client):
    reg = Registry()
    calls: Dict[str, Any] = {"n": 0}

    @reg.task(prefix=prefix)
    def raising(t):
        calls["n"] += 1
        if calls["n"] == 1:
            raise exception

    with running(reg.tasks):
        trigger = Trigger(client, prefix)
        assert trigger.cycle() == TaskStatus.EXCEPTION
        assert trigger.cycle() == TaskStatus.SUCCESS, "the loop served the next trigger"
        trigger.close()
    assert calls["n"] == 2
