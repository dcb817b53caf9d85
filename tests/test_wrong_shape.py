"""A handshake record of the wrong shape (here a waveform Trigger, empty or not) is named once and
the task waits, checking again; its worker never crashes. ``check`` refuses exactly what the
daemon refuses."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT
from helpers import client_for, daemon, wait_for, write_tasks

from epics_bridge.ioc.softioc import Database

P = "WS:A:"
MESSAGE = "wrong kind: Trigger (WS:A:Trigger is an array, needs a binary or integer record"
TASK = f"""
from epics_bridge import bridge


@bridge.task(prefix="{P}", heartbeat_period=0.5)
def shaped(t):
    pass
"""


def test_a_waveform_trigger_is_named_once_and_the_worker_waits(make_ioc, tmp_path):
    ioc = make_ioc(extra=[Database(ROOT / "tests" / "db" / "wave_trigger.db", {"P": P})])
    task = write_tasks(tmp_path / "tasks", TASK, "shaped.py")
    with daemon([task, "--log-level", "DEBUG"], ioc.client_env, tmp_path) as d:
        wait_for(lambda: MESSAGE in d.log("shaped"), timeout=30, what="the refusal")
        worker = d.worker("shaped.py")
        ctx = client_for(ioc.client_env)
        ctx.put(P + "Trigger", [1, 2, 3], timeout=5.0)  # a non-empty waveform update reaches the monitor
        seen = d.log("shaped").count(MESSAGE)
        wait_for(lambda: d.log("shaped").count(MESSAGE) > seen, timeout=30, what="a check after the update")
        ctx.close()
        assert d.workers() == [worker], "the worker was never restarted"
        assert d.proc.poll() is None
    log = d.log("shaped")
    errors = [line for line in log.splitlines() if MESSAGE in line and "ERROR" in line]
    assert len(errors) == 1, "named once at ERROR; the repeats go to DEBUG"
    assert "crashed" not in log and "Traceback" not in log


def test_check_refuses_what_the_daemon_refuses(make_ioc, tmp_path):
    ioc = make_ioc(extra=[Database(ROOT / "tests" / "db" / "wave_trigger.db", {"P": P})])
    task = write_tasks(tmp_path / "tasks", TASK, "shaped.py")
    result = subprocess.run(
        [sys.executable, "-m", "epics_bridge", "check", str(task)],
        env={**os.environ, **ioc.client_env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    trigger = next(line for line in result.stdout.splitlines() if f"{P}Trigger" in line)
    assert "REFUSED: WS:A:Trigger is an array, needs a binary or integer record" in trigger
    assert "1 handshake PV(s) of a kind the daemon refuses" in result.stdout
