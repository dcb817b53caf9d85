"""``--shard I/N``: N instances split one tasks folder, every task served by exactly one of them.

The share is a pure function of the task name (pure-logic tests below), the option is refused before
anything starts when it cannot be honoured, and two real services on one soft IOC serve a folder
between them, each cycle acknowledged, each task's cycles run by its owner only.
"""

from __future__ import annotations

import os
import random
import signal
import string
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Dict, List

import pytest
from helpers import HeartbeatRecorder, client_for, daemon, ready_trigger, wait_for

from epics_bridge import TaskStatus
from epics_bridge.ioc.softioc import free_port
from epics_bridge.service.shard import Shard, host_ordinal, owner, parse

NAMES = ["".join(random.Random(seed).choices(string.ascii_lowercase + "_", k=12)) for seed in range(2000)]


# -- the share ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("count", [1, 2, 3, 4, 5])
def test_shards_are_disjoint_and_complete(count):
    parts = [[n for n in NAMES if Shard(index, count).owns(n)] for index in range(count)]
    assert sorted(sum(parts, [])) == sorted(NAMES)  # complete, and no name in two shares
    assert all(len(part) > len(NAMES) / count * 0.8 for part in parts), [len(p) for p in parts]


def test_share_does_not_depend_on_order():
    shuffled = list(NAMES)
    random.Random(1).shuffle(shuffled)
    assert {n: owner(n, 4) for n in shuffled} == {n: owner(n, 4) for n in NAMES}


def test_share_is_the_same_in_every_process():
    """Python's hash() is salted per process; the share must not be."""
    code = "import sys; from epics_bridge.service.shard import owner; print([owner(n, 5) for n in sys.argv[1:]])"
    names = NAMES[:200]
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code, *names],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        for seed in ("1", "2")
    }
    assert outputs == {f"{[owner(n, 5) for n in names]}\n"}


def test_growing_n_moves_tasks_only_to_the_new_instance():
    moved = [n for n in NAMES if owner(n, 4) != owner(n, 5)]
    assert all(owner(n, 5) == 4 for n in moved)
    assert len(moved) < len(NAMES) / 5 * 1.2


# -- parsing -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, host, expected",
    [
        ("0/1", None, Shard(0, 1)),
        (" 2 / 3 ", None, Shard(2, 3)),
        ("auto/4", "bridge-3", Shard(3, 4)),
        ("auto/20", "epics-bridge-vac-12", Shard(12, 20)),
        ("auto/2", "bridge-0\n", Shard(0, 2)),
    ],
)
def test_parse(text, host, expected):
    assert parse(text, host) == expected


@pytest.mark.parametrize(
    "text, host, message",
    [
        ("2/2", None, "I must be 0..1"),
        ("0/0", None, "N must be at least 1"),
        ("1", None, "is not I/N"),
        ("-1/2", None, "is not I/N"),
        ("a/2", None, "is not I/N"),
        ("auto/3", "bridge", "does not end in -<ordinal>"),
        ("auto/3", "bridge-3", "gives index 3, not below 3"),
        ("auto/3", "bridge-3.lab", "does not end in -<ordinal>"),
    ],
)
def test_parse_refuses(text, host, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        parse(text, host)


def test_auto_reads_hostname_from_the_environment(monkeypatch):
    monkeypatch.setenv("HOSTNAME", "bridge-1")
    assert parse("auto/2") == Shard(1, 2)
    assert host_ordinal("bridge-7") == 7 and host_ordinal("bridge") is None


# -- the command line --------------------------------------------------------------------------------
TASK = """\
import os
from pathlib import Path
from epics_bridge import bridge

@bridge.task(prefix="SHD:{name}:")
def {name}(t):
    with open(Path(os.environ["SHARD_OUT"]) / f"{{t.name}}.{{os.environ['SHARD_INSTANCE']}}", "a") as out:
        out.write("cycle\\n")
"""
#: Six tasks in three files; at N=2 four fall to instance 0 and two to instance 1.
FILES = {"vacuum.py": ["pump", "valve"], "diag.py": ["gauge", "motor"], "cooling.py": ["chiller", "shutter"]}
TASKS = [name for names in FILES.values() for name in names]


def tasks_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for file, names in FILES.items():
        sources = [TASK.format(name=name) for name in names]
        (folder / file).write_text(sources[0] + "".join(s.split("\n", 3)[3] for s in sources[1:]))
    return folder


def run_cli(cwd: Path, *args: str, env: Dict[str, str] = {}) -> subprocess.CompletedProcess:  # noqa: B006
    return subprocess.run(
        [sys.executable, "-m", "epics_bridge", *args],
        cwd=cwd,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def listed(output: str) -> List[str]:
    return [line.split()[0] for line in output.splitlines()[1:] if line and not line.startswith(" ")]


def test_list_shows_each_share_and_the_shares_cover_the_folder(tmp_path):
    folder = tasks_folder(tmp_path / "tasks")
    seen = []
    for index in range(3):
        result = run_cli(tmp_path, str(folder), "--list", "--shard", f"{index}/3")
        assert result.returncode == 0, result.stderr
        share = listed(result.stdout)
        assert result.stdout.startswith(f"shard {index}/3: {len(share)} of 6 task(s)")
        assert sorted(share) == sorted(n for n in TASKS if owner(n, 3) == index)
        seen += share
    assert sorted(seen) == sorted(TASKS)


@pytest.mark.parametrize(
    "shard, host, message",
    [
        ("2/2", "bridge-0", "'2/2': I must be 0..1"),
        ("two", "bridge-0", "is not I/N or auto/N"),
        ("auto/2", "controls", "the host name 'controls' does not end in -<ordinal>"),
        ("auto/2", "bridge-2", "the host name 'bridge-2' gives index 2, not below 2"),
    ],
)
def test_bad_shard_is_refused_before_anything_starts(tmp_path, shard, host, message):
    folder = tasks_folder(tmp_path / "tasks")
    result = run_cli(tmp_path, str(folder), "--shard", shard, env={"HOSTNAME": host})
    assert result.returncode == 2, result.stderr
    assert "argument --shard" in result.stderr and message in result.stderr, result.stderr
    assert result.stdout == "" and not (tmp_path / "logs").exists()


# -- two real instances ------------------------------------------------------------------------------
def test_two_instances_serve_every_task_exactly_once(make_ioc, tmp_path):
    ioc = make_ioc(*[f"SHD:{name}:" for name in TASKS])
    folder = tasks_folder(tmp_path / "tasks")
    out = tmp_path / "cycles"
    out.mkdir()
    ctx = client_for(ioc.client_env)
    env = {**ioc.client_env, "SHARD_OUT": str(out)}
    with (
        daemon([folder, "--shard", "0/2"], {**env, "SHARD_INSTANCE": "0"}, tmp_path / "i0") as first,
        daemon([folder, "--shard", "1/2"], {**env, "SHARD_INSTANCE": "1"}, tmp_path / "i1") as second,
    ):
        pulses = HeartbeatRecorder(ctx, [f"SHD:{name}:" for name in TASKS])
        try:
            for name in TASKS:  # both instances serve
                pulses.wait_pulses(f"SHD:{name}:", count=1, timeout=20)
        finally:
            pulses.close()
        for name in TASKS:
            trigger = ready_trigger(ctx, f"SHD:{name}:")
            try:
                for _ in range(2):
                    assert trigger.cycle() == TaskStatus.SUCCESS, name
            finally:
                trigger.close()
        for instance in (first, second):
            assert instance.proc.poll() is None, instance.stderr[-3000:]
    ctx.close()
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.{owner(n, 2)}" for n in TASKS)
    assert all((out / f"{n}.{owner(n, 2)}").read_text() == "cycle\ncycle\n" for n in TASKS)
    for index, instance in enumerate((first, second)):
        logged = {p.stem for p in (instance.workdir / "logs").glob("*.log")} - {"epics-bridge"}
        assert logged == {n for n in TASKS if owner(n, 2) == index}, "the other instance's tasks were set up"


def test_an_instance_with_no_task_stays_up_ready(ioc, tmp_path):
    """Few tasks over many instances leave one with none: it is not failing, so it runs and is ready."""
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "vacuum.py").write_text(TASK.format(name="pump"))
    empty, port = 1 - owner("pump", 2), free_port()
    with daemon([folder, "--shard", f"{empty}/2", "--metrics-port", port], ioc.client_env, tmp_path) as service:
        for path in ("/livez", "/readyz"):
            wait_for(
                lambda p=path: answer(port, p) == 200 or service.proc.poll() is not None,
                timeout=20,
                what=f"{path} answering 200",
            )
            assert service.proc.poll() is None, service.stderr[-3000:]
        assert f"shard {empty}/2: 0 of 1 task(s): none; this instance stays up idle" in service.stderr
        service.signal(signal.SIGTERM)
        assert service.wait_exit(15) == 0


def answer(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status
    except OSError:  # not listening yet, or an HTTPError (503)
        return 0
