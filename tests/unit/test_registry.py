"""``@bridge.task`` without the network: what it registers, how PV names resolve, its defaults and its
refusals, the task context's name translation, and the return-value -> TaskStatus mapping.

These are unit tests of pure logic (no IOC); the same behaviour on a real IOC is in test_cycle.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List

import pytest

from epics_bridge import BasePVInterface, ConfigError, Registry, Task, TaskContext, TaskStatus
from epics_bridge.status import status_of


class FakeContext:
    """Stands in for ``t`` when a task function is unit-tested on its own."""

    def __init__(self, values: Dict[str, Any]) -> None:
        self.values = values
        self.written: Dict[str, Any] = {}

    def get(self, name: str) -> Any:
        return self.values[name]

    def put(self, values: Any = None, **logical_values: Any) -> None:
        self.written.update(values or {}, **logical_values)


class RecordingIO:
    """Records what TaskContext asks of its BridgeIO, to check the logical -> PV name translation."""

    def __init__(self, values: Dict[str, Any]) -> None:
        self.values = values
        self.calls: List[tuple] = []

    def get(self, names: Any, timeout: Any = None) -> Any:
        self.calls.append(("get", names))
        return self.values[names] if isinstance(names, str) else {n: self.values[n] for n in names}

    def put(self, values: Dict[str, Any], timeout: Any = None) -> None:
        self.calls.append(("put", dict(values)))


def motor(t):
    """The README's example, as a user would write it."""
    velocity = t.get("velocity_sp")
    t.put(position_rbv=velocity * 0.5)
    return TaskStatus.SUCCESS


def test_decorator_returns_the_function_unchanged_and_it_stays_callable():
    reg = Registry()
    decorated = reg.task(prefix="M:", pvs={"position_rbv": "Pos:RBV", "velocity_sp": "Vel:SP"})(motor)
    assert decorated is motor
    fake = FakeContext({"velocity_sp": 4.0})
    assert decorated(fake) is TaskStatus.SUCCESS
    assert fake.written == {"position_rbv": 2.0}
    assert [t.func for t in reg.tasks] == [motor]


def test_mapping_templates_relative_to_prefix_and_extra_prefix_keys():
    reg = Registry()
    templates = {"position_rbv": "Pos:RBV", "temperature": "{sys}Temp:Mon", "explicit": "{main}Vel:SP"}
    reg.task(prefix="IOC:MOTOR:01:", prefixes={"sys": "IOC:SYS:"}, pvs=templates)(motor)
    pvs = reg.tasks[0].pvs
    assert pvs.position_rbv == "IOC:MOTOR:01:Pos:RBV"
    assert pvs.temperature == "IOC:SYS:Temp:Mon"
    assert pvs.explicit == "IOC:MOTOR:01:Vel:SP"
    assert pvs.trigger == "IOC:MOTOR:01:Trigger"
    assert pvs.task_status == "IOC:MOTOR:01:TaskStatus"


@dataclass
class MotorInterface(BasePVInterface):
    position_rbv: str = "{main}Pos:RBV"
    temperature: str = "{sys}Temp:Mon"


def test_pvs_as_a_base_pv_interface_subclass():
    reg = Registry()
    reg.task(prefix="IOC:MOTOR:02:", pvs=MotorInterface, prefixes={"sys": "IOC:SYS:"})(motor)
    pvs = reg.tasks[0].pvs
    assert isinstance(pvs, MotorInterface)
    assert (pvs.position_rbv, pvs.temperature, pvs.busy) == (
        "IOC:MOTOR:02:Pos:RBV",
        "IOC:SYS:Temp:Mon",
        "IOC:MOTOR:02:Busy",
    )
    assert reg.tasks[0].standard_handshake


def settings(task: Task) -> tuple:
    return task.heartbeat_period, task.stall_timeout, task.max_stuck_cycles, task.timeout


def test_defaults_are_those_of_the_design():
    reg = Registry()
    reg.task(prefix="A:")(motor)
    task = reg.tasks[0]
    assert (task.name, task.period, task.mode) == ("motor", None, "trigger")
    assert settings(task) == (1.0, 10.0, 15, 5.0)


def test_options_are_kept():
    reg = Registry()
    reg.task(
        prefix="A:", name="renamed", period=0.5, heartbeat_period=0.25, stall_timeout=3, max_stuck_cycles=4, timeout=2
    )(motor)
    task = reg.tasks[0]
    assert (task.name, task.period, task.mode) == ("renamed", 0.5, "timer every 0.5 s")
    assert settings(task) == (0.25, 3.0, 4, 2.0)


def test_context_translates_logical_names_and_batches():
    reg = Registry()
    reg.task(prefix="P:", pvs={"a": "A", "b": "B"})(motor)
    task = reg.tasks[0]
    io = RecordingIO({"P:A": 1, "P:B": 2, "X:Y": 3})
    t = TaskContext(task.name, task.pvs, io)
    assert (t.name, t.pvs.a, t.pv("b"), t.pv("X:Y")) == ("motor", "P:A", "P:B", "X:Y")
    assert t.get("a") == 1 and t.get("X:Y") == 3
    io.calls.clear()
    assert t.get(["a", "X:Y"]) == {"a": 1, "X:Y": 3}
    t.put({"a": 10}, b=20)
    assert io.calls == [("get", ["P:A", "X:Y"]), ("put", {"P:A": 10, "P:B": 20})]


@pytest.mark.parametrize(
    "result, status",
    [
        (TaskStatus.SKIPPED, TaskStatus.SKIPPED),
        (TaskStatus.DONE, TaskStatus.SUCCESS),
        (TaskStatus.ERROR, TaskStatus.LOGIC_FAILURE),
        (None, TaskStatus.SUCCESS),
        (True, TaskStatus.SUCCESS),  # not int 1 (LOGIC_FAILURE): bools are checked first
        (False, TaskStatus.LOGIC_FAILURE),
        (2, TaskStatus.IO_FAILURE),
    ],
)
def test_status_of_maps_results(result, status):
    assert status_of(result) is status


@pytest.mark.parametrize("result", ["ok", 3.5, 7, [], object()])
def test_status_of_refuses_anything_else(result):
    with pytest.raises(TypeError, match="must return a TaskStatus, True/False or None"):
        status_of(result)


def test_status_values_are_fixed():
    assert [(s.name, int(s)) for s in TaskStatus] == [
        ("SUCCESS", 0),
        ("LOGIC_FAILURE", 1),
        ("IO_FAILURE", 2),
        ("EXCEPTION", 3),
        ("SKIPPED", 4),
    ]


def no_argument():
    pass


def two_arguments(a, b):
    pass


@pytest.mark.parametrize(
    "func, options, message",
    [
        (motor, {"prefix": "A:", "pvs": {"t": "{sys}T"}}, "field 't' requires prefix key 'sys'"),
        (motor, {"prefix": ""}, "field 'prefix'"),
        (motor, {"prefix": "A:", "pvs": {"v": "Valve SP"}}, "field 'v': PV name 'A:Valve SP' has characters"),
        (motor, {"prefix": "A:", "pvs": {"v": 'Valve"SP'}}, "field 'v'"),
        (motor, {"prefix": "A:", "pvs": {"v": "Valve'SP"}}, "field 'v'"),
        (motor, {"prefix": "A:", "pvs": {"not-an-identifier": "X"}}, "must be a Python identifier"),
        (no_argument, {"prefix": "A:"}, "field 'function': a task function takes exactly one argument"),
        (two_arguments, {"prefix": "A:"}, "field 'function'"),
        (42, {"prefix": "A:"}, "decorates a function, not int 42"),
        (motor, {"prefix": "A:", "perod": 1}, "unknown argument(s) to bridge.task: perod"),
        (motor, {"prefix": "A:", "name": "has space"}, "field 'name'"),
        (motor, {"prefix": "A:", "period": 0}, "field 'period'"),
        (motor, {"prefix": "A:", "period": -1}, "field 'period'"),
        (motor, {"prefix": "A:", "heartbeat_period": 0}, "field 'heartbeat_period'"),
        (motor, {"prefix": "A:", "stall_timeout": -1}, "field 'stall_timeout'"),
        (motor, {"prefix": "A:", "timeout": math.nan}, "field 'timeout'"),
        (motor, {"prefix": "A:", "timeout": math.inf}, "field 'timeout'"),
        (motor, {"prefix": "A:", "max_stuck_cycles": 0}, "field 'max_stuck_cycles'"),
        (motor, {"prefix": "A:", "max_stuck_cycles": 2.5}, "field 'max_stuck_cycles' must be a positive integer"),
        (motor, {"prefix": "A:", "max_stuck_cycles": True}, "field 'max_stuck_cycles'"),
    ],
)
def test_bad_configuration_is_refused_with_where_and_what(func, options, message):
    reg = Registry()
    with pytest.raises(ConfigError) as info:
        reg.task(**options)(func)
    text = str(info.value)
    assert message in text
    assert __file__ in text  # the file that registered it (for a function: where it is defined)
    assert reg.tasks == []


def test_missing_template_keys_are_all_named_at_once():
    with pytest.raises(ConfigError) as info:
        Registry().task(prefix="A:", pvs={"t": "{sys}T", "u": "{rack}U"})(motor)
    assert "'sys'" in str(info.value) and "'rack'" in str(info.value)


def test_two_tasks_may_share_neither_name_nor_prefix():
    reg = Registry()
    reg.task(prefix="A:")(motor)
    with pytest.raises(ConfigError, match="field 'prefix' 'A:' is already used by task 'motor'"):
        reg.task(prefix="A:", name="other")(motor)
    with pytest.raises(ConfigError, match="field 'name' 'motor' is already used by task 'motor'"):
        reg.task(prefix="B:")(motor)
    assert [t.name for t in reg.tasks] == ["motor"]


def test_select_names_unknown_tasks():
    reg = Registry()
    reg.task(prefix="A:")(motor)
    assert [t.name for t in reg.select(["motor"])] == ["motor"]
    with pytest.raises(ConfigError, match="--only: no task named 'nope' \\(tasks: motor\\)"):
        reg.select(["nope"])
