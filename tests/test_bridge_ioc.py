"""The ``bridge_ioc`` pytest plugin: a user's tasks on a real soft IOC in five lines.

The first tests run pytest as a user would, in a fresh folder holding only a task file, its
database and a test file, so the plugin must come from the installed package's entry point. The
others use the fixture in this process on tasks built for the test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from contextlib import ExitStack
from pathlib import Path
from typing import Dict

import pytest

from epics_bridge import TaskStatus
from epics_bridge.app import bridge
from epics_bridge.ioc.harness import BridgeIOC, Settings
from epics_bridge.ioc.softioc import Database, SoftIOC, db_dir
from epics_bridge.registry import Registry

VACUUM_DB = """\
record(ai, "$(P)Press:RBV") {
    field(VAL, "1e-7")
    field(PINI, "YES")
}
record(bo, "$(P)Valve:SP") {
    field(VAL, "1")
    field(PINI, "YES")
}
record(ai, "$(P)Count") {
}
"""
TASKS = """\
from epics_bridge import bridge, TaskStatus

@bridge.task(prefix="VAC:PUMP:01:", pvs={"pressure": "Press:RBV", "valve": "Valve:SP"}, db="vacuum.db")
def interlock(t):
    if t.get("pressure") > 1e-5:
        t.log.warning("pressure {:.1e} mbar: closing the valve", t.get("pressure"))
        t.put(valve=0)
        return TaskStatus.LOGIC_FAILURE

@bridge.task(prefix="VAC:PUMP:02:", pvs={"count": "Count"}, db="vacuum.db", period=0.2)
def counter(t):
    t.put(count=t.get("count") + 1)
"""
TESTS = """\
from epics_bridge import TaskStatus
from vacuum import counter, interlock

def test_interlock_closes_the_valve(bridge_ioc):
    ioc = bridge_ioc(interlock)
    assert ioc.cycle(interlock).status == TaskStatus.SUCCESS
    ioc.put(interlock, pressure=1e-4)
    result = ioc.cycle(interlock)
    assert result.status == TaskStatus.LOGIC_FAILURE
    assert "closing the valve" in result.log and 0 < result.duration < 5
    assert ioc.get(interlock, "valve") == 0
    assert ioc.get("VAC:PUMP:01:Valve:SP") == 0

def test_a_timer_task_by_name(bridge_ioc):
    ioc = bridge_ioc("counter", interlock)
    ioc.put({"VAC:PUMP:02:Count": 100})
    assert ioc.cycle(counter).status == TaskStatus.SUCCESS
    assert ioc.get(counter, "count") >= 101

def test_options_reach_the_fixture(request):
    assert request.config.getini("bridge_ioc_cycle_timeout") == "7"
    assert request.config.getoption("bridge_ioc_start_timeout") == "20"
"""


def run_pytest(folder: Path, *args: str, env: Dict[str, str] = {}) -> subprocess.CompletedProcess:  # noqa: B006
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("EPICS_PVA", "PYTEST_"))}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=folder,
        env={**clean, **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def fresh_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "vacuum.db").write_text(VACUUM_DB)
    (folder / "vacuum.py").write_text(TASKS)
    (folder / "test_vacuum.py").write_text(TESTS)
    (folder / "pytest.ini").write_text("[pytest]\nbridge_ioc_cycle_timeout = 7\n")
    return folder


def test_a_fresh_folder_passes_through_the_entry_point_in_parallel(tmp_path):
    """The plugin is found with no conftest; two xdist workers start IOCs for the same prefixes at
    once and each test reaches its own."""
    done = run_pytest(fresh_folder(tmp_path), "-n", "2", "--bridge-ioc-start-timeout", "20")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout
    assert not _iocs_of(tmp_path)


def _iocs_of(tmp_path: Path) -> list:
    """Soft IOC processes whose output lives under ``tmp_path`` (there must be none left)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "epics_bridge.ioc.softioc" in text and str(tmp_path) in text:
            found.append(cmdline.parent.name)
    return found


def test_a_failing_test_leaves_no_ioc_behind(tmp_path):
    folder = fresh_folder(tmp_path)
    (folder / "test_fails.py").write_text(
        "from vacuum import interlock\n\n"
        "def test_fails(bridge_ioc):\n    bridge_ioc(interlock)\n    assert False, 'on purpose'\n"
    )
    done = run_pytest(folder, "test_fails.py")
    assert done.returncode == 1 and "on purpose" in done.stdout
    assert not _iocs_of(tmp_path)


def test_an_external_ioc_is_used_as_it_is(tmp_path):
    """--bridge-ioc-external: no IOC is started; the tests use the one EPICS_PVA_* points at."""
    folder = fresh_folder(tmp_path)
    dbs = [
        Database(path, {"P": prefix})
        for prefix in ("VAC:PUMP:01:", "VAC:PUMP:02:")
        for path in (db_dir() / "bridge.db", folder / "vacuum.db")
    ]
    with SoftIOC(dbs, output=tmp_path / "external.log") as ioc:
        done = run_pytest(folder, "--bridge-ioc-external", "--bridge-ioc-start-timeout", "20", env=ioc.client_env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout


def test_a_missing_db_file_names_it(tmp_path):
    folder = fresh_folder(tmp_path)
    (folder / "vacuum.db").unlink()
    done = run_pytest(folder)
    assert done.returncode != 0
    assert "vacuum.db" in done.stdout and "does not exist" in done.stdout


# -- in this process ------------------------------------------------------------------------------
def make_task(tmp_path: Path, func, prefix: str, db: str = VACUUM_DB, **options):
    path = tmp_path / f"{func.__name__}.db"
    path.write_text(db)
    return Registry.make(
        func, prefix=prefix, pvs={"pressure": "Press:RBV", "valve": "Valve:SP"}, db=str(path), **options
    )


def test_a_cycle_reports_an_exception_with_its_traceback(bridge_ioc, tmp_path):
    def broken(t):
        t.log.info("about to divide")
        return 1 / 0

    task = make_task(tmp_path, broken, "BIOC:EXC:")
    ioc = bridge_ioc(task)
    result = ioc.cycle(task)
    assert result.status == TaskStatus.EXCEPTION
    assert "about to divide" in result.log and "ZeroDivisionError" in result.log
    assert ioc.get("BIOC:EXC:TaskStatus") == TaskStatus.EXCEPTION
    assert ioc.get(task, "trigger") == 0


def test_a_pv_the_ioc_does_not_serve_fails_naming_it(bridge_ioc, tmp_path):
    def reads_more(t):
        return None

    task = Registry.make(reads_more, prefix="BIOC:MISS:", pvs={"flow": "Flow:RBV"})
    with pytest.raises(pytest.fail.Exception, match=r"BIOC:MISS:Flow:RBV \(task 'reads_more', PV 'flow'\)"):
        bridge_ioc(task)


def test_an_ioc_that_cannot_start_quotes_its_own_output(bridge_ioc, tmp_path):
    def task_fn(t):
        return None

    task = make_task(tmp_path, task_fn, "BIOC:BAD:", db='record(ai, "$(P)X:$(UNSET)") {\n')
    with pytest.raises(pytest.fail.Exception) as failed:
        bridge_ioc(task)
    message = str(failed.value)
    assert "exited during start-up" in message
    assert "task_fn.db" in message and "macro UNSET is undefined" in message


def test_an_unknown_task_or_pv_name_is_refused(bridge_ioc, tmp_path):
    def known(t):
        return None

    task = make_task(tmp_path, known, "BIOC:NAME:")
    with pytest.raises(pytest.fail.Exception, match="'nobody' is not a registered task"):
        bridge_ioc("nobody")
    ioc = bridge_ioc(task)
    with pytest.raises(pytest.fail.Exception, match="has no PV named 'flow'"):
        ioc.put(task, flow=1)


def test_the_plugin_imports_nothing_heavy():
    code = textwrap.dedent("""
        import sys
        import epics_bridge.testing
        print(sorted(m for m in ("p4p", "numpy", "epics_bridge.engine.runner", "epics_bridge.ioc.harness")
                     if m in sys.modules))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


def test_a_stuck_task_fails_the_test_instead_of_ending_pytest(tmp_path, monkeypatch):
    """The watchdog's exit 3 would end the whole pytest run: the harness reports it as a failure."""
    release = threading.Event()

    def stuck(t):
        release.wait(30)

    task = make_task(tmp_path, stuck, "BIOC:STUCK:", stall_timeout=1.0, heartbeat_period=0.2, max_stuck_cycles=3)
    with pytest.raises(pytest.fail.Exception) as failed:
        with ExitStack() as stack:
            ioc = BridgeIOC.start([task], bridge, Settings(), stack, tmp_path, monkeypatch)
            stack.callback(release.set)  # first thing at the end: let the cycle finish
            ioc.cycle(task, timeout=2.5)
    assert "the watchdog would have ended the process (exit 3): task 'stuck': a cycle has been running" in str(
        failed.value
    )
    assert "no cycle finished within 2.5 s; watchdog: a cycle has been running" in str(failed.value.__context__)
