"""Which writes go through a kept operation (epics_bridge/kept/): numbers, and fields set to numbers."""

from __future__ import annotations

import numpy as np
import pytest
from p4p.client.thread import Context

from epics_bridge import kept
from epics_bridge.kept import KeptPuts, fields_of


@pytest.mark.parametrize(
    "value, fields",
    [
        (1, [("", 1)]),
        (True, [("", 1)]),
        (2.5, [("", 2.5)]),
        (np.int16(-3), [("", -3)]),
        (np.float32(0.5), [("", 0.5)]),
        ({"status.value.index": 2, "duration.value": 0.25}, [("status.value.index", 2), ("duration.value", 0.25)]),
    ],
)
def test_numbers_and_numeric_fields_are_kept(value, fields):
    got = fields_of(value)
    assert got == fields
    assert [type(v) for _, v in got] == [type(v) for _, v in fields]  # ints stay ints, floats floats


@pytest.mark.parametrize(
    "value", ["Busy", b"x", [1.0, 2.0], np.array([1, 2]), 1 + 2j, None, {"value": "text"}, {1: 2}, {"a": [1]}]
)
def test_anything_else_goes_through_p4p(value):
    assert fields_of(value) is None


@pytest.fixture
def writes():
    ctx = Context("pva", nt=False)
    kept_puts = KeptPuts(ctx)
    yield kept_puts
    kept_puts.close()
    ctx.close()


def test_a_pv_not_named_to_keep_gets_no_writer(writes):
    writes.keep("KEPT:PV")
    assert writes.writer("OTHER:PV") is None


def test_without_the_compiled_part_no_writer_is_made(monkeypatch):
    monkeypatch.setattr(kept, "_kept", None)
    ctx = Context("pva", nt=False)
    try:
        unavailable = KeptPuts(ctx)
        unavailable.keep("ANY:PV")
        assert unavailable.writer("ANY:PV") is None
        unavailable.close()
    finally:
        ctx.close()
