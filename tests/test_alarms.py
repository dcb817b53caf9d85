"""``epics-bridge alarms``: a Phoebus alarm server configuration generated from task files, in the
shape Phoebus's own XmlModelWriter writes (so ``-import`` then ``-export`` gives the same file)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List
from xml.etree import ElementTree as ET

import pytest
from helpers import write_tasks

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "tasks"
#: A leaf's children in XmlModelWriter's order (delay, count, filter only when set: we set none).
LEAF = ["description", "enabled", "latching", "annunciating", "guidance", "display"]


def run(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "epics_bridge", "alarms", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ},
    )


def generate(tmp_path: Path, *args: object) -> ET.Element:
    out = tmp_path / "alarms.xml"
    result = run(*args, "-o", out)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes().startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n')
    return ET.parse(out).getroot()


def names(parent: ET.Element, tag: str) -> List[str]:
    return [child.get("name") for child in parent.findall(tag)]


@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> ET.Element:
    return generate(tmp_path_factory.mktemp("alarms"), EXAMPLES, "--display-dir", "opi")


def test_a_component_per_file_and_per_task(examples):
    assert examples.tag == "config" and examples.get("name") == "epics-bridge"
    assert [child.tag for child in examples] == ["component"] * 4
    assert names(examples, "component") == ["cryostat.py", "motor.py", "vacuum.py", "waveform_stats.py"]
    tasks = {file.get("name"): names(file, "component") for file in examples}
    assert tasks == {
        "cryostat.py": ["cryostat"],
        "motor.py": ["motor"],
        "vacuum.py": ["interlock"],
        "waveform_stats.py": ["waveform_stats"],
    }


@pytest.mark.parametrize(
    "task, prefix",
    [
        ("motor", "IOC:MOTOR:01:"),
        ("interlock", "VAC:PUMP:01:"),
        ("waveform_stats", "DIAG:BPM:01:"),
        ("cryostat", "CRYO:01:"),
    ],
)
def test_heartbeat_age_and_task_status_per_task(examples, task, prefix):
    component = examples.find(f"component/component[@name='{task}']")
    assert names(component, "pv")[:2] == [prefix + "HeartbeatAge", prefix + "TaskStatus"]
    age, status = component.findall("pv")[:2]
    for pv in (age, status):
        assert [child.tag for child in pv] == LEAF
        assert pv.findtext("enabled") == "true" and pv.findtext("annunciating") == "false"
        assert task in pv.findtext("description")
        assert [child.tag for child in pv.find("guidance")] == ["title", "details"]
        guidance = pv.findtext("guidance/details")
        assert "journalctl -u epics-bridge@tasks" in guidance and f"{task}.log" in guidance
        assert [child.tag for child in pv.find("display")] == ["title", "details"]
        assert pv.findtext("display/details") == f"opi/{task}.bob"
    assert age.findtext("latching") == "true" and "dead or hung" in age.findtext("description")
    assert status.findtext("latching") == "false" and "failed" in status.findtext("description")


def test_a_typed_pv_with_alarm_levels_joins_its_task(examples):
    motor = examples.find("component/component[@name='motor']")
    assert names(motor, "pv") == ["IOC:MOTOR:01:HeartbeatAge", "IOC:MOTOR:01:TaskStatus", "IOC:SYS:Temp:Mon"]
    temperature = motor.findall("pv")[2]
    assert [child.tag for child in temperature] == LEAF and temperature.findtext("latching") == "false"
    assert temperature.findtext("description") == "motor: Drive temperature outside its alarm levels"
    assert "is MINOR above 60 C, MAJOR above 80 C" in temperature.findtext("guidance/details")
    assert temperature.findtext("display/details") == "opi/motor.bob"
    assert [names(c, "pv") for c in examples.findall("component/component[@name='interlock']")] == [
        ["VAC:PUMP:01:HeartbeatAge", "VAC:PUMP:01:TaskStatus"]  # untyped: no levels known
    ]


def test_names_are_unique_hold_no_slash_and_the_order_is_stable(tmp_path):
    # two files of one name in two folders, and a config name of the user's choice
    for folder, prefix in (("a", "DUP:A:"), ("b", "DUP:B:")):
        write_tasks(
            tmp_path / folder,
            f"""
            from epics_bridge import bridge

            @bridge.task(prefix="{prefix}")
            def task_{folder}(t):
                pass

            @bridge.task(prefix="{prefix}2:", period=1)
            def other_{folder}(t):
                pass
        """,
            name="same.py",
        )
    root = generate(tmp_path, tmp_path / "b", tmp_path / "a", "--config", "site.tasks")
    assert root.get("name") == "site.tasks"
    assert names(root, "component") == ["same.py", "same.py (2)"]
    assert [names(c, "component") for c in root] == [["task_a", "other_a"], ["task_b", "other_b"]]
    every = [e.get("name") for e in root.iter() if e.get("name")]
    assert not [name for name in every if "/" in name]
    pvs = [pv.get("name") for pv in root.iter("pv")]
    assert len(pvs) == len(set(pvs)) == 8
    first = (tmp_path / "alarms.xml").read_bytes()
    generate(tmp_path, tmp_path / "b", tmp_path / "a", "--config", "site.tasks")
    assert (tmp_path / "alarms.xml").read_bytes() == first


def test_bad_task_files_are_refused_like_the_launcher_does(tmp_path):
    write_tasks(
        tmp_path / "bad",
        """
        from epics_bridge import bridge

        @bridge.task(prefix="X:", period=-1)
        def negative(t):
            pass
    """,
        name="one.py",
    )
    write_tasks(tmp_path / "bad", "syntax error here\n", name="two.py")
    result = run(tmp_path / "bad", "-o", tmp_path / "alarms.xml")
    assert result.returncode == 2
    assert "task 'negative'" in result.stderr and "field 'period'" in result.stderr
    assert "two.py:1: syntax error" in result.stderr
    assert not (tmp_path / "alarms.xml").exists()


@pytest.mark.parametrize("config", ["a/b", "two words", ""])
def test_bad_options_are_refused_before_anything_is_written(tmp_path, config):
    result = run(EXAMPLES, "-o", tmp_path / "missing" / "alarms.xml", "--config", config)
    assert result.returncode == 2
    assert "does not exist" in result.stderr
    assert f"--config {config!r}: it names the alarm server's Kafka topics" in result.stderr
    assert not (tmp_path / "missing").exists()
