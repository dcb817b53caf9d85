"""BridgeIO on the session IOC: epics-bridge 1.0.1's pvget/pvput and the strict get/put with their PVError family."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Iterator, List

import numpy as np
import pytest
from conftest import ROOT, VALUES
from helpers import client_for, read, wait_for
from loguru import logger

from epics_bridge.io import BridgeIO, PVDisconnectedError, PVError, PVRejectedError, PVTimeoutError
from epics_bridge.ioc.softioc import Database
from epics_bridge.values import EnumValue

MISSING = VALUES + "NoSuchRecord"
#: Slack on top of an operation's own timeout for a loaded machine: a bound, not a speed test.
MARGIN = 3.0


@pytest.fixture
def log_lines() -> Iterator[List[str]]:
    lines: List[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="WARNING", format="{level} {message}")
    yield lines
    logger.remove(sink)


def timed(call, *args, **kwargs):
    start = time.monotonic()
    result = call(*args, **kwargs)
    return result, time.monotonic() - start


# -- as in epics-bridge 1.0.1 -----------------------------------------------------------------------------
def test_pvget_double_waveform_is_numpy_array(io, client):
    client.put(VALUES + "Wave", np.array([0.5, 1.5, 2.5]))
    value = io.pvget(VALUES + "Wave")
    assert isinstance(value, np.ndarray) and value.dtype == np.float64
    assert value.tolist() == [0.5, 1.5, 2.5]


def test_pvget_mbbo_is_its_index(io, client):
    client.put(VALUES + "Mode", 1)
    value = io.pvget(VALUES + "Mode")
    assert value == 1 and isinstance(value, int) and value.label == "Ramp"


def test_pvget_batch_gives_missing_pv_none_within_its_timeout(io, log_lines):
    names = [VALUES + "Double", MISSING, VALUES + "Long"]
    values, elapsed = timed(io.pvget, names, timeout=1.0)
    assert values == {VALUES + "Double": 1.5, MISSING: None, VALUES + "Long": 42}
    assert list(values) == names
    assert elapsed < 1.0 + MARGIN
    assert any(MISSING in line for line in log_lines)


def test_pvput_is_acknowledged_and_on_the_ioc(io, client):
    assert io.pvput({VALUES + "DoubleOut": 3.25, VALUES + "LongOut": -7}) is True
    assert read(client, VALUES + "DoubleOut") == 3.25
    assert read(client, VALUES + "LongOut") == -7


def test_pvput_array(io, client):
    wave = np.arange(1000, dtype=np.float64) / 8
    assert io.pvput({VALUES + "Wave": wave}) is True
    np.testing.assert_array_equal(read(client, VALUES + "Wave"), wave)


def test_pvput_to_missing_pv_fails_cleanly_and_logs_why(io, log_lines):
    result, elapsed = timed(io.pvput, {MISSING: 1.0}, timeout=1.0)
    assert result is False
    assert elapsed < 1.0 + MARGIN
    errors = [line for line in log_lines if MISSING in line]
    assert errors and errors[0].startswith("ERROR") and "timeout" in errors[0]


def test_pvput_string_choice_into_mbbo(io, client):
    assert io.pvput({VALUES + "Mode": "Hold"}) is True
    assert read(client, VALUES + "Mode") == 2


@pytest.mark.parametrize(
    "record, given, expected",
    [
        ("BoolOut", True, 1),
        ("LongOut", np.int64(-5), -5),
        ("Mode", 1.0, 1),
        ("Mode", np.uint8(2), 2),
        ("TextOut", 5, "5"),
        ("DoubleOut", "2.5", 2.5),
        ("Wave", [1.0, 2.0], [1.0, 2.0]),
        ("CharWave", "a long string", "a long string"),
    ],
)
def test_put_fits_the_value_to_the_pv_type(io, record, given, expected):
    io.put({VALUES + record: given})
    value = io.get(VALUES + record)
    assert (value.tolist() if isinstance(value, np.ndarray) else value) == expected


# -- strict ----------------------------------------------------------------------------------------
def test_get_list_is_dict_keyed_by_names(io, client):
    client.put(VALUES + "TextOut", "abc")
    names = [VALUES + "TextOut", VALUES + "Int64", VALUES + "Bool"]
    values = io.get(names)
    assert list(values) == names
    assert values[VALUES + "TextOut"] == "abc" and values[VALUES + "Int64"] == 1234567890123
    assert isinstance(values[VALUES + "Bool"], EnumValue) and values[VALUES + "Bool"] == 1


def test_get_missing_pv_raises_timeout_naming_it(io):
    with pytest.raises(PVTimeoutError) as exc:
        io.get([VALUES + "Double", MISSING], timeout=0.5)
    assert exc.value.pv == MISSING
    assert set(exc.value.failures) == {MISSING}
    assert MISSING in str(exc.value) and "timeout" in str(exc.value)
    assert isinstance(exc.value, TimeoutError)


def test_put_rejected_value_names_pv_and_cause(io, client):
    before = read(client, VALUES + "Double")
    with pytest.raises(PVRejectedError) as exc:
        io.put({VALUES + "Double": "abc"})
    assert exc.value.pv == VALUES + "Double"
    assert VALUES + "Double" in str(exc.value) and "abc" in str(exc.value)
    assert not isinstance(exc.value, TimeoutError)
    assert read(client, VALUES + "Double") == before


def test_put_unknown_choice_is_rejected(io):
    with pytest.raises(PVRejectedError, match="Nope") as exc:
        io.put({VALUES + "Mode": "Nope"})
    assert exc.value.pv == VALUES + "Mode"


def test_put_string_choice_into_mbbo(io, client):
    io.put({VALUES + "Mode": "Ramp"})
    assert read(client, VALUES + "Mode") == 1


def test_batch_put_reports_only_the_missing_pv(io, client):
    with pytest.raises(PVTimeoutError) as exc:
        io.put({VALUES + "DoubleOut": 6.5, MISSING: 1, VALUES + "LongOut": 11}, timeout=1.0)
    assert set(exc.value.failures) == {MISSING}
    assert VALUES + "DoubleOut" not in str(exc.value) and VALUES + "LongOut" not in str(exc.value)
    assert read(client, VALUES + "DoubleOut") == 6.5
    assert read(client, VALUES + "LongOut") == 11


def test_batch_is_one_parallel_round(io):
    """Five unreachable PVs cost one timeout, not five (one after another would take >= 5 s)."""
    missing = [f"{MISSING}{n}" for n in range(5)]
    start = time.monotonic()
    with pytest.raises(PVTimeoutError) as exc:
        io.get(missing, timeout=1.0)
    assert time.monotonic() - start < 5.0
    assert set(exc.value.failures) == set(missing)


def test_error_family_is_also_the_builtin_kind():
    failures = {"A:PV": TimeoutError("x")}
    assert issubclass(PVTimeoutError, PVError) and issubclass(PVTimeoutError, TimeoutError)
    assert issubclass(PVDisconnectedError, PVError) and issubclass(PVDisconnectedError, ConnectionError)
    assert issubclass(PVRejectedError, PVError)
    assert not issubclass(PVRejectedError, (TimeoutError, ConnectionError))
    err = PVDisconnectedError("get", failures)
    assert err.pv == "A:PV" and "A:PV" in str(err)


def unread_bytes(port: int) -> int:
    """Bytes waiting in the receive queues of the established TCP connections served on ``port``."""
    total = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "01":
            total += int(fields[4].split(":")[1], 16)
    return total


def test_get_in_flight_when_ioc_dies_fails_within_its_timeout(make_ioc):
    """p4p keeps a get whose connection dropped waiting for a reconnect, so this ends as a timeout.

    A PVDisconnectedError is never produced here (p4p does not report the drop to the operation);
    what matters is that the caller gets a PVError naming the PV, in time, not a hang.
    """
    if not Path("/proc/net/tcp").exists():
        pytest.skip("needs /proc/net/tcp to see the request arrive at the frozen IOC")
    soft_ioc = make_ioc(extra=[Database(ROOT / "tests" / "db" / "values.db", {"P": "DIE:"})])
    bridge_io = BridgeIO(client_for(soft_ioc.client_env))
    outcome = {}

    def get() -> None:
        start = time.monotonic()
        try:
            bridge_io.get("DIE:Double", timeout=2.0)
        except PVError as exc:
            outcome["error"] = exc
        outcome["elapsed"] = time.monotonic() - start

    try:
        assert bridge_io.get("DIE:Double") == 1.5  # connected
        soft_ioc.freeze()
        worker = threading.Thread(target=get)
        worker.start()
        wait_for(lambda: unread_bytes(soft_ioc.server_port), timeout=5, what="the get to reach the IOC")
        soft_ioc.kill()
        worker.join(timeout=2.0 + MARGIN + 5)
        assert not worker.is_alive()
        assert isinstance(outcome.get("error"), (PVTimeoutError, PVDisconnectedError))
        assert outcome["error"].pv == "DIE:Double" and "DIE:Double" in str(outcome["error"])
        assert outcome["elapsed"] < 2.0 + MARGIN
    finally:
        bridge_io.close()
