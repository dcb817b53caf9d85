"""Reload on a real service: ``--reload`` on every save, SIGHUP in production.

Each version of the task file returns another TaskStatus, so one triggered cycle shows which code
serves. A save that does not validate changes nothing (the last good code keeps serving, even in
a worker that restarts meanwhile); only the workers of changed files restart.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from helpers import client_for, daemon, embedded_client_env, embedded_ports, ready_trigger, wait_for, write_tasks

from epics_bridge import TaskStatus

VERSION = """
from epics_bridge import TaskStatus, bridge


@bridge.task(prefix="{prefix}", heartbeat_period=0.5)
def {name}(t):
    return TaskStatus.{status}
"""


def versioned(folder: Path, name: str, prefix: str, status: str) -> Path:
    return write_tasks(folder, VERSION.format(name=name, prefix=prefix, status=status), f"{name}.py")


def serving(ctx, prefix: str, status: TaskStatus, timeout: float = 20.0) -> None:
    """Wait until a triggered cycle of ``prefix`` returns ``status`` (that version serves)."""
    trigger = ready_trigger(ctx, prefix, timeout=timeout)

    def serves() -> bool:
        try:
            return trigger.cycle(timeout=5) == status
        except TimeoutError:  # its worker is (re)starting
            return False

    try:
        wait_for(serves, timeout, interval=0.2, what=f"{prefix} serving the version that returns {status.name}")
    finally:
        trigger.close()


def test_reload_on_save_keeps_the_last_good_code(make_ioc, tmp_path):
    ioc = make_ioc("RL:A:", "RL:B:")
    folder = tmp_path / "tasks"
    source = versioned(folder, "a", "RL:A:", "SUCCESS")
    versioned(folder, "b", "RL:B:", "SUCCESS")
    ctx = client_for(ioc.client_env)
    with daemon([folder, "--reload"], ioc.client_env, tmp_path) as d:
        serving(ctx, "RL:A:", TaskStatus.SUCCESS)
        other = d.worker("b.py")
        versioned(folder, "a", "RL:A:", "LOGIC_FAILURE")
        serving(ctx, "RL:A:", TaskStatus.LOGIC_FAILURE)
        source.write_text(source.read_text() + "\ndef broken(:\n")
        wait_for(lambda: "reload: the task files do not validate" in d.stderr, timeout=30, what="the refused save")
        assert f"{source}:" in d.stderr and "syntax error" in d.stderr
        # a worker that restarts now (here: killed) still runs the last good code, not the broken file
        os.kill(d.worker("a.py"), signal.SIGKILL)
        wait_for(
            lambda: "worker a.py started (pid" in d.stderr.split("killed by SIGKILL")[-1],
            timeout=30,
            what="a.py restarted",
        )
        serving(ctx, "RL:A:", TaskStatus.LOGIC_FAILURE)
        versioned(folder, "a", "RL:A:", "SKIPPED")
        serving(ctx, "RL:A:", TaskStatus.SKIPPED)
        assert other in d.workers(), "the other file's worker never restarted"
    ctx.close()


def test_sighup_restarts_only_changed_added_and_removed_files(make_ioc, tmp_path):
    ioc = make_ioc("HU:A:", "HU:B:", "HU:C:")
    folder = tmp_path / "tasks"
    versioned(folder, "a", "HU:A:", "SUCCESS")
    b = versioned(folder, "b", "HU:B:", "SUCCESS")
    ctx = client_for(ioc.client_env)
    with daemon([folder], ioc.client_env, tmp_path) as d:
        serving(ctx, "HU:A:", TaskStatus.SUCCESS)
        serving(ctx, "HU:B:", TaskStatus.SUCCESS)
        b_worker = d.worker("b.py")
        versioned(folder, "a", "HU:A:", "LOGIC_FAILURE")  # changed
        b.unlink()  # removed
        versioned(folder, "c", "HU:C:", "SKIPPED")  # added
        d.signal(signal.SIGHUP)
        serving(ctx, "HU:A:", TaskStatus.LOGIC_FAILURE)
        serving(ctx, "HU:C:", TaskStatus.SKIPPED)
        wait_for(lambda: "worker b.py removed" in d.stderr, what="the removed file's worker stopped")
        wait_for(lambda: b_worker not in d.workers(), what="b.py's worker gone")
        assert d.proc.poll() is None, "SIGHUP reloads, it does not end the service"
        assert "worker a.py" in d.stderr and "reload: restarting worker a.py" in d.stderr
    ctx.close()


def test_reload_with_the_embedded_ioc_serves_a_new_prefix(tmp_path):
    ports = embedded_ports()
    client_env = embedded_client_env(ports)
    folder = tmp_path / "tasks"
    versioned(folder, "a", "RI:A:", "SUCCESS")
    with daemon([folder, "--reload", "--ioc"], ports, tmp_path / "run") as d:
        ctx = client_for(client_env)
        serving(ctx, "RI:A:", TaskStatus.SUCCESS, timeout=60)
        versioned(folder, "n", "RI:N:", "SKIPPED")  # a new prefix: the IOC must serve its records
        wait_for(lambda: "restarting the embedded IOC" in d.stderr, timeout=20, what="the IOC restarted")
        serving(ctx, "RI:N:", TaskStatus.SKIPPED, timeout=60)
        serving(ctx, "RI:A:", TaskStatus.SUCCESS, timeout=60)
        ctx.close()
