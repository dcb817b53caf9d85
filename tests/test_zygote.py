"""Workers forked from the zygote, on a private real IOC.

The zygote holds numpy, loguru and the standard library, never p4p (EPICS base's threads must
not be used in a child forked after they started); a forked worker is the supervisor's own child,
in its own session, so restarts, kills and stops work as for any worker (a service of three
workers or more has one; fewer would not pay for it); the zygote's death costs
nothing but the fork (workers start as fresh interpreters again); what a worker leaves behind
is reaped by the supervisor (a subreaper).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from helpers import client_for, comm, daemon, ready_trigger, wait_for, write_tasks

from epics_bridge import TaskStatus
from epics_bridge.service import worker, zygote

PREFIXES = ["ZY:A:", "ZY:B:", "ZY:C:"]
TASK = """
import subprocess
from epics_bridge import bridge

@bridge.task(prefix="{prefix}", heartbeat_period=0.5)
def {name}(t):
    {body}
"""
#: A shell that starts a sleeper in the background and ends: the sleeper's parent is gone at once.
ORPHAN = 'subprocess.run(["sh", "-c", "sleep 3 & echo $! > orphan.pid"], check=True)'


def folder(root: Path, body_a: str = "pass") -> Path:
    tasks = root / "tasks"
    for (name, prefix), body in zip(zip("abc", PREFIXES), (body_a, "pass", "pass")):
        write_tasks(tasks, TASK.format(prefix=prefix, name=name, body=body), f"{name}.py")
    return tasks


def ppid_and_session(pid: int) -> tuple:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[1]), int(fields[3])


def maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def zygotes(d) -> list:
    return [pid for pid in d.descendants() if comm(pid) == "eb-zygote"]


def forked(pid: int) -> bool:
    return zygote.__name__.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()


def fresh(pid: int) -> bool:
    """Started as its own interpreter, running the worker's entry point (not forked from the zygote)."""
    return worker.ENTRY.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()


def test_workers_are_forked_from_a_zygote_without_p4p_and_adopted(make_ioc, tmp_path):
    ioc = make_ioc(*PREFIXES)
    ctx = client_for(ioc.client_env)
    with daemon([folder(tmp_path)], ioc.client_env, tmp_path) as d:
        workers = wait_for(lambda: len(d.workers()) == 3 and d.workers(), timeout=30, what="three workers")
        (seed,) = wait_for(lambda: zygotes(d), timeout=10, what="the zygote")
        assert "pvxs" not in maps(seed) and "libCom" not in maps(seed), "p4p must never be loaded in the zygote"
        assert "numpy" in maps(seed)
        for pid in workers:
            assert forked(pid), Path(f"/proc/{pid}/cmdline").read_bytes()
            assert ppid_and_session(pid) == (d.proc.pid, pid), "the supervisor's child, in a session of its own"
            assert "pvxs" in maps(pid)  # imported after the fork
        for prefix in PREFIXES:
            trigger = ready_trigger(ctx, prefix)
            assert trigger.cycle(timeout=10) == TaskStatus.SUCCESS
            trigger.close()
        d.signal(signal.SIGTERM)
        assert d.wait_exit(30) == 0
    assert "WARNING" not in d.stderr and "Undefined Behavior" not in d.stderr, d.stderr[-3000:]
    ctx.close()


def test_without_the_zygote_a_worker_starts_as_a_fresh_interpreter(make_ioc, tmp_path):
    ioc = make_ioc(*PREFIXES)
    ctx = client_for(ioc.client_env)
    with daemon([folder(tmp_path)], ioc.client_env, tmp_path) as d:
        wait_for(lambda: len(d.workers()) == 3, timeout=30, what="three workers")
        (seed,) = zygotes(d)
        survivor = d.worker("b.py")
        os.kill(seed, signal.SIGKILL)
        os.kill(d.worker("a.py"), signal.SIGKILL)
        # The killed worker's zombie, until the supervisor reaps it, has the same name and an empty
        # cmdline: only a process that runs the worker's entry point is the fresh interpreter.
        wait_for(
            lambda: next((p for p in d.workers() if comm(p) == "eb:a.py" and fresh(p) and not forked(p)), None),
            timeout=30,
            what="a.py's worker started again, as a fresh interpreter",
        )
        trigger = ready_trigger(ctx, "ZY:A:")
        assert trigger.cycle(timeout=15) == TaskStatus.SUCCESS
        trigger.close()
        assert survivor in d.workers(), "the zygote's death touches no worker"
        assert "the zygote cannot fork workers" in d.stderr
    ctx.close()


def test_a_process_a_task_left_behind_is_reaped(make_ioc, tmp_path):
    ioc = make_ioc(*PREFIXES)
    ctx = client_for(ioc.client_env)
    with daemon([folder(tmp_path, ORPHAN)], ioc.client_env, tmp_path) as d:
        trigger = ready_trigger(ctx, "ZY:A:")
        assert trigger.cycle(timeout=15) == TaskStatus.SUCCESS
        trigger.close()
        orphan = int((tmp_path / "orphan.pid").read_text())
        if Path(f"/proc/{orphan}").exists():  # adopted by the supervisor once its shell ended
            assert ppid_and_session(orphan)[0] == d.proc.pid
        wait_for(lambda: not Path(f"/proc/{orphan}").exists(), timeout=15, what="the orphan reaped, no zombie")
        assert d.proc.poll() is None
    ctx.close()
