"""``python -m epics_bridge tasks/ --ioc``: the example tasks on the embedded soft IOC, reached the
way a first-time user would, from the settings and the command the launcher prints."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import pytest
from helpers import Daemon, Trigger, client_for, daemon, embedded_ports, read, wait_for
from p4p.client.thread import Context

from epics_bridge import Registry, TaskStatus
from epics_bridge.ioc.embedded import databases
from epics_bridge.ioc.softioc import free_port

ROOT = Path(__file__).resolve().parents[1]
MOTOR = "IOC:MOTOR:01:"


def _env() -> Dict[str, str]:
    """Private ports (never the 5075/5076 defaults, which other runs on this host may use)."""
    return {**embedded_ports(), "EPICS_PVAS_INTF_ADDR_LIST": ""}


def _announcement(d: Daemon) -> Tuple[Dict[str, str], int, str]:
    """The printed client settings, the IOC's pid and the printed trigger command."""
    pattern = re.compile(r"\(pid (\d+)\).*\n\s+export (.+)\n\s+(python -c .+Trigger.+)\n")
    text = wait_for(
        lambda: pattern.search(d.stderr) or d.proc.poll() is not None,
        timeout=60,
        what="the launcher's how-to-reach message",
    )
    assert text is not True, f"launcher exited:\n{d.stderr[-3000:]}"
    env = dict(item.split("=", 1) for item in text.group(2).split())
    return env, int(text.group(1)), text.group(3)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _run_printed(command: str, env: Dict[str, str]) -> None:
    """Run a printed ``python -c ...`` line in a shell-like environment: only the printed settings."""
    argv = shlex.split(command)
    assert argv[0] == "python"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EPICS_PVA")}
    subprocess.run([sys.executable, *argv[1:]], env={**clean, **env}, check=True, timeout=60)


def test_examples_run_on_the_embedded_ioc(tmp_path):
    ports = _env()
    with daemon([ROOT / "tasks", "--ioc"], ports, tmp_path) as d:
        env, ioc_pid, trigger_command = _announcement(d)
        assert env["EPICS_PVA_ADDR_LIST"] == "127.0.0.1" and env["EPICS_PVA_AUTO_ADDR_LIST"] == "NO"
        assert env["EPICS_PVA_SERVER_PORT"] == ports["EPICS_PVAS_SERVER_PORT"]
        assert env["EPICS_PVA_BROADCAST_PORT"] == ports["EPICS_PVAS_BROADCAST_PORT"]
        ctx = client_for(env)
        try:
            # motor, triggered by the printed command from a separate process
            ctx.put(MOTOR + "Vel:SP", 3.0)
            motor = Trigger(ctx, MOTOR)
            since = time.time()
            _run_printed(trigger_command, env)
            motor.wait_acknowledge(since, 30)
            assert read(ctx, MOTOR + "TaskStatus") == TaskStatus.SUCCESS
            assert read(ctx, MOTOR + "Pos:RBV") == pytest.approx(1.5)
            motor.close()

            # waveform statistics
            ctx.put("DIAG:BPM:01:Wave", np.array([1.0, 2.0, 3.0, 6.0]))
            bpm = Trigger(ctx, "DIAG:BPM:01:")
            assert bpm.cycle(timeout=30) == TaskStatus.SUCCESS
            assert read(ctx, "DIAG:BPM:01:Mean") == pytest.approx(3.0)
            assert read(ctx, "DIAG:BPM:01:Count") == 4
            bpm.close()

            # the timer interlock closes the valve once the pressure passes the limit
            assert read(ctx, "VAC:PUMP:01:Valve:SP") == 1
            ctx.put("VAC:PUMP:01:Press:RBV", 1e-3)
            wait_for(lambda: read(ctx, "VAC:PUMP:01:Valve:SP") == 0, timeout=30, what="the valve to close")
            wait_for(lambda: read(ctx, "VAC:PUMP:01:TaskStatus") == TaskStatus.LOGIC_FAILURE, timeout=30)
        finally:
            ctx.close()

        d.signal(signal.SIGTERM)
        assert d.wait_exit(30) == 0
        wait_for(lambda: not _alive(ioc_pid), timeout=15, what="the embedded IOC to exit")
        assert (tmp_path / "logs" / "embedded-ioc" / "softioc.log").read_text().count("iocRun") >= 1


def test_the_ioc_dies_when_the_launcher_is_killed(tmp_path):
    with daemon([ROOT / "tasks", "--ioc", "--only", "motor"], _env(), tmp_path) as d:
        _, ioc_pid, _ = _announcement(d)
        assert _alive(ioc_pid)
        d.signal(signal.SIGKILL)
        d.wait_exit(15)
        wait_for(lambda: not _alive(ioc_pid), timeout=15, what="the orphaned IOC to exit")


def test_a_database_shared_by_two_tasks_loads_once(tmp_path):
    """Two tasks naming the same db file with the same macros would define its records twice."""
    shared = tmp_path / "shared.db"
    shared.write_text('record(ai, "$(S)Temp") {}\n')
    reg = Registry()
    for name, task_prefix in (("a", "EMB:A:"), ("b", "EMB:B:")):
        reg.task(lambda t: None, prefix=task_prefix, name=name, db=(str(shared), {"S": "EMB:SYS:"}))
    dbs = databases(reg.tasks)
    assert [(db.path, db.macro_string) for db in dbs].count((shared, "S=EMB:SYS:")) == 1
    assert {db.macro_string for db in dbs if db.path.name == "bridge.db"} == {"P=EMB:A:", "P=EMB:B:"}


def test_a_bad_port_setting_is_refused_before_anything_starts(tmp_path):
    env = {**_env(), "EPICS_PVAS_SERVER_PORT": "50x75"}
    with daemon([ROOT / "tasks", "--ioc"], env, tmp_path) as d:
        assert d.wait_exit(60) == 2
    assert "EPICS_PVAS_SERVER_PORT='50x75' is not a port number" in d.stderr


def test_the_printed_name_server_reaches_the_ioc_without_any_udp_search(tmp_path):
    """A UDP search port is shared with any other server on the host that binds it, and a search may
    reach that one only; the printed settings name the embedded IOC's TCP port as a name server,
    which alone finds the IOC."""
    ports = _env()
    task = tmp_path / "tasks" / "one.py"
    task.parent.mkdir()
    task.write_text('from epics_bridge import bridge\n\n@bridge.task(prefix="SHARED:A:")\ndef one(t):\n    pass\n')
    with daemon([task, "--ioc"], ports, tmp_path) as d:
        env, _, _ = _announcement(d)
        assert env["EPICS_PVA_NAME_SERVERS"] == f"127.0.0.1:{ports['EPICS_PVAS_SERVER_PORT']}"
        tcp_only = {"EPICS_PVA_NAME_SERVERS": env["EPICS_PVA_NAME_SERVERS"], "EPICS_PVA_AUTO_ADDR_LIST": "NO"}
        tcp_only["EPICS_PVA_BROADCAST_PORT"] = str(free_port(socket.SOCK_DGRAM))  # where no server listens
        _run_printed(
            "python -c \"from p4p.client.thread import Context as C; C('pva').get('SHARED:A:Busy', timeout=5)\"",
            tcp_only,
        )


def test_the_embedded_ioc_answers_on_loopback_only(tmp_path):
    """pvxs binds its UDP search socket to the wildcard on purpose and answers only the searches sent
    to the interface it was given; 127.0.0.2 is loopback too, but not the IOC's interface."""
    ports = _env()
    task = tmp_path / "tasks" / "one.py"
    task.parent.mkdir()
    task.write_text('from epics_bridge import bridge\n\n@bridge.task(prefix="LOOP:A:")\ndef one(t):\n    pass\n')
    with daemon([task, "--ioc"], ports, tmp_path) as d:
        _announcement(d)
        tcp = int(ports["EPICS_PVAS_SERVER_PORT"])
        socket.create_connection(("127.0.0.1", tcp), timeout=5).close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.2", tcp), timeout=5)

        def search(address: str) -> Context:
            conf = {"EPICS_PVA_ADDR_LIST": address, "EPICS_PVA_AUTO_ADDR_LIST": "NO"}
            return client_for({**conf, "EPICS_PVA_BROADCAST_PORT": ports["EPICS_PVAS_BROADCAST_PORT"]})

        with search("127.0.0.1") as ctx:
            assert read(ctx, "LOOP:A:Busy") == 0
        with search("127.0.0.2") as ctx, pytest.raises(TimeoutError):
            ctx.get("LOOP:A:Busy", timeout=3)
