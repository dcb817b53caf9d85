"""The examples in ``tasks/`` run as users run them: ``python -m epics_bridge tasks/`` against an IOC
serving bridge.db for each example's prefix plus the examples' own databases.
"""
from __future__ import annotations

from typing import Iterator, Tuple

import numpy as np
import pytest
from conftest import ROOT
from helpers import Daemon, Trigger, client_for, read, wait_for, wait_heartbeat
from p4p.client.thread import Context

import epics_bridge
from epics_bridge import TaskStatus
from epics_bridge.ioc.embedded import databases
from epics_bridge.ioc.softioc import SoftIOC
from epics_bridge.service.launcher import load

TASKS = ROOT / "tasks"
MOTOR, VACUUM, BPM = "IOC:MOTOR:01:", "VAC:PUMP:01:", "DIAG:BPM:01:"


@pytest.fixture(scope="module")
def examples(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuple[Context, Daemon]]:
    """The examples' daemon, running, and a client on their IOC."""
    try:
        tasks = load([str(TASKS)])  # into the default registry, where the files register
    finally:
        epics_bridge.bridge.clear()  # this process only needed their settings
    assert {t.prefix for t in tasks} == {MOTOR, VACUUM, BPM}
    workdir = tmp_path_factory.mktemp("examples")
    with SoftIOC(databases(tasks), output=workdir / "ioc.log") as ioc:
        ctx = client_for(ioc.client_env)
        daemon = Daemon([TASKS], ioc.client_env, workdir)
        try:
            for task in tasks:
                wait_heartbeat(ctx, task.prefix, timeout=30)
            yield ctx, daemon
        finally:
            daemon.kill()
            ctx.close()


def test_motor_moves_on_trigger(examples):
    ctx, _ = examples
    ctx.put(MOTOR + "Vel:SP", 7.25)
    assert Trigger(ctx, MOTOR).cycle() == TaskStatus.SUCCESS
    assert read(ctx, MOTOR + "Pos:RBV") == pytest.approx(3.625)


def test_waveform_statistics(examples):
    ctx, _ = examples
    trig = Trigger(ctx, BPM)
    ctx.put(BPM + "Wave", np.array([], dtype=float))
    assert trig.cycle() == TaskStatus.SKIPPED
    wave = np.random.default_rng().normal(3.0, 0.5, size=777)
    ctx.put(BPM + "Wave", wave)
    assert trig.cycle() == TaskStatus.SUCCESS
    stats = {name: read(ctx, BPM + name) for name in ("Mean", "Std", "Min", "Max", "Count")}
    expected = {"Mean": wave.mean(), "Std": wave.std(), "Min": wave.min(), "Max": wave.max(), "Count": 777}
    assert stats == pytest.approx(expected)


def test_vacuum_interlock_closes_the_valve_on_its_timer(examples):
    ctx, daemon = examples
    wait_for(lambda: read(ctx, VACUUM + "TaskStatus") == TaskStatus.SUCCESS, what="a healthy interlock cycle")
    assert read(ctx, VACUUM + "Valve:SP") == 1
    ctx.put(VACUUM + "Press:RBV", 1e-3)  # above Limit:SP (1e-5)
    wait_for(lambda: read(ctx, VACUUM + "Valve:SP") == 0, what="the valve closed")
    wait_for(lambda: read(ctx, VACUUM + "TaskStatus") == TaskStatus.LOGIC_FAILURE, what="LOGIC_FAILURE")
    assert "closing the valve" in daemon.log("interlock")
