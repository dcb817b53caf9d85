"""The class API of epics-bridge 1.0.1 on a real IOC: its README Quick Start run verbatim, the ERROR path, polling
through an overridden ``trigger()``, and the daemon's settings carried into the engine's task.
"""

from __future__ import annotations

import importlib.util
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import List

import pytest
from conftest import ROOT
from helpers import Trigger, client_for, read, running, wait_for, wait_heartbeat

from epics_bridge import BasePVInterface, ConfigError, Task, TaskStatus
from epics_bridge.daemon import BridgeDaemon
from epics_bridge.ioc.softioc import Database

#: The Python blocks of the Quick Start of epics-bridge 1.0.1's README (sections 2, 3 and 4), verbatim.
QUICK_START = """\
from dataclasses import dataclass
from epics_bridge.base_pv_interface import BasePVInterface

@dataclass
class MotorInterface(BasePVInterface):
    position_rbv: str = "{main}Pos:RBV"
    velocity_sp: str  = "{main}Vel:SP"
    temperature: str  = "{sys}Temp:Mon"

from epics_bridge.daemon import BridgeDaemon, TaskStatus

class MotorControlDaemon(BridgeDaemon):
    def run_task(self, inputs=None) -> TaskStatus:
        velocity = self.io.pvget(self.interface.velocity_sp)

        if velocity is None:
            return TaskStatus.ERROR

        new_position = velocity * 0.5

        self.io.pvput({
            self.interface.position_rbv: new_position
        })

        return TaskStatus.DONE


def main():

    prefixes = {
        "main": "IOC:MOTOR:01:",
        "sys": "IOC:SYS:"
    }

    interface = MotorInterface(prefixes=prefixes)

    daemon = MotorControlDaemon(
        interface=interface,
    )

    daemon.start()

if __name__ == "__main__":
    main()
"""
MOTOR = "IOC:MOTOR:01:"


def quick_start(folder: Path) -> Path:
    path = folder / "quick_start.py"
    path.write_text(QUICK_START)
    return path


def import_quick_start(folder: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("quick_start", quick_start(folder))
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "quick_start", module)
    spec.loader.exec_module(module)
    return module


def test_the_1_0_1_quick_start_runs_verbatim(make_ioc, tmp_path):
    ioc = make_ioc(MOTOR, extra=[Database(ROOT / "db" / "motor.db", {"P": MOTOR, "S": "IOC:SYS:"})])
    env = {**ioc.client_env}
    script = quick_start(tmp_path)
    with open(tmp_path / "daemon.out", "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    ctx = client_for(env)
    try:
        wait_heartbeat(ctx, MOTOR)
        velocity = round(random.uniform(1, 50), 3)
        ctx.put(MOTOR + "Vel:SP", velocity)
        assert Trigger(ctx, MOTOR).cycle() == TaskStatus.DONE
        assert read(ctx, MOTOR + "Pos:RBV") == pytest.approx(velocity * 0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, (tmp_path / "daemon.out").read_text()
        assert read(ctx, MOTOR + "Busy") == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        ctx.close()


def test_quick_start_returns_error_when_its_pv_is_not_served(prefix, client, tmp_path, monkeypatch):
    qs = import_quick_start(tmp_path, monkeypatch)
    daemon = qs.MotorControlDaemon(interface=qs.MotorInterface(prefixes={"main": prefix, "sys": "IOC:SYS:"}))
    try:
        with running([daemon.as_task()]):
            # pvget waits its default 5 s for the missing Vel:SP, then reads None
            assert Trigger(client, prefix).cycle(timeout=30) == TaskStatus.ERROR
    finally:
        daemon.io.close()


class Recorder(BridgeDaemon):
    """Event driven (``trigger`` not overridden); counts its cycles."""

    def __init__(self, interface: BasePVInterface) -> None:
        super().__init__(interface)
        self.runs: List[object] = []

    def run_task(self, inputs=None) -> TaskStatus:
        self.runs.append(inputs)
        return TaskStatus.SKIPPED


class Polled(Recorder):
    """Polling as in 1.0.1: ``trigger()`` is asked every ``get_poll_rate()`` s; only its 3rd answer is yes."""

    def __init__(self, interface: BasePVInterface) -> None:
        super().__init__(interface)
        self.polls: List[float] = []

    def get_poll_rate(self) -> float:
        return 0.1

    def trigger(self):
        self.polls.append(time.monotonic())
        return len(self.polls) == 3


def test_overridden_trigger_is_polled_at_the_poll_rate(prefix, client):
    daemon = Polled(BasePVInterface(prefixes={"main": prefix}))
    task = daemon.as_task()
    assert task.mode == "poll every 0.1 s"
    origin = time.monotonic()
    try:
        with running([task]):
            wait_for(lambda: len(daemon.polls) >= 8, what="8 polls")
            wait_for(lambda: read(client, prefix + "TaskStatus") == TaskStatus.SKIPPED, what="the polled cycle")
            assert daemon.runs == [None]  # one cycle, for the one truthy answer
    finally:
        daemon.io.close()
    for k, at in enumerate(daemon.polls):
        assert at - origin >= k * 0.1, f"poll {k} came before its slot"


def test_daemon_without_trigger_override_is_event_driven(prefix, client):
    daemon = Recorder(BasePVInterface(prefixes={"main": prefix}))
    task = daemon.as_task()
    assert (task.mode, task.poll) == ("trigger", None)
    try:
        with running([task]):
            wait_heartbeat(client, prefix)
            assert daemon.runs == []
            # a generous bound, not a timing claim
            assert Trigger(client, prefix).cycle(timeout=2.0) == TaskStatus.SKIPPED
            assert daemon.runs == [None]
    finally:
        daemon.io.close()


def settings(task: Task) -> tuple:
    return task.name, task.stall_timeout, task.max_stuck_cycles, task.heartbeat_period, task.timeout


def test_daemon_settings_become_the_tasks():
    daemon = Recorder(BasePVInterface(prefixes={"main": "A:"}))
    try:
        assert settings(daemon.as_task()) == ("Recorder", 10.0, 15, 1.0, 5.0)
        daemon.max_stall_limit, daemon.max_stuck_cycles = 3.5, 4
        daemon.heartbeat_period, daemon.timeout = 0.5, 2.0
        assert settings(daemon.as_task()) == ("Recorder", 3.5, 4, 0.5, 2.0)
        daemon.max_stuck_cycles = 0
        with pytest.raises(ConfigError, match="field 'max_stuck_cycles'"):
            daemon.as_task()
    finally:
        daemon.io.close()
