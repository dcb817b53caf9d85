"""``t.get``/``t.put`` by logical name, on the in-memory IO: a typo is an error at once, not a timeout."""

from __future__ import annotations

import time
from typing import List

import pytest

import epics_bridge
from epics_bridge.io import PVDisconnectedError
from epics_bridge.memory_io import MemoryIO
from epics_bridge.registry import Registry
from epics_bridge.task import ConfigError
from epics_bridge.task_context import TaskContext, UnknownNameError

PREFIX = "CTX:"


def _context(io: MemoryIO) -> TaskContext:
    task = Registry.make(lambda t: None, prefix=PREFIX, name="vac", pvs={"pressure": "Press", "valve": "Valve"})
    return TaskContext(task.name, task.pvs, io)


@pytest.fixture
def io() -> MemoryIO:
    return MemoryIO({PREFIX + "Press": 2.5e-6, PREFIX + "Valve": 1, "OTHER:Value": 7})


def test_logical_and_full_names_read_and_write(io):
    t = _context(io)
    assert t.get("pressure") == 2.5e-6
    assert t.get("OTHER:Value") == 7
    assert t.get(["pressure", "OTHER:Value"]) == {"pressure": 2.5e-6, "OTHER:Value": 7}
    t.put(valve=0)
    t.put({"OTHER:Value": 8})
    assert io.writes == [{PREFIX + "Valve": 0}, {"OTHER:Value": 8}]


def test_a_typo_in_get_raises_at_once_naming_the_known_names_and_the_closest(io):
    t = _context(io)
    started = time.monotonic()
    with pytest.raises(UnknownNameError) as caught:
        t.get("presure")
    assert time.monotonic() - started < 0.5  # not the PV timeout
    message = str(caught.value)
    assert "'presure' is not one of its logical names" in message
    assert "pressure" in message and "valve" in message and "trigger" in message
    assert "did you mean 'pressure'?" in message
    assert isinstance(caught.value, KeyError) and isinstance(caught.value, ConfigError)
    assert epics_bridge.UnknownNameError is UnknownNameError


def test_a_typo_in_a_batch_read_raises_before_any_read(io):
    io.fail[PREFIX + "Press"] = TimeoutError("would have waited")
    with pytest.raises(UnknownNameError, match="'valv'"):
        _context(io).get(["pressure", "valv"])


def test_a_typo_in_put_raises_and_writes_nothing(io):
    t = _context(io)
    with pytest.raises(UnknownNameError, match="did you mean 'valve'"):
        t.put(vlave=0, pressure=1.0)
    with pytest.raises(UnknownNameError):
        t.put({"presure": 1.0})
    assert io.writes == []


def test_no_close_match_still_lists_the_known_names(io):
    with pytest.raises(UnknownNameError) as caught:
        _context(io).get("zzz")
    assert "did you mean" not in str(caught.value) and "pressure" in str(caught.value)


class _Guard:
    """Records each call; raises PVDisconnectedError from the ``fail_at``-th on, as the cycle's
    guard does once the Trigger link has dropped."""

    def __init__(self, fail_at: int) -> None:
        self.calls: List[str] = []
        self.fail_at = fail_at

    def __call__(self, operation: str) -> None:
        self.calls.append(operation)
        if len(self.calls) >= self.fail_at:
            raise PVDisconnectedError(operation, {"CTX:Trigger": ConnectionError("the link dropped")})


def test_the_guard_runs_before_and_after_each_read_and_write_and_withholds_what_came_back(io):
    task = Registry.make(lambda t: None, prefix=PREFIX, name="vac", pvs={"pressure": "Press", "valve": "Valve"})
    guard = _Guard(fail_at=6)
    t = TaskContext(task.name, task.pvs, io, guard=guard)
    assert t.get("pressure") == 2.5e-6
    t.put(valve=0)
    assert guard.calls == ["get", "get", "put", "put"]
    with pytest.raises(PVDisconnectedError, match="the link dropped"):
        t.get("pressure")  # read, then refused: a restarted IOC's value never reaches the task
    assert guard.calls[-2:] == ["get", "get"]
    with pytest.raises(PVDisconnectedError):
        t.put(valve=1)  # refused before anything is written
    assert io.writes == [{PREFIX + "Valve": 0}]
