"""Typed PV declarations on the in-memory IO: what registration refuses, what a read returns, what a
write must be (and that a bad batch writes nothing)."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np
import pytest

from epics_bridge import PV, BasePVInterface, PVValueError
from epics_bridge.async_context import AsyncTaskContext
from epics_bridge.io import PVError
from epics_bridge.memory_io import MemoryIO
from epics_bridge.registry import Registry
from epics_bridge.status import TaskStatus
from epics_bridge.task import ConfigError
from epics_bridge.task_context import TaskContext, UnknownNameError
from epics_bridge.values import EnumValue

P = "TY:"


class Mode(IntEnum):
    IDLE = 0
    RAMP = 1
    HOLD = 3


PVS = {
    "pressure": PV("Press:RBV", float, tags=["inputs"], units="mbar", precision=3, alarm=(None, None, 1e-5, 1e-4)),
    "limit": PV("Limit:SP", float, tags=["inputs"], limits=(0.0, 1e-3)),
    "count": PV("Count", int, limits=(0, 10)),
    "valve": PV("Valve:SP", bool, choices=["Closed", "Open"]),
    "name": PV("Name", str),
    "state": PV("State", choices=["Off", "Standby", "On"], tags=["inputs"]),
    "index": PV("Index", int, choices=["a", "b"]),
    "mode": PV("Mode", Mode),
    "status": PV("Status", TaskStatus),
    "wave": PV("Wave", float, length=4, limits=(-1, 1)),
    "counts": PV("Counts", int, length=3),
    "plain": "Plain",
    "tagged": PV("Tagged", tags=["untyped"]),
}


def make(pvs=None, name="typed"):
    return Registry.make(lambda t: None, name=name, prefix=P, pvs=PVS if pvs is None else pvs)


@pytest.fixture
def io() -> MemoryIO:
    return MemoryIO(
        {
            P + "Press:RBV": 2.5e-6,
            P + "Limit:SP": 1e-5,
            P + "Count": 3,
            P + "Valve:SP": EnumValue(1, ["Closed", "Open"]),
            P + "Name": "pump",
            P + "State": EnumValue(2, ["Off", "Standby", "On"]),
            P + "Index": EnumValue(1, ["a", "b"]),
            P + "Mode": EnumValue(3, ["IDLE", "RAMP", "", "HOLD"]),
            P + "Status": EnumValue(3, ["Success", "Task Fail", "IO Failure", "Code Crash", "Skipped"]),
            P + "Wave": np.array([0.5, -0.5]),
            P + "Counts": np.array([1.0, 2.0, 3.0]),
            P + "Plain": 7,
            P + "Tagged": 8,
        }
    )


@pytest.fixture
def t(io) -> TaskContext:
    task = make()
    return TaskContext(task.name, task.pvs, io)


# -- the declaration ------------------------------------------------------------------------------
def test_pv_keeps_the_five_zero_zero_order_and_is_frozen_and_hashable():
    pv = PV("{main}Pos:RBV", float, ["EGU"], ["readback"])
    assert (pv.name, pv.cast_type, pv.fields, pv.tags) == ("{main}Pos:RBV", float, ("EGU",), ("readback",))
    assert hash(pv) == hash(PV("{main}Pos:RBV", float, ("EGU",), ("readback",)))
    with pytest.raises(AttributeError):
        pv.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        PV("X", float, None, None, "mbar")  # type: ignore[misc]  # the metadata is keyword-only


@pytest.mark.parametrize(
    "name, expected",
    [("Valve:SP", True), ("SetpointSP", True), ("Press:RBV", False), ("Sp", False)],
)
def test_writable_is_inferred_from_the_setpoint_suffix(name, expected):
    assert PV(name, float).output is expected
    assert PV(name, float, writable=not expected).output is (not expected)


@pytest.mark.parametrize(
    "pv, message",
    [
        (PV("X", "float"), "cast_type must be float, int, bool, str or an IntEnum class, not 'float'"),
        (PV("X", float, limits=(2, 1)), "limits (2, 1): low is above high"),
        (PV("X", float, limits=(0, float("inf"))), "limits must be (low, high), two finite numbers"),
        (PV("X", float, alarm=(1, 2, 3)), "alarm must be (lolo, low, high, hihi)"),
        (PV("X", float, alarm=(None, 5, 1, None)), "levels must rise from lolo to hihi"),
        (PV("X", choices=["a", 3]), "choices must all be strings, not 3"),
        (PV("X", choices=["a", "a"]), "repeat a label"),
        (PV("X", choices=[f"s{i}" for i in range(17)]), "17 given, 1 to 16 needed"),
        (PV("X", bool, choices=["a", "b", "c"]), "exactly 2"),
        (PV("X", float, choices=["a"]), "an enum PV reads as its label (str) or index (int), not float"),
        (PV("X", Mode, choices=["a"]), "member names"),
        (PV("X", float, length=0), "length must be an integer of at least 1, not 0"),
        (PV("X", str, length=4), "an array PV holds float or int, not str"),
        (PV("X", str, units="mbar"), "units apply to a float or int PV"),
        (PV("X", limits=(0, 1)), "give cast_type=float or int"),
        (PV("X", int, precision=2), "precision applies to a float PV"),
        (PV("X", int, limits=(0, 9.5)), "limits (0, 9.5) of an int PV must be whole numbers"),
        (PV("X", int, alarm=(None, 0.5, None, None)), "alarm (None, 0.5, None, None) of an int PV must be whole"),
        (PV("X", float, precision=-1), "precision must be an integer 0..17"),
        (PV("X", float, length=8, alarm=(None, None, 1, 2)), "alarm levels apply to a scalar PV"),
        (PV("X", float, fields=["egu"]), "'egu' is not an upper-case record field name"),
        (PV("X", float, tags=[""]), "tags: '' is not a non-empty string"),
        (PV("X", float, description="d" * 41), "at most 40 characters"),
        (PV("X", float, writable="yes"), "writable must be True, False or None"),
    ],
)
def test_a_bad_declaration_is_refused_at_registration_naming_task_and_field(pv, message):
    with pytest.raises(ConfigError) as caught:
        make({"bad": pv, "fine": PV("Fine", float)}, name="vacuum")
    text = str(caught.value)
    assert "task 'vacuum'" in text and "field 'bad'" in text and message in text
    assert "field 'fine'" not in text


def test_every_problem_of_an_interface_is_listed_at_once():
    with pytest.raises(ConfigError) as caught:
        make({"a": PV("A", float, limits=(2, 1)), "b": PV("{nokey}B", int), "c": PV("C", float, length=0)})
    text = str(caught.value)
    assert "field 'a'" in text and "field 'b' requires prefix key 'nokey'" in text and "field 'c'" in text


def test_names_resolve_like_plain_templates_and_declarations_keep_them():
    task = Registry.make(
        lambda t: None,
        name="names",
        prefix=P,
        pvs={"rel": PV("Rel", float), "other": PV("{sys}Temp", float), "plain": "Plain"},
        prefixes={"sys": "SYS:"},
    )
    assert task.pvs.rel == P + "Rel" and task.pvs.other == "SYS:Temp" and task.pvs.plain == P + "Plain"
    assert task.pvs.declarations["rel"] == PV(P + "Rel", float)
    assert "plain" not in task.pvs.declarations
    assert task.pvs.templates["other"] == "{sys}Temp" and task.pvs.templates["rel"] == "{main}Rel"


def test_a_base_pv_interface_subclass_may_declare_pv_defaults():
    @dataclass
    class MotorInterface(BasePVInterface):
        position: PV = PV("{main}Pos:RBV", float, tags=["readback"])
        velocity: str = "{main}Vel:SP"

    interface = MotorInterface(prefixes={"main": "MOT:"})
    assert interface.position == "MOT:Pos:RBV" and interface.velocity == "MOT:Vel:SP"
    assert interface.filter_pvs("readback") == {"position": PV("MOT:Pos:RBV", float, tags=["readback"])}
    assert interface.as_dict["position"] == "MOT:Pos:RBV"
    with pytest.raises(ValueError, match="field 'position': limits"):

        @dataclass
        class Broken(BasePVInterface):
            position: PV = PV("{main}Pos", float, limits=(1, 0))

        Broken(prefixes={"main": "MOT:"})


# -- reads ---------------------------------------------------------------------------------------
def test_reads_come_back_as_the_declared_types(t):
    assert t.get("pressure") == 2.5e-6 and type(t.get("pressure")) is float
    assert t.get("valve") is True
    assert t.get("name") == "pump"
    assert t.get("state") == "On"
    assert t.get("index") == 1 and type(t.get("index")) is int
    assert t.get("mode") is Mode.HOLD
    assert t.get("status") is TaskStatus.EXCEPTION
    wave = t.get("wave")
    assert isinstance(wave, np.ndarray) and wave.dtype == np.float64 and wave.tolist() == [0.5, -0.5]
    counts = t.get("counts")
    assert counts.dtype == np.int64 and counts.tolist() == [1, 2, 3]
    assert t.get("plain") == 7 and t.get(P + "Count") == 3  # untyped; typed by its full name too
    assert type(t.get(P + "Limit:SP")) is float


def test_an_integral_float_reads_as_int_and_a_fraction_fails_naming_pv_type_and_value(t, io):
    io.set(P + "Count", 4.0)
    assert t.get("count") == 4 and type(t.get("count")) is int
    io.set(P + "Count", 4.5)
    with pytest.raises(PVValueError) as caught:
        t.get("count")
    assert isinstance(caught.value, PVError)
    assert f"{P}Count: declared int, the IOC sent 4.5 (float)" in str(caught.value)


@pytest.mark.parametrize(
    "logical, value, declared",
    [
        ("pressure", "high", "float"),
        ("name", 3.5, "str"),
        ("valve", 2, "bool"),
        ("state", EnumValue(5, ["Off", "Standby", "On"]), "one of 'Off', 'Standby', 'On'"),
        ("mode", EnumValue(2, ["IDLE", "RAMP", "", "HOLD"]), "Mode"),
        ("wave", np.zeros(5), "float[4]"),
        ("wave", 1.0, "float[4]"),
    ],
)
def test_a_value_of_another_type_fails_the_read(t, io, logical, value, declared):
    io.set(getattr(t.pvs, logical), value)
    with pytest.raises(PVValueError, match=re.escape(f"declared {declared}, the IOC sent")):
        t.get(logical)


def test_one_bad_value_fails_the_whole_batch_read(t, io):
    io.set(P + "Name", 1)
    with pytest.raises(PVValueError) as caught:
        t.get(["pressure", "name"])
    assert list(caught.value.failures) == [P + "Name"]


def test_get_by_tag_reads_every_pv_with_the_tag_in_one_batch(t):
    assert t.get(tag="inputs") == {"pressure": 2.5e-6, "limit": 1e-5, "state": "On"}
    assert t.get(tag="untyped") == {"tagged": 8}


def test_an_unknown_tag_is_an_error_naming_the_tags(t):
    with pytest.raises(UnknownNameError, match=r"'input' is not one of its tags \(inputs, untyped\); did you mean"):
        t.get(tag="input")
    with pytest.raises(TypeError):
        t.get("pressure", tag="inputs")
    with pytest.raises(TypeError):
        t.get()


# -- writes --------------------------------------------------------------------------------------
def test_writes_are_converted_to_what_the_record_takes(t, io):
    t.put(limit=5e-4, count=10, valve=False, name="p2", state="Standby", index=0, mode=Mode.RAMP)
    t.put(status=TaskStatus.SKIPPED, wave=[0.25, 1], counts=np.array([1, 2]))
    t.put(limit=np.float64(1e-4), count=np.int32(2), valve=np.array([0.0, 2.0]).any())  # numpy scalars
    first, second, third = io.writes
    assert first == {
        P + "Limit:SP": 5e-4,
        P + "Count": 10,
        P + "Valve:SP": 0,
        P + "Name": "p2",
        P + "State": 1,
        P + "Index": 0,
        P + "Mode": 1,
    }
    assert second[P + "Status"] == 4 and type(second[P + "Status"]) is int
    assert second[P + "Wave"].tolist() == [0.25, 1.0] and second[P + "Counts"].dtype == np.int64
    assert third == {P + "Limit:SP": 1e-4, P + "Count": 2, P + "Valve:SP": 1}


def test_a_write_outside_limits_fails_the_batch_naming_pv_value_and_range_and_writes_nothing(t, io):
    with pytest.raises(PVValueError) as caught:
        t.put(limit=2e-3, valve=1, count=11)
    message = str(caught.value)
    assert f"{P}Limit:SP: 0.002 (float) must be within [0, 0.001] (limits)" in message
    assert f"{P}Count: 11 (int) must be an int within [0, 10] (limits)" not in message  # the type is right
    assert f"{P}Count: 11 (int) must be within [0, 10] (limits)" in message
    assert "nothing of the batch was written" in message
    assert set(caught.value.failures) == {P + "Limit:SP", P + "Count"}
    assert io.writes == []


@pytest.mark.parametrize(
    "logical, value, wanted",
    [
        ("limit", "1e-4", "must be a number (float) within [0, 0.001]"),
        ("limit", float("nan"), "must be within [0, 0.001]"),
        ("count", 2.0, "must be an int within [0, 10]"),
        ("count", True, "must be an int"),
        ("valve", 2, "must be a bool"),
        ("name", 5, "must be a str"),
        ("state", "Of", "must be one of 'Off', 'Standby', 'On' or its index (0, 1, 2)"),
        ("state", 3, "must be one of"),
        ("mode", 2, "must be a Mode member, one of 'IDLE', 'RAMP', 'HOLD' or its index (0, 1, 3)"),
        ("wave", [0.1] * 5, "must be a sequence of at most 4 float values within [-1, 1]"),
        ("wave", [2.0], "within [-1, 1]"),
        ("wave", 0.5, "must be a sequence"),
        ("counts", [1.5], "at most 3 int values"),
    ],
)
def test_each_kind_of_bad_write_says_what_the_value_must_be(t, io, logical, value, wanted):
    with pytest.raises(PVValueError, match="put refused for") as caught:
        t.put({logical: value, "pressure": 1.0})
    assert wanted in str(caught.value)
    assert io.writes == []


def test_untyped_pvs_are_written_as_given(t, io):
    t.put(plain="anything", tagged=[1, 2])
    assert io.writes == [{P + "Plain": "anything", P + "Tagged": [1, 2]}]


def test_fields_reads_the_declared_record_fields_in_one_batch():
    task = make({"pressure": PV("Press", float, ["EGU", "PREC"]), "plain": "Plain"})
    io = MemoryIO({P + "Press.EGU": "mbar", P + "Press.PREC": 3})
    t = TaskContext(task.name, task.pvs, io)
    assert t.fields("pressure") == {"EGU": "mbar", "PREC": 3}
    with pytest.raises(ConfigError, match="'plain' declares no fields"):
        t.fields("plain")


# -- async def tasks: the same types, awaited ----------------------------------------------------------
def test_an_async_task_reads_typed_by_name_and_tag_and_a_bad_batch_raises_at_the_call(io):
    task = make()
    t = AsyncTaskContext(task.name, task.pvs, io)

    async def body() -> Any:
        single, plain = await t.get("valve"), await t.get("plain")
        batch = await t.get(["mode", "count"])
        tagged = await t.get(tag="inputs")
        await t.put(state="Standby", wave=[0.5])
        with pytest.raises(PVValueError, match=r"TY:Limit:SP: 0.002 \(float\) must be within"):
            t.put(limit=2e-3, valve=False)  # refused before it is even awaited: nothing to await
        return single, plain, batch, tagged

    single, plain, batch, tagged = asyncio.run(body())
    assert single is True and plain == 7
    assert batch == {"mode": Mode.HOLD, "count": 3} and type(batch["count"]) is int
    assert tagged == {"pressure": 2.5e-6, "limit": 1e-5, "state": "On"}
    assert len(io.writes) == 1 and io.writes[0][P + "State"] == 1
