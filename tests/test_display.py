"""``epics-bridge display``: Phoebus screens generated from task files, checked against the task
files and the IOC databases they describe (every PV on a screen must be one the tasks have)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set
from xml.etree import ElementTree as ET

import pytest
from helpers import write_tasks

import epics_bridge
from epics_bridge.app import bridge
from epics_bridge.ioc.softioc import db_dir
from epics_bridge.records import parse_db
from epics_bridge.service.loading import load
from epics_bridge.task import Task

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "tasks"
MACRO = re.compile(r"\$\((\w+)\)")


def run(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "epics_bridge", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ},
    )


def screens(tmp_path: Path, *paths: object) -> Dict[str, ET.Element]:
    out = tmp_path / "opi"
    result = run("display", *paths, "-o", out)
    assert result.returncode == 0, result.stderr
    return {path.name: ET.parse(path).getroot() for path in sorted(out.iterdir())}


def widgets(root: ET.Element) -> List[ET.Element]:
    return list(root.iter("widget"))


def pv_names(root: ET.Element) -> Set[str]:
    """Every PV the screen connects to or writes, its protocol and the display's macros resolved."""
    block = root.find("macros")
    macros = {m.tag: m.text for m in ([] if block is None else block)}
    found = [e.text for e in root.iter() if e.tag in ("pv_name", "y_pv", "x_pv", "pv") and e.text]
    names = set()
    for name in found:
        assert name.startswith("pva://"), f"{name}: not written for PV Access"
        names.add(MACRO.sub(lambda m: macros[m.group(1)], name[len("pva://") :]))
    return names


def served(prefix: str) -> Set[str]:
    """The records bridge.db and bridge-logs.db define for one task prefix."""
    return {name for db in ("bridge.db", "bridge-logs.db") for name in parse_db(db_dir() / db, {"P": prefix})}


def by_name(root: ET.Element, name: str) -> ET.Element:
    found = [w for w in widgets(root) if w.findtext("name") == name]
    assert len(found) == 1, f"{name}: {len(found)} widgets"
    return found[0]


@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> Dict[str, ET.Element]:
    return screens(tmp_path_factory.mktemp("display"), EXAMPLES)


@pytest.fixture(scope="module")
def example_tasks() -> List[Task]:
    try:
        return load([str(EXAMPLES)], bridge)  # into the default registry, where the files register
    finally:
        epics_bridge.bridge.clear()  # this process only needs their settings


def test_an_overview_and_a_screen_per_task(examples):
    assert set(examples) == {"overview.bob", "motor.bob", "interlock.bob", "waveform_stats.bob", "cryostat.bob"}
    for root in examples.values():
        assert root.tag == "display" and root.get("version") == "2.0.0"
        assert int(root.findtext("width")) <= 1280


def test_every_pv_belongs_to_the_tasks(examples, example_tasks):
    allowed = set()
    for task in example_tasks:
        allowed |= set(task.pvs.as_dict.values())
        standard = served(task.prefix)
        allowed |= standard
        own = pv_names(examples[f"{task.name}.bob"])
        assert own <= set(task.pvs.as_dict.values()) | standard, own - allowed
        # every PV of the task is on its screen (Trigger only where it triggers a cycle), the log PVs too
        expected = set(task.pvs.as_dict.values()) - (set() if task.mode == "trigger" else {task.pvs.trigger})
        assert expected <= own, expected - own
        assert {task.prefix + pv for pv in ("InfoLog", "WarningLog", "ErrorLog", "LogLevel", "HeartbeatAge")} <= own
    assert pv_names(examples["overview.bob"]) <= allowed


def test_the_overview_row_of_each_task(examples, example_tasks):
    overview = examples["overview.bob"]
    names = pv_names(overview)
    for task in example_tasks:
        assert {
            task.prefix + "TaskStatus",
            task.prefix + "HeartbeatAge",
            task.prefix + "Heartbeat",
            task.prefix + "Busy",
            task.prefix + "TaskDuration",
            task.prefix + "InfoLog",
        } <= names
        age = by_name(overview, f"{task.name} heartbeat age")
        assert age.findtext("border_alarm_sensitive") == "true" and age.findtext("show_units") == "true"
        status = by_name(overview, f"{task.name} status")
        assert status.findtext("border_alarm_sensitive") == "true"
        colours = {exp.get("bool_exp"): exp.find("value/color").get("name") for exp in status.iter("exp")}
        # pvSev0 is the severity's ordinal in a version 2 display (PVUtil.getSeverity)
        assert colours == {"pvSev0==0": "OK", "pvSev0==1": "MINOR", "pvSev0==2": "MAJOR", "pvSev0>=3": "INVALID"}
        assert by_name(overview, f"{task.name} duration").findtext("show_units") == "true"
        link = by_name(overview, f"{task.name} open").find("actions/action")
        assert link.get("type") == "open_display" and link.findtext("file") == f"{task.name}.bob"
        assert link.findtext("macros/P") == task.prefix
        if task.mode == "trigger":
            run_action = by_name(overview, f"{task.name} run").find("actions/action")
            assert run_action.get("type") == "write_pv" and run_action.findtext("value") == "1"
            assert run_action.findtext("pv_name") == f"pva://{task.prefix}Trigger"
        else:  # the timer task: its period instead of a Run button
            assert by_name(overview, f"{task.name} mode").findtext("text") == "timer every 1 s"
            assert not [w for w in widgets(overview) if w.findtext("name") == f"{task.name} run"]


def _boxes(parent: ET.Element) -> List[tuple]:
    return [
        (w.findtext("name"), *(int(w.findtext(k)) for k in ("x", "y", "width", "height")))
        for w in parent.findall("widget")
    ]


def test_widgets_neither_overlap_nor_leave_their_group_or_the_1280_px(examples):
    for file, root in examples.items():
        parents = [root, *(w for w in root.iter("widget") if w.get("type") == "group")]
        for parent in parents:
            boxes = _boxes(parent)
            for i, (name, x, y, w, h) in enumerate(boxes):
                assert x >= 0 and y >= 0 and x + w <= int(parent.findtext("width")), (file, name)
                if parent is not root:
                    assert y + h <= int(parent.findtext("height")), (file, name)
                for other, ox, oy, ow, oh in boxes[i + 1 :]:
                    apart = x + w <= ox or ox + ow <= x or y + h <= oy or oy + oh <= y
                    assert apart, f"{file}: {name} overlaps {other}"
        assert int(root.findtext("height")) >= max(y + h for _, _, y, _, h in _boxes(root)), file


def test_a_task_screen(examples):
    screen = examples["interlock.bob"]
    assert screen.findtext("macros/P") == "VAC:PUMP:01:"
    labels = {w.findtext("text") for w in widgets(screen) if w.get("type") == "label"}
    assert {"pressure", "valve", "limit"} <= labels  # logical names as labels
    kinds = {w.findtext("pv_name"): w.get("type") for w in widgets(screen) if w.findtext("pv_name")}
    assert kinds["pva://$(P)Limit:SP"] == "textentry"  # ao: a setpoint
    assert kinds["pva://$(P)Valve:SP"] == "combo"  # bo: a choice
    assert kinds["pva://$(P)Press:RBV"] == "textupdate"  # ai: a readback
    assert kinds["pva://$(P)LogLevel"] == "combo"
    # a timer task: when it runs, and no Trigger (it does not watch it)
    assert by_name(screen, "interlock mode").findtext("text") == "timer every 1 s"
    assert "pva://$(P)Trigger" not in kinds and "VAC:PUMP:01:Trigger" not in labels
    run = by_name(examples["motor.bob"], "motor run").find("actions/action")
    assert run.findtext("pv_name") == "pva://$(P)Trigger" and run.findtext("value") == "1"
    for log in ("InfoLog", "WarningLog", "ErrorLog"):
        widget = by_name(screen, log)
        assert widget.get("type") == "textupdate" and int(widget.findtext("height")) >= 300
        assert widget.findtext("format") == "6" and widget.findtext("wrap_words") == "true"  # as text, lines wrapped
    back = by_name(screen, "back to overview").find("actions/action")
    assert back.get("type") == "open_display" and back.findtext("file") == "overview.bob"
    plot = by_name(examples["waveform_stats.bob"], "wave")
    assert plot.get("type") == "xyplot" and plot.findtext("traces/trace/y_pv") == "pva://$(P)Wave"


def test_typed_pvs_get_the_widgets_of_the_records_their_declarations_make(examples, tmp_path):
    motor = examples["motor.bob"]  # tasks/motor.py declares typed PVs and loads no database
    velocity = by_name(motor, "velocity_sp")
    assert velocity.get("type") == "spinner" and velocity.findtext("pv_name") == "pva://$(P)Vel:SP"
    assert (velocity.findtext("minimum"), velocity.findtext("maximum")) == ("0", "10")  # limits=(0.0, 10.0)
    assert velocity.findtext("limits_from_pv") == "false" and velocity.findtext("show_units") == "true"
    assert by_name(motor, "position_rbv").get("type") == "textupdate"  # Pos:RBV: an input (ai)
    write_tasks(
        tmp_path / "tasks",
        """\
        from epics_bridge import PV, bridge

        @bridge.task(prefix="DISP:TYPED:", pvs={
            "mode": PV("Mode", choices=["Off", "On"], writable=True),
            "trace": PV("Trace", float, length=64),
            "gain": PV("Gain:SP", float),
        })
        def typed(t):
            pass
        """,
    )
    screen = screens(tmp_path, tmp_path / "tasks")["typed.bob"]
    kinds = {name: by_name(screen, name).get("type") for name in ("mode", "trace", "gain")}
    assert kinds == {"mode": "combo", "trace": "xyplot", "gain": "textentry"}  # no limits: a plain entry


def test_many_generated_tasks_in_aligned_rows_and_the_same_bytes_each_time(tmp_path):
    for part in range(4):  # 40 tasks in 4 files
        source = "from epics_bridge import bridge\n" + "".join(
            f"\n@bridge.task(prefix='GEN:{i:03d}:', pvs={{'value': 'Value', 'setpoint': 'Set:SP'}}"
            f"{', period=2.5' if i % 2 else ''})\ndef gen_{i:03d}(t):\n    pass\n"
            for i in range(10 * part, 10 * part + 10)
        )
        write_tasks(tmp_path / "tasks", source, name=f"generated_{part}.py")
    first = screens(tmp_path / "a", tmp_path / "tasks")
    assert len(first) == 41
    overview = first["overview.bob"]
    rows = [int(by_name(overview, f"gen_{i:03d} status").findtext("y")) for i in range(40)]
    assert rows == sorted(rows) and len(set(rows)) == 40
    assert {int(by_name(overview, f"gen_{i:03d} status").findtext("x")) for i in range(40)} == {
        int(by_name(overview, "gen_000 status").findtext("x"))
    }
    assert int(overview.findtext("height")) > rows[-1]  # the display is as tall as its rows: Phoebus scrolls it
    assert by_name(overview, "gen_001 mode").findtext("text") == "timer every 2.5 s"
    assert by_name(overview, "subtitle").findtext("text") == f"40 task(s) from 4 files in {tmp_path / 'tasks'}"
    out_a, out_b = tmp_path / "a" / "opi", tmp_path / "b" / "opi"
    assert run("display", tmp_path / "tasks", "-o", out_b).returncode == 0
    assert all((out_a / name).read_bytes() == (out_b / name).read_bytes() for name in first)


def test_only_some_tasks(tmp_path):
    assert set(screens(tmp_path, EXAMPLES, "--only", "motor")) == {"overview.bob", "motor.bob"}


def test_bad_task_files_are_refused_like_the_launcher_does(tmp_path):
    write_tasks(
        tmp_path / "bad",
        """
        from epics_bridge import bridge

        @bridge.task(prefix="")
        def no_prefix(t):
            pass
    """,
        name="one.py",
    )
    write_tasks(tmp_path / "bad", "import no_such_module_here\n", name="two.py")
    out = tmp_path / "opi"
    result = run("display", tmp_path / "bad", "-o", out)
    assert result.returncode == 2
    assert "task 'no_prefix'" in result.stderr and "field 'prefix'" in result.stderr
    assert "two.py" in result.stderr and "no_such_module_here" in result.stderr
    assert not out.exists()


def test_an_unknown_task_name_is_refused(tmp_path):
    result = run("display", EXAMPLES, "--only", "no_such_task", "-o", tmp_path / "opi")
    assert result.returncode == 2 and "no_such_task" in result.stderr
    assert not (tmp_path / "opi").exists()


def test_a_task_named_overview_is_refused(tmp_path):
    write_tasks(
        tmp_path / "tasks",
        """
        from epics_bridge import bridge

        @bridge.task(prefix="OV:")
        def overview(t):
            pass
    """,
    )
    result = run("display", tmp_path / "tasks", "-o", tmp_path / "opi")
    assert result.returncode == 2 and "task 'overview'" in result.stderr
    assert not (tmp_path / "opi").exists()


def test_an_output_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "taken").write_text("")
    result = run("display", EXAMPLES, "-o", tmp_path / "taken")
    assert result.returncode == 2 and "is not a folder" in result.stderr
