"""BasePVInterface: epics-bridge 1.0.1's dataclass, plus checks that catch a bad template before anything connects."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import List

import pytest

from epics_bridge.base_pv_interface import BasePVInterface, DuplicatePVWarning

QUICK_START_PREFIXES = {"main": "IOC:MOTOR:01:", "sys": "IOC:SYS:"}
STANDARD = {
    "trigger": "Trigger",
    "heartbeat": "Heartbeat",
    "busy": "Busy",
    "task_status": "TaskStatus",
    "task_duration": "TaskDuration",
}


@dataclass
class MotorInterface(BasePVInterface):
    """Verbatim from the Quick Start of epics-bridge 1.0.1's README."""

    position_rbv: str = "{main}Pos:RBV"
    velocity_sp: str = "{main}Vel:SP"
    temperature: str = "{sys}Temp:Mon"


def _problem_lines(exc: pytest.ExceptionInfo) -> List[str]:
    return str(exc.value).splitlines()


def _line_naming(lines: List[str], *words: str) -> str:
    """The one problem line that mentions every word (quoted, as the message quotes names)."""
    found = [line for line in lines if all(f"'{w}'" in line for w in words)]
    assert len(found) == 1, f"expected one line naming {words} in:\n" + "\n".join(lines)
    return found[0]


def test_the_1_0_1_quick_start_motor_interface_resolves():
    iface = MotorInterface(prefixes=QUICK_START_PREFIXES)
    assert iface.position_rbv == "IOC:MOTOR:01:Pos:RBV"
    assert iface.velocity_sp == "IOC:MOTOR:01:Vel:SP"
    assert iface.temperature == "IOC:SYS:Temp:Mon"
    for attr, record in STANDARD.items():
        assert getattr(iface, attr) == "IOC:MOTOR:01:" + record
    assert iface.prefixes == QUICK_START_PREFIXES


def test_as_dict_and_pv_to_attr():
    iface = MotorInterface(prefixes=QUICK_START_PREFIXES)
    expected = {attr: "IOC:MOTOR:01:" + rec for attr, rec in STANDARD.items()}
    expected.update(
        position_rbv="IOC:MOTOR:01:Pos:RBV", velocity_sp="IOC:MOTOR:01:Vel:SP", temperature="IOC:SYS:Temp:Mon"
    )
    assert iface.as_dict == expected
    assert iface.pv_to_attr == {pv: attr for attr, pv in expected.items()}


def test_a_clean_interface_warns_nothing():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MotorInterface(prefixes=QUICK_START_PREFIXES)


def test_one_error_names_every_missing_key_and_its_field():
    with pytest.raises(ValueError) as exc:
        MotorInterface(prefixes={})
    lines = _problem_lines(exc)
    for attr in [*STANDARD, "position_rbv", "velocity_sp"]:
        _line_naming(lines, attr, "main")
    _line_naming(lines, "temperature", "sys")


def test_only_the_fields_missing_a_key_are_reported():
    with pytest.raises(ValueError) as exc:
        MotorInterface(prefixes={"main": "IOC:MOTOR:01:"})
    problems = [line for line in _problem_lines(exc) if "field '" in line]
    assert len(problems) == 1
    _line_naming(problems, "temperature", "sys")


@pytest.mark.parametrize("template", ["{main", "main}Pos", "{main!z}Pos", "{main:>{width}}Pos"])
def test_malformed_template_names_the_field(template):
    @dataclass
    class Broken(BasePVInterface):
        position: str = template

    with pytest.raises(ValueError, match=r"field 'position'") as exc:
        Broken(prefixes={"main": "A:"})
    assert not re.search(r"field '(trigger|busy|heartbeat|task_status|task_duration)'", str(exc.value))


@pytest.mark.parametrize(
    "template, prefixes",
    [
        ("{main}Pos RBV", {"main": "A:"}),
        ('{main}Pos"', {"main": "A:"}),
        ("{main}Pos'", {"main": "A:"}),
        ("", {"main": "A:"}),
        ("{dev}", {"main": "A:", "dev": ""}),
        ("{dev}Pos", {"main": "A:", "dev": "A B:"}),
    ],
)
def test_illegal_pv_name_names_the_field(template, prefixes):
    @dataclass
    class Bad(BasePVInterface):
        position: str = template

    with pytest.raises(ValueError) as exc:
        Bad(prefixes=prefixes)
    _line_naming(_problem_lines(exc), "position")


def test_two_fields_on_one_pv_warn():
    @dataclass
    class Twice(BasePVInterface):
        busy_copy: str = "{main}Busy"

    with pytest.warns(DuplicatePVWarning, match=r"'busy'.*'busy_copy'.*A:Busy"):
        iface = Twice(prefixes={"main": "A:"})
    assert iface.busy_copy == iface.busy == "A:Busy"


def test_non_string_fields_are_settings_not_pvs():
    @dataclass
    class WithSettings(MotorInterface):
        retries: int = 3
        gain: float = 0.5
        enabled: bool = True
        limits: tuple = (0, 10)

    iface = WithSettings(prefixes=QUICK_START_PREFIXES)
    assert (iface.retries, iface.gain, iface.enabled, iface.limits) == (3, 0.5, True, (0, 10))
    assert set(iface.as_dict) == set(MotorInterface(prefixes=QUICK_START_PREFIXES).as_dict)
