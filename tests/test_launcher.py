"""``python -m epics_bridge``: what it loads, ``--list``/``--only``, and every configuration it refuses.

Each run is a real subprocess. Its PVA client points at a port where nothing listens, so a run that
passes shows that loading, listing and refusing need no IOC; a refusal must exit 2 with a message
naming the file, task and field, and start nothing (no log folder, nothing on stdout).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Sequence

import pytest

from epics_bridge.ioc.softioc import free_port

#: Client settings that reach no IOC.
NO_IOC = {
    "EPICS_PVA_ADDR_LIST": "127.0.0.1",
    "EPICS_PVA_AUTO_ADDR_LIST": "NO",
    "EPICS_PVA_SERVER_PORT": str(free_port()),
    "EPICS_PVA_BROADCAST_PORT": str(free_port(socket.SOCK_DGRAM)),
}


def launch(cwd: Path, *args: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "epics_bridge", *map(str, args)],
        cwd=cwd,
        env={**os.environ, **NO_IOC},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def write(folder: Path, files: Dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        (folder / name).write_text(source)
    return folder


def task(options: str, name: str = "motor", params: str = "t") -> str:
    """A task file whose decorator is on line 2 (the line errors about the task point at)."""
    return f"from epics_bridge import bridge\n@bridge.task({options})\ndef {name}({params}):\n    pass\n"


GOOD = task('prefix="LCH:GOOD:"', name="good")


# -- loading and listing -----------------------------------------------------------------------------
LISTED = {
    "a.py": """\
from epics_bridge import bridge

@bridge.task(prefix="LCH:A:", pvs={"position": "Pos:RBV", "temperature": "{sys}Temp:Mon"},
             prefixes={"sys": "LCH:SYS:"})
def alpha(t):
    pass

@bridge.task(prefix="LCH:B:", name="beta_timer", period=0.5)
def beta(t):
    pass
""",
    "c.py": task('prefix="LCH:C:"', name="gamma"),
    "_private.py": "raise RuntimeError('a file starting with _ is not a task file')\n",
    "notes.txt": "not python",
}


def test_list_prints_tasks_modes_and_pvs_without_an_ioc(tmp_path):
    folder = write(tmp_path / "tasks", LISTED)
    result = launch(tmp_path, folder, "--list")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"alpha  [trigger]  prefix LCH:A:  ({folder / 'a.py'}:3)" in out
    assert "beta_timer  [timer every 0.5 s]  prefix LCH:B:" in out
    assert "gamma  [trigger]  prefix LCH:C:" in out
    for logical, pv in [
        ("position", "LCH:A:Pos:RBV"),
        ("temperature", "LCH:SYS:Temp:Mon"),
        ("trigger", "LCH:A:Trigger"),
        ("task_duration", "LCH:B:TaskDuration"),
    ]:
        assert any(line.split() == [logical, pv] for line in out.splitlines()), f"{logical} {pv} not listed"
    assert not (tmp_path / "logs").exists()


def listed(out: str) -> List[str]:
    """The task names of ``--list`` output (PV lines are indented)."""
    return [line.split()[0] for line in out.splitlines() if not line.startswith(" ")]


def test_only_selects_tasks(tmp_path):
    folder = write(tmp_path / "tasks", LISTED)
    result = launch(tmp_path, folder, "--list", "--only", "gamma", "alpha")
    assert result.returncode == 0, result.stderr
    assert listed(result.stdout) == ["gamma", "alpha"]


def test_a_single_file_is_loaded(tmp_path):
    folder = write(tmp_path / "tasks", LISTED)
    result = launch(tmp_path, folder / "c.py", "--list")
    assert result.returncode == 0, result.stderr
    assert listed(result.stdout) == ["gamma"]


# -- refusals ----------------------------------------------------------------------------------------
NUMERIC = [
    (option, value)
    for value in (0, -1)
    for option in ("period", "heartbeat_period", "stall_timeout", "timeout", "max_stuck_cycles")
]
#: Where a message about the task in :func:`task` must point. ``{d}`` is the task folder.
AT_TASK = ("{d}/bad.py:2", "task 'motor'")
NOT_CALLABLE = 'from epics_bridge import bridge\nmotor = 42\nbridge.task(prefix="LCH:A:")(motor)\n'
DUPLICATE_PREFIX = task('prefix="LCH:A:"', name="first") + task('prefix="LCH:A:"', name="second")
#: A function ``other`` registered under the name ``motor``.
RENAMED = task('prefix="LCH:B:", name="motor"', name="other")


def bad(source: str, *fragments: str) -> tuple:
    """A refusal of the folder holding bad.py = ``source``: (files, extra arguments, message fragments)."""
    return {"bad.py": source}, [], list(fragments)


REFUSALS: Dict[str, tuple] = {
    "missing template key": bad(
        task('prefix="LCH:A:", pvs={"temp": "{sys}Temp:Mon"}'), *AT_TASK, "field 'temp'", "prefix key 'sys'"
    ),
    "empty prefix": bad(task('prefix=""'), *AT_TASK, "field 'prefix'"),
    "PV name with a space": bad(
        task('prefix="LCH:A:", pvs={"valve": "Valve SP"}'), *AT_TASK, "field 'valve'", "'LCH:A:Valve SP'"
    ),
    "PV name with quotes": bad(
        task('prefix="LCH:A:", pvs={"single": "V\'SP", "double": \'V"SP\'}'),
        *AT_TASK,
        "field 'single'",
        "field 'double'",
    ),
    "syntax error": bad("from epics_bridge import bridge\n\ndef motor(t)\n    pass\n", "{d}/bad.py:3", "syntax error"),
    "import error": bad(
        "from epics_bridge import bridge\nimport no_such_module_for_bridge_tests\n",
        "{d}/bad.py:2",
        "ModuleNotFoundError",
        "no_such_module_for_bridge_tests",
    ),
    "exception while importing": bad(
        "x = 1\nraise RuntimeError('half-written file')\n", "{d}/bad.py:2", "RuntimeError: half-written file"
    ),
    "two tasks on one prefix": bad(
        DUPLICATE_PREFIX,
        "{d}/bad.py:6",
        "task 'second'",
        "field 'prefix' 'LCH:A:' is already used by task 'first' ({d}/bad.py:2)",
    ),
    "two tasks with one name": bad(
        task('prefix="LCH:A:"') + RENAMED,
        "{d}/bad.py:6",
        "field 'name' 'motor' is already used by task 'motor' ({d}/bad.py:2)",
    ),
    "two tasks with one name in two files": (
        {"a.py": task('prefix="LCH:A:"'), "b.py": RENAMED},
        [],
        ["{d}/b.py:2", "field 'name' 'motor' is already used by task 'motor' ({d}/a.py:2)"],
    ),
    "function without arguments": bad(
        task('prefix="LCH:A:"', params=""), *AT_TASK, "field 'function'", "exactly one argument"
    ),
    "function with two arguments": bad(
        task('prefix="LCH:A:"', params="t, extra"), *AT_TASK, "field 'function'", "exactly one argument"
    ),
    "not callable": bad(NOT_CALLABLE, "{d}/bad.py:3", "decorates a function, not int 42"),
    **{
        f"{option}={value}": bad(
            task(f'prefix="LCH:A:", {option}={value}'), *AT_TASK, f"field '{option}' must be a positive", f"not {value}"
        )
        for option, value in NUMERIC
    },
    "sys.exit at import": bad(
        "import sys\nsys.exit(0)\n", "{d}/bad.py:2", "called sys.exit(0) while being imported", "only define tasks"
    ),
    "KeyboardInterrupt at import": bad(
        "x = 1\nraise KeyboardInterrupt\n", "{d}/bad.py:2", "raised KeyboardInterrupt while being imported"
    ),
    "CancelledError at import": bad(
        "import asyncio\nraise asyncio.CancelledError()\n", "{d}/bad.py:2", "raised CancelledError while being imported"
    ),
    "unknown keyword": bad(task('prefix="LCH:A:", perod=1.0'), *AT_TASK, "unknown argument(s) to bridge.task: perod"),
    "folder without tasks": ({"helpers.py": "LIMIT = 1e-5\n"}, [], ["{d}: no tasks found"]),
    "folder without task files": ({"_common.py": "LIMIT = 1e-5\n"}, [], ["{d}: no task files"]),
    "nonexistent path": ({}, ["{d}/missing.py"], ["{d}/missing.py: no such file or folder"]),
    "unwritable log dir": (
        {"good.py": GOOD},
        ["--log-dir", "{d}/good.py/logs"],
        ["--log-dir '{d}/good.py/logs' is not writable"],
    ),
    "unknown --only": ({"good.py": GOOD}, ["--only", "nope"], ["--only: no task named 'nope' (tasks: good)"]),
}


def assert_refused(result: subprocess.CompletedProcess, fragments: Sequence[str], cwd: Path) -> None:
    assert result.returncode == 2, f"exit {result.returncode}; stderr:\n{result.stderr}"
    assert "nothing started" in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, f"{fragment!r} not in:\n{result.stderr}"
    assert result.stdout == ""
    assert not (cwd / "logs").exists(), "logging was configured: something started"


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refused_before_anything_starts(tmp_path, case):
    files, args, fragments = REFUSALS[case]
    folder = write(tmp_path / "tasks", files)
    result = launch(tmp_path, folder, *[a.format(d=folder) for a in args])
    assert_refused(result, [f.format(d=folder) for f in fragments], tmp_path)
    assert "Traceback" not in result.stderr, "one line per problem; the traceback only with --log-level DEBUG"


def test_a_folder_or_a_symlink_loop_named_like_a_task_file_is_refused(tmp_path):
    folder = write(tmp_path / "tasks", {"good.py": GOOD})
    (folder / "x.py").mkdir()
    (folder / "loop1.py").symlink_to(folder / "loop2.py")
    (folder / "loop2.py").symlink_to(folder / "loop1.py")
    result = launch(tmp_path, folder)
    assert_refused(
        result,
        [
            f"{folder}/x.py: a folder named like a task file",
            f"{folder}/loop1.py: cannot read: a symbolic link loop",
            f"{folder}/loop2.py: cannot read: a symbolic link loop",
        ],
        tmp_path,
    )
    assert "Traceback" not in result.stderr


def test_the_traceback_of_an_import_comes_with_debug(tmp_path):
    folder = write(tmp_path / "tasks", {"bad.py": "x = 1\nraise KeyboardInterrupt\n"})
    result = launch(tmp_path, folder, "--log-level", "DEBUG")
    assert_refused(result, [f"{folder}/bad.py:2: raised KeyboardInterrupt", "Traceback", "KeyboardInterrupt"], tmp_path)


def test_bridge_run_at_module_level_is_ignored_while_the_launcher_imports(tmp_path):
    folder = write(tmp_path / "tasks", {"script.py": GOOD + "bridge.run()\n"})
    result = launch(tmp_path, folder, "--list")
    assert result.returncode == 0, result.stderr
    assert listed(result.stdout) == ["good"], "the launcher runs the task once"
    assert result.stderr == "", "ignored quietly (said only at DEBUG)"
    debug = launch(tmp_path, folder, "--list", "--log-level", "DEBUG")
    assert debug.returncode == 0 and "bridge.run() while the launcher imports the task files: ignored" in debug.stderr


def test_every_error_in_every_file_is_reported_in_one_run(tmp_path):
    names = ["missing template key", "syntax error", "import error", "not callable", "timeout=0"]
    files: Dict[str, str] = {f"bad_{i}.py": REFUSALS[name][0]["bad.py"] for i, name in enumerate(names)}
    folder = write(tmp_path / "tasks", {**files, "good.py": GOOD})
    result = launch(tmp_path, folder)
    expected: List[str] = []
    for i, name in enumerate(names):
        expected += [f.format(d=folder).replace("bad.py", f"bad_{i}.py") for f in REFUSALS[name][2]]
    assert_refused(result, expected, tmp_path)


# -- option values, checked while the command line is parsed -----------------------------------------
BAD_OPTIONS = {
    "stop-grace -1": (["--stop-grace", "-1"], "argument --stop-grace: '-1': seconds must be 0 or more"),
    "stop-grace nan": (["--stop-grace", "nan"], "argument --stop-grace: 'nan' is not a finite number"),
    "stop-grace inf": (["--stop-grace", "inf"], "argument --stop-grace: 'inf' is not a finite number"),
    "log-level": (["--log-level", "FOO"], "argument --log-level: 'FOO': choose one of DEBUG, INFO, WARNING, ERROR"),
    "p4p-log-level": (["--p4p-log-level", "loud"], "argument --p4p-log-level: 'loud': choose one of DEBUG"),
    "log-rotation": (["--log-rotation", "sometimes"], "argument --log-rotation: 'sometimes': Cannot parse rotation"),
    "log-retention": (["--log-retention", "forever"], "argument --log-retention: 'forever': Cannot parse retention"),
    "metrics-port 70000": (["--metrics-port", "70000"], "argument --metrics-port: '70000': a port is 0..65535"),
    "metrics-port -1": (["--metrics-port", "-1"], "argument --metrics-port: '-1': a port is 0..65535"),
    "metrics-port http": (["--metrics-port", "http"], "argument --metrics-port: 'http' is not a port number"),
}


@pytest.mark.parametrize("case", list(BAD_OPTIONS))
def test_a_bad_option_value_is_refused_while_parsing_also_with_list(tmp_path, case):
    args, message = BAD_OPTIONS[case]
    folder = write(tmp_path / "tasks", {"good.py": GOOD})
    for listing in (["--list"], []):
        result = launch(tmp_path, folder, *listing, *args)
        assert result.returncode == 2, f"{listing} exit {result.returncode}; stderr:\n{result.stderr}"
        assert message in result.stderr
        assert result.stdout == "" and not (tmp_path / "logs").exists()


def test_every_documented_form_of_an_option_is_accepted(tmp_path):
    folder = write(tmp_path / "tasks", {"good.py": GOOD})
    for args in (
        ["--stop-grace", "0", "--log-level", "debug", "--p4p-log-level", "ERROR", "--metrics-port", "0"],
        ["--log-rotation", "1 day", "--log-retention", "14 days"],
        ["--log-rotation", "00:00", "--log-retention", "3"],
    ):
        result = launch(tmp_path, folder, "--list", *args)
        assert result.returncode == 0, f"{args}: {result.stderr}"
        assert listed(result.stdout) == ["good"]


@pytest.mark.parametrize("timeout", ["0", "-1", "nan"])
def test_check_refuses_a_timeout_that_is_not_positive(tmp_path, timeout):
    folder = write(tmp_path / "tasks", {"good.py": GOOD})
    result = launch(tmp_path, "check", folder, "--timeout", timeout)
    assert result.returncode == 2 and f"argument --timeout: '{timeout}'" in result.stderr
    assert result.stdout == ""
