"""TaskStatus values and aliases are part of the contract (the IOC's mbbi states are numbered by them)."""

from __future__ import annotations

import pytest

import epics_bridge
import epics_bridge.daemon
from epics_bridge.status import TaskStatus, status_of


def test_values_are_fixed():
    assert {s.name: int(s) for s in TaskStatus} == {
        "SUCCESS": 0,
        "LOGIC_FAILURE": 1,
        "IO_FAILURE": 2,
        "EXCEPTION": 3,
        "SKIPPED": 4,
    }


def test_1_0_1_aliases_are_the_same_members():
    assert TaskStatus.DONE is TaskStatus.SUCCESS
    assert TaskStatus.ERROR is TaskStatus.LOGIC_FAILURE
    assert TaskStatus(3) is TaskStatus.EXCEPTION


def test_importable_from_package_and_the_1_0_1_module():
    assert epics_bridge.TaskStatus is TaskStatus
    assert epics_bridge.daemon.TaskStatus is TaskStatus


@pytest.mark.parametrize(
    "result, expected",
    [
        (None, TaskStatus.SUCCESS),
        (True, TaskStatus.SUCCESS),
        (False, TaskStatus.LOGIC_FAILURE),
        (TaskStatus.SKIPPED, TaskStatus.SKIPPED),
        (TaskStatus.DONE, TaskStatus.SUCCESS),
        (0, TaskStatus.SUCCESS),
        (2, TaskStatus.IO_FAILURE),
        (4, TaskStatus.SKIPPED),
    ],
)
def test_status_of_maps_results(result, expected):
    status = status_of(result)
    assert status is expected
    assert type(status) is TaskStatus


@pytest.mark.parametrize(
    "result, type_name",
    [(5, "int"), (-1, "int"), ("0", "str"), (1.0, "float"), ([], "list"), (object(), "object")],
)
def test_status_of_rejects_anything_else_naming_its_type(result, type_name):
    with pytest.raises(TypeError, match=rf"\b{type_name}\b"):
        status_of(result)
