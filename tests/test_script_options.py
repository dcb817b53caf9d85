"""A script ending in ``bridge.run()`` (or a class-API daemon's ``start()``) takes the launcher's
options from its own command line: the same first run on an embedded IOC as ``python -m epics_bridge``."""

from __future__ import annotations

import subprocess
import sys

from helpers import client_for, daemon, embedded_client_env, embedded_ports, ready_trigger, wait_for, write_tasks

from epics_bridge import TaskStatus

SCRIPT = """
from epics_bridge import TaskStatus, bridge


@bridge.task(prefix="SCR:1:", heartbeat_period=0.5)
def scripted(t):
    return TaskStatus.SKIPPED


if __name__ == "__main__":
    bridge.run()
"""
CLASS_API = """
from epics_bridge import BasePVInterface, BridgeDaemon, TaskStatus


class Quiet(BridgeDaemon):
    def run_task(self, inputs=None):
        # self.io must reach the embedded IOC that --ioc started after this daemon was made
        served = self.io.pvget(self.interface.task_duration, timeout=2.0) is not None
        return TaskStatus.SKIPPED if served else TaskStatus.ERROR


if __name__ == "__main__":
    Quiet(BasePVInterface(prefixes={"main": "SCR:2:"}), name="quiet").start()
"""


def test_list_from_the_scripts_command_line(tmp_path):
    script = write_tasks(tmp_path, SCRIPT, "scripted.py")
    listed = subprocess.run([sys.executable, str(script), "--list"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert "scripted  [trigger]  prefix SCR:1:" in listed.stdout


def _serves_on_embedded_ioc(script, prefix, tmp_path):
    ports = embedded_ports()
    with daemon(["--ioc", "--no-log-files"], ports, tmp_path / "run", script=script) as d:
        wait_for(
            lambda: "embedded soft IOC" in d.stderr or d.proc.poll() is not None,
            timeout=60,
            what="the embedded IOC's announcement",
        )
        assert d.proc.poll() is None, d.stderr[-3000:]
        ctx = client_for(embedded_client_env(ports))
        trigger = ready_trigger(ctx, prefix, timeout=30)
        assert trigger.cycle(timeout=10) == TaskStatus.SKIPPED
        trigger.close()
        ctx.close()
    assert not (tmp_path / "run" / "logs").exists(), "--no-log-files: no log folder"


def test_a_task_script_takes_ioc_and_no_log_files(tmp_path):
    _serves_on_embedded_ioc(write_tasks(tmp_path, SCRIPT, "scripted.py"), "SCR:1:", tmp_path)


def test_a_class_api_daemon_takes_the_same_options(tmp_path):
    _serves_on_embedded_ioc(write_tasks(tmp_path, CLASS_API, "quiet_daemon.py"), "SCR:2:", tmp_path)
