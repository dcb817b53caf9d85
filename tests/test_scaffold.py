"""``epics-bridge new``: a new task with typed PVs and passing tests (no database), written into a fresh folder.

Each check runs what a user runs there: the command, then ``python -m pytest`` (the tests use the
bridge_ioc fixture, so they start their own soft IOC), ``--list`` and ``--ioc``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest
from helpers import Daemon, client_for, read, ready_trigger, wait_heartbeat

from epics_bridge.cli import new as scaffold
from epics_bridge.ioc.softioc import free_port

FILES = ["tasks/pump.py", "tests/test_pump.py", "pytest.ini"]


def run(folder: Path, *args: str, module: str = "epics_bridge") -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("EPICS_PVA", "PYTEST_"))}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=folder,
        env=clean,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def contents(folder: Path) -> Dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_new_task_passes_its_tests_lists_and_refuses_to_overwrite(tmp_path):
    done = run(tmp_path, "new", "pump", "--prefix", "X:")
    assert done.returncode == 0, done.stderr
    assert sorted(contents(tmp_path)) == sorted(FILES)
    assert "period" not in (tmp_path / "tasks/pump.py").read_text().split("def pump")[0].split("@bridge.task")[1]

    tests = run(tmp_path, "-p", "no:cacheprovider", module="pytest")
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "2 passed" in tests.stdout

    listed = run(tmp_path, "tasks/", "--list")
    assert listed.returncode == 0, listed.stderr
    assert "pump  [trigger]  prefix X:" in listed.stdout and "X:Input" in listed.stdout

    before = contents(tmp_path)
    again = run(tmp_path, "new", "pump", "--prefix", "Y:")
    assert again.returncode == 2
    assert "tasks/pump.py" in again.stderr and "nothing was written" in again.stderr
    assert contents(tmp_path) == before


def test_a_timer_task_in_a_project_with_its_own_pytest_configuration(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.pytest.ini_options]\npythonpath = ["."]\n')
    done = run(tmp_path, "new", "fan", "--prefix", "FAN:01:", "--period", "0.5")
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "pytest.ini").exists()
    assert "period=0.5," in (tmp_path / "tasks/fan.py").read_text()
    tests = run(tmp_path, "-p", "no:cacheprovider", module="pytest")
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "2 passed" in tests.stdout
    assert "fan  [timer every 0.5 s]" in run(tmp_path, "tasks/", "--list").stdout


def test_an_async_task_awaits_its_verbs_and_passes_the_same_tests(tmp_path):
    done = run(tmp_path, "new", "pump", "--prefix", "X:", "--async")
    assert done.returncode == 0, done.stderr
    source = (tmp_path / "tasks/pump.py").read_text()
    assert "async def pump(t):" in source
    assert 'value = await t.get("input")' in source and "await t.put(output=2 * value)" in source
    assert (tmp_path / "tests/test_pump.py").read_text() == scaffold.files("pump", "X:", None)["tests/test_pump.py"]
    tests = run(tmp_path, "-p", "no:cacheprovider", module="pytest")  # bridge_ioc drives it as any task
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "2 passed" in tests.stdout


def test_bad_names_and_prefixes_are_refused_like_the_decorator_does(tmp_path, capsys):
    cases = {
        ("9pump", "--prefix", "X:"): "must be a Python identifier",
        ("_pump", "--prefix", "X:"): "not starting with '_'",
        ("pump", "--prefix", ""): "field 'prefix' must be a non-empty PV prefix",
        ("pump", "--prefix", "X Y:"): "has characters not allowed in a PV name",
        ("pump", "--prefix", "X:", "--period", "-1"): "field 'period' must be a positive number",
    }
    for args, message in cases.items():
        with pytest.raises(SystemExit) as exited:
            scaffold.main(list(args), folder=tmp_path)
        assert exited.value.code == 2
        assert message in capsys.readouterr().err, args
    assert not any(tmp_path.iterdir())


def test_the_new_task_runs_on_the_embedded_ioc(tmp_path):
    assert run(tmp_path, "new", "pump", "--prefix", "X:").returncode == 0
    server = {
        "EPICS_PVAS_SERVER_PORT": str(free_port()),
        "EPICS_PVAS_BROADCAST_PORT": str(free_port(socket.SOCK_DGRAM)),
    }
    client_env = {
        "EPICS_PVA_ADDR_LIST": "127.0.0.1",
        "EPICS_PVA_AUTO_ADDR_LIST": "NO",
        "EPICS_PVA_SERVER_PORT": server["EPICS_PVAS_SERVER_PORT"],
        "EPICS_PVA_BROADCAST_PORT": server["EPICS_PVAS_BROADCAST_PORT"],
    }
    daemon = Daemon(["tasks/", "--ioc", "--no-log-files"], server, tmp_path)
    ctx = client_for(client_env)
    try:
        wait_heartbeat(ctx, "X:", timeout=30)
        ctx.put("X:Input", 4.0)
        assert ready_trigger(ctx, "X:").cycle() == 0
        assert read(ctx, "X:Output") == 8.0
    finally:
        ctx.close()
        daemon.signal()
        try:
            assert daemon.wait_exit(20) == 0
        finally:
            daemon.kill()
            daemon.assert_nothing_left()
