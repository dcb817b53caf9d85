"""The examples in ``tasks/``, each on a soft IOC of its own through the ``bridge_ioc`` fixture (the
one a user's own tests get): bridge.db for the example's prefix plus the example's own database.
``tests/test_embedded.py`` runs the same files as users run them, ``python -m epics_bridge tasks/ --ioc``.
"""

from __future__ import annotations

from typing import Dict

import numpy as np
import pytest
from conftest import ROOT

import epics_bridge
from epics_bridge import Task, TaskStatus
from epics_bridge.app import bridge
from epics_bridge.service.loading import load

TASKS = ROOT / "tasks"


@pytest.fixture(scope="module")
def examples() -> Dict[str, Task]:
    """The examples' tasks by name, as the launcher loads them."""
    try:
        tasks = load([str(TASKS)], bridge)  # into the default registry, where the files register
    finally:
        epics_bridge.bridge.clear()  # this process only needs their Task objects
    assert {t.prefix for t in tasks} == {"IOC:MOTOR:01:", "VAC:PUMP:01:", "DIAG:BPM:01:", "CRYO:01:"}
    return {task.name: task for task in tasks}


def test_motor_moves_on_trigger(bridge_ioc, examples):
    motor = examples["motor"]
    ioc = bridge_ioc(motor)
    ioc.put(motor, velocity_sp=7.25)
    assert ioc.cycle(motor).status == TaskStatus.SUCCESS
    assert ioc.get(motor, "position_rbv") == pytest.approx(3.625)


def test_motor_refuses_to_move_a_hot_drive(bridge_ioc, examples):
    motor = examples["motor"]
    ioc = bridge_ioc(motor)
    ioc.put(motor, velocity_sp=2.0, temperature=95.0)
    result = ioc.cycle(motor)
    assert result.status == TaskStatus.LOGIC_FAILURE
    assert "drive too hot (95.0 C)" in result.log
    assert ioc.get(motor, "position_rbv") == 0


def test_waveform_statistics(bridge_ioc, examples):
    stats = examples["waveform_stats"]
    ioc = bridge_ioc(stats)
    ioc.put(stats, wave=np.array([], dtype=float))
    assert ioc.cycle(stats).status == TaskStatus.SKIPPED
    wave = np.random.default_rng().normal(3.0, 0.5, size=777)
    ioc.put(stats, wave=wave)
    assert ioc.cycle(stats).status == TaskStatus.SUCCESS
    values = {name: ioc.get(stats, name) for name in ("mean", "std", "min", "max", "count")}
    expected = {"mean": wave.mean(), "std": wave.std(), "min": wave.min(), "max": wave.max(), "count": 777}
    assert values == pytest.approx(expected)


def test_vacuum_interlock_closes_the_valve_on_its_timer(bridge_ioc, examples):
    interlock = examples["interlock"]
    ioc = bridge_ioc(interlock)
    assert ioc.cycle(interlock).status == TaskStatus.SUCCESS
    assert ioc.get(interlock, "valve") == 1
    ioc.put(interlock, pressure=1e-3)  # above Limit:SP (1e-5)
    result = ioc.cycle(interlock)
    assert result.status == TaskStatus.LOGIC_FAILURE
    assert "closing the valve" in result.log
    assert ioc.get(interlock, "valve") == 0
    assert ioc.get("VAC:PUMP:01:TaskStatus") == TaskStatus.LOGIC_FAILURE


def test_cryostat_reads_its_stages_while_the_flow_settles(bridge_ioc, examples):
    cryostat = examples["cryostat"]
    assert cryostat.is_async
    ioc = bridge_ioc(cryostat)
    ioc.put(cryostat, stage1=4.2, stage2=4.4, stage3=5.1, stage4=4.3, flow=12.5)
    result = ioc.cycle(cryostat)
    assert result.status == TaskStatus.SUCCESS, result.log
    assert ioc.get(cryostat, "warmest") == pytest.approx(5.1)
    assert ioc.get(cryostat, "flow_settled") == pytest.approx(12.5)
    assert result.duration >= 0.1  # three flow readings 50 ms apart; the stages were read meanwhile
    ioc.put(cryostat, stage3=7.5)  # above Limit:SP (6 K)
    result = ioc.cycle(cryostat)
    assert result.status == TaskStatus.LOGIC_FAILURE
    assert "a stage is at 7.50 K, above the 6.00 K limit" in result.log
    assert ioc.get(cryostat, "warmest") == pytest.approx(7.5)
