"""The in-memory IO keeps BridgeIO's contract: the same errors, batches and forgiving variants."""

from __future__ import annotations

import pytest
from p4p.client.thread import Disconnected, RemoteError

from epics_bridge.io import PVDisconnectedError, PVRejectedError, PVTimeoutError
from epics_bridge.memory_io import MemoryIO


def test_reads_and_writes_by_name_and_in_batches():
    io = MemoryIO({"A": 1, "B": 2.5})
    assert io.get("A") == 1
    assert io.get(["A", "B"]) == {"A": 1, "B": 2.5}
    io.put({"A": 3, "B": 4.0})
    assert io.values == {"A": 3, "B": 4.0} and io.writes == [{"A": 3, "B": 4.0}]


@pytest.mark.parametrize(
    "cause, error",
    [
        (None, PVTimeoutError),
        (Disconnected(), PVDisconnectedError),
        (RemoteError("no"), PVRejectedError),
    ],
)
def test_failures_raise_the_error_of_the_real_io_naming_each_pv(cause, error):
    io = MemoryIO({"A": 1, "B": 2})
    if cause is not None:
        io.fail["B"] = cause
    missing = "B" if cause is not None else "NOT:SERVED"
    with pytest.raises(error) as caught:
        io.get(["A", missing])
    assert list(caught.value.failures) == [missing]
    assert io.pvget(["A", missing]) == {"A": 1, missing: None}
    assert io.pvput({missing: 5}) is False
    assert io.unreachable(["A", missing]) and "A" not in io.unreachable(["A", missing])


def test_reject_refuses_writes_but_not_reads():
    io = MemoryIO({"RO": 7})
    io.reject["RO"] = RemoteError("read-only")
    with pytest.raises(PVRejectedError, match="read-only"):
        io.put({"RO": 8})
    assert io.get("RO") == 7


def test_a_monitor_gets_the_current_value_then_every_write_and_disconnects():
    io = MemoryIO({"A": 1})
    wakes = []
    monitor = io.monitor("A", lambda: wakes.append(1))
    io.put({"A": 2})
    io.set("A", 3)
    io.disconnect("A")
    updates = monitor.pop()
    assert updates[:3] == [1, 2, 3] and isinstance(updates[3], Disconnected)
    assert len(wakes) == 4 and monitor.pop() == []
    monitor.close()
    io.set("A", 4)
    assert monitor.pop() == []
