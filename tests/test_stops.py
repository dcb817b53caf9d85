"""Stops that keep their promise: SIGTERM, or a Ctrl-C that reaches the whole process group, ends
the service within ``--stop-grace`` + 1 s with status 0 even when tasks left threads running (they
are abandoned, and the log says so), and under ``--ioc`` the embedded IOC stops after the tasks
released their prefixes, so nothing warns."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from helpers import (
    LEFTOVER_MARKER,
    HeartbeatRecorder,
    client_for,
    embedded_client_env,
    embedded_ports,
    processes_marked,
    wait_for,
    write_tasks,
)

P = "STP:A:"
STOP_GRACE = 2.0
TASK = f"""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from epics_bridge import bridge


def forever():
    while True:
        time.sleep(0.2)


threading.Thread(target=forever, name="left-running").start()  # not a daemon thread
ThreadPoolExecutor(1).submit(forever)


@bridge.task(prefix="{P}", heartbeat_period=0.5)
def stopper(t):
    pass
"""


@pytest.mark.parametrize(
    ("how", "isolation"),
    [("sigterm", "none"), ("ctrl-c", "file")],  # the launcher's own exit; a worker's and the group's signal
)
def test_a_stop_ends_the_service_in_time_and_the_ioc_last(how, isolation, tmp_path):
    task = write_tasks(tmp_path / "tasks", TASK, "stopper.py")
    ports, marker = embedded_ports(), uuid.uuid4().hex
    stderr = tmp_path / "stderr"
    with open(stderr, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "epics_bridge", str(task), "--ioc", "--isolation", isolation, "--no-log-files"]
            + ["--stop-grace", str(STOP_GRACE)],
            env={**os.environ, **ports, LEFTOVER_MARKER: marker},
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,  # a process group of its own, as a terminal gives it
        )
    try:
        wait_for(lambda: "serves 1 task(s)" in stderr.read_text() or proc.poll() is not None, 60, what="the IOC")
        ctx = client_for(embedded_client_env(ports))
        beats = HeartbeatRecorder(ctx, [P])
        beats.wait_pulses(P, 2, timeout=30)
        for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP):  # never the default death
            proc.send_signal(sig)
        beats.wait_pulses(P, 2, timeout=30)
        assert proc.poll() is None, "SIGUSR1, SIGUSR2 and SIGHUP did not end the service"
        beats.close()
        ctx.close()
        asked = time.monotonic()
        if how == "sigterm":
            proc.send_signal(signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGINT)
        status = proc.wait(timeout=STOP_GRACE + 30)
        took = time.monotonic() - asked
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    log = stderr.read_text()
    print(f"\n{how}, isolation {isolation}: stopped in {took:.2f} s")
    assert status == 0, log[-3000:]
    assert took <= STOP_GRACE + 1.0, f"{took:.2f} s"
    assert "abandoning 2 thread(s) the tasks left running: left-running" in log
    warnings = [line for line in log.splitlines() if "WARNING" in line and "abandoning" not in line]
    assert not warnings, "the IOC outlived every task's release: " + "\n".join(warnings)
    wait_for(lambda: not processes_marked(marker), 20, what="every process of the service (the IOC too) to end")
