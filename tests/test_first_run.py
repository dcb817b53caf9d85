"""What a new user meets first: databases that load without spelling out their macros, an IOC that
says why it did not start, a wrong path explained, and a class-API daemon that names its own file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from epics_bridge import TaskStatus
from epics_bridge.app import bridge
from epics_bridge.base_pv_interface import BasePVInterface
from epics_bridge.daemon import BridgeDaemon
from epics_bridge.registry import Registry
from epics_bridge.service.loading import load
from epics_bridge.task import ConfigError

SYS_DB = (
    'record(ai, "$(P)Temp") {\n    field(VAL, "21.5")\n    field(PINI, "YES")\n}\n'
    'record(ai, "$(sys)Pressure") {\n    field(VAL, "2.5")\n    field(PINI, "YES")\n}\n'
)


def reads(t):
    return t.get("temp") > 0


def test_a_db_gets_the_prefix_and_every_prefixes_key_as_default_macros(tmp_path):
    (tmp_path / "plant.db").write_text(SYS_DB)
    task = Registry.make(
        reads,
        prefix="A:",
        prefixes={"sys": "S:", "unused": "U:"},
        pvs={"temp": "Temp"},
        db=[str(tmp_path / "plant.db"), (str(tmp_path / "plant.db"), {"P": "B:", "X": "1"})],
    )
    # only the macros the file uses: a file shared by tasks of different prefixes still loads once
    assert [macros for _, macros in task.db] == [{"P": "A:", "sys": "S:"}, {"P": "B:", "sys": "S:", "X": "1"}]


def test_the_ioc_loads_such_a_db_and_the_task_reads_it(bridge_ioc, tmp_path):
    (tmp_path / "plant.db").write_text(SYS_DB)
    task = Registry.make(
        reads,
        prefix="FR:A:",
        prefixes={"sys": "FR:S:"},
        pvs={"temp": "Temp", "pressure": "{sys}Pressure"},
        db=str(tmp_path / "plant.db"),
    )
    ioc = bridge_ioc(task)
    assert ioc.cycle(task).status == TaskStatus.SUCCESS
    assert ioc.get(task, "pressure") == 2.5


def test_an_ioc_that_dies_at_start_up_names_the_file_and_the_macro(tmp_path):
    """The embedded IOC of the launcher: exit 2 with the IOC's own lines, not just its status."""
    (tmp_path / "bad.db").write_text('record(ai, "$(P)X:$(UNIT)") {\n}\n')
    (tmp_path / "task.py").write_text(
        "from epics_bridge import bridge\n\n@bridge.task(prefix='FR:BAD:', db='bad.db')\ndef bad(t):\n    pass\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EPICS_PVA")}
    done = subprocess.run(
        [sys.executable, "-m", "epics_bridge", "task.py", "--ioc"],
        cwd=tmp_path,
        env=clean,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "exited during start-up" in done.stderr
    assert "bad.db" in done.stderr and "macro UNIT is undefined" in done.stderr


@pytest.mark.parametrize("name, hint", [("calc.db", "db= argument"), ("notes.txt", "")])
def test_a_path_that_is_not_python_says_so(tmp_path, name, hint):
    (tmp_path / name).write_text('record(ai, "X") {}\n')
    with pytest.raises(ConfigError) as refused:
        load([str(tmp_path / name)], bridge)
    message = str(refused.value)
    assert f"{name}: not a task file: give Python files (*.py)" in message and hint in message


class Plant(BasePVInterface):
    pass


class PlantDaemon(BridgeDaemon):
    def run_task(self, inputs=None) -> TaskStatus:
        return TaskStatus.DONE


def test_a_class_api_daemon_names_the_users_file():
    interface = Plant(prefixes={"main": "FR:CLS:"})
    source = PlantDaemon(interface=interface).as_task().source
    assert source.path == Path(__file__)
    assert source.line == PlantDaemon.run_task.__code__.co_firstlineno
