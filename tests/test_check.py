"""``python -m epics_bridge check PATH...``: every PV of every task read once, a table, an exit status."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Mapping

from conftest import VALUES
from helpers import write_tasks

STANDARD = ["Trigger", "Heartbeat", "Busy", "TaskStatus", "TaskDuration"]


def _check(args: List[object], env: Mapping[str, str] = {}) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "epics_bridge", "check", *map(str, args)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _rows(stdout: str) -> Dict[str, str]:
    """PV name -> its RESULT cell, from the printed table."""
    rows = {}
    for line in stdout.splitlines()[1:]:
        cells = re.split(r"\s{2,}", line.strip(), maxsplit=3)
        if len(cells) == 4:
            rows[cells[2]] = cells[3]
    return rows


def test_a_missing_pv_is_named_and_the_exit_status_is_1(prefix, tmp_path):
    tasks = write_tasks(
        tmp_path,
        f"""
        from epics_bridge import bridge

        @bridge.task(prefix="{prefix}", pvs={{"ghost": "No:Such:Record", "double": "{{v}}Double"}},
                     prefixes={{"v": "{VALUES}"}})
        def probe(t):
            pass
    """,
    )
    result = _check([tasks, "--timeout", "2"])
    assert result.returncode == 1, result.stdout + result.stderr
    rows = _rows(result.stdout)
    missing = f"{prefix}No:Such:Record"
    assert rows[missing].startswith("FAIL") and "timeout" in rows[missing]
    assert rows[f"{VALUES}Double"] == "ok"
    assert all(rows[prefix + pv] == "ok" for pv in STANDARD)
    assert result.stdout.splitlines()[-1] == f"1 of 7 PVs unreachable: {missing}"


def test_all_reachable_exits_0_and_lists_the_standard_five_per_task(make_ioc, tmp_path):
    ioc = make_ioc("CHK:A:", "CHK:B:")
    folder = tmp_path / "tasks"
    for name, task_prefix in (("first", "CHK:A:"), ("second", "CHK:B:")):
        write_tasks(
            folder,
            f"""
            from epics_bridge import bridge

            @bridge.task(prefix="{task_prefix}")
            def {name}(t):
                pass
        """,
            name=f"{name}.py",
        )
    result = _check([folder], env=ioc.client_env)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = _rows(result.stdout)
    expected = {f"{p}{pv}" for p in ("CHK:A:", "CHK:B:") for pv in STANDARD}
    assert set(rows) == expected and set(rows.values()) == {"ok"}
    table = result.stdout.splitlines()
    assert table[0].split() == ["TASK", "LOGICAL", "PV", "RESULT"]
    assert {line.split()[0] for line in table[1:-1]} == {"first", "second"}
    assert table[-1] == "all 10 PVs of 2 task(s) answered"


def test_bad_task_files_exit_2_before_any_pv_is_read(tmp_path):
    bad = write_tasks(
        tmp_path,
        """
        from epics_bridge import bridge

        @bridge.task(prefix="")
        def broken(t):
            pass
    """,
    )
    result = _check([bad, Path(tmp_path / "absent.py")])
    assert result.returncode == 2
    assert "field 'prefix'" in result.stderr and "absent.py: no such file" in result.stderr
    assert result.stdout == ""


def test_a_typed_pv_served_by_a_record_of_another_type_is_reported_and_exits_1(prefix, tmp_path):
    tasks = write_tasks(
        tmp_path,
        f"""
        from epics_bridge import PV, bridge

        @bridge.task(prefix="{prefix}", prefixes={{"v": "{VALUES}"}}, pvs={{
            "text_as_float": PV("{{v}}Text", float),
            "wave_as_scalar": PV("{{v}}Wave", float),
            "long_as_array": PV("{{v}}Long", int, length=4),
            "double": PV("{{v}}Double", float),
            "mode": PV("{{v}}Mode", choices=["Idle", "Ramp", "Hold"]),
            "on": PV("{{v}}Bool", bool),
        }})
        def typed(t):
            pass
    """,
    )
    result = _check([tasks])
    assert result.returncode == 1, result.stdout + result.stderr
    rows = _rows(result.stdout)
    assert rows[f"{VALUES}Text"] == "WRONG TYPE: declared float, the IOC serves a string"
    assert rows[f"{VALUES}Wave"] == "WRONG TYPE: declared float, the IOC serves an array"
    assert rows[f"{VALUES}Long"] == "WRONG TYPE: declared int[4], the IOC serves an integer"
    assert rows[f"{VALUES}Double"] == rows[f"{VALUES}Mode"] == rows[f"{VALUES}Bool"] == "ok"
    assert result.stdout.splitlines()[-1].startswith("3 of ")
