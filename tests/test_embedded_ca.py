"""``--ioc`` serves Channel Access too: the first run seen by a CA client no one here wrote (pyepics),
with nothing but the settings the launcher prints."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, Mapping, Sequence, Tuple

from helpers import wait_for, write_tasks

from epics_bridge.ioc.softioc import Database, SoftIOC, db_dir, free_ca_port, free_port

PREFIX = "CA:FIRST:"

#: Run in a child with only the printed settings, so pyepics's own libca sees this IOC and nothing else.
CLIENT = f"""
import json, time, epics
status = epics.PV("{PREFIX}TaskStatus", form="ctrl")
assert status.wait_for_connection(10), "TaskStatus did not connect over CA"
before = status.get(as_string=True, use_monitor=False)
assert epics.caput("{PREFIX}Trigger", 1, wait=True, timeout=10) == 1
deadline = time.monotonic() + 20
while epics.caget("{PREFIX}Trigger", use_monitor=False) != 0:  # the daemon acknowledges with 0
    assert time.monotonic() < deadline, "no acknowledge over CA"
    time.sleep(0.05)
value = status.get_with_metadata(as_string=True, use_monitor=False, form="ctrl")
print(json.dumps({{"before": before, "after": value["value"], "severity": value["severity"],
                   "choices": list(value["enum_strs"])}}))
"""


@contextmanager
def first_run(args: Sequence[object], env: Mapping[str, str], workdir: Path) -> Iterator[Tuple[subprocess.Popen, Path]]:
    """``python -m epics_bridge ARGS`` as a user starts it, and the file its stderr goes to.
    Stopped with SIGTERM (it stops its IOC), SIGKILL if it does not end."""
    stderr = workdir / "launcher.stderr"
    with open(stderr, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "epics_bridge", *map(str, args)],
            env={**os.environ, **env},
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
        try:
            yield proc, stderr
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _export(stderr: str) -> Dict[str, str]:
    match = re.search(r"\(pid \d+\).*\n\s+export (.+)\n", stderr)
    assert match, stderr[-3000:]
    return dict(item.split("=", 1) for item in match.group(1).split())


def _ioc_pid(stderr: str) -> int:
    return int(re.search(r"embedded soft IOC \(pid (\d+)\)", stderr).group(1))


def test_caget_and_caput_reach_the_first_run(tmp_path):
    tasks = write_tasks(
        tmp_path / "tasks",
        f"""
        from epics_bridge import bridge

        @bridge.task(prefix="{PREFIX}")
        def crashes(t):
            raise RuntimeError("on purpose")
    """,
    )
    ca_port = free_ca_port()
    ports = {
        "EPICS_PVAS_SERVER_PORT": str(free_port()),
        "EPICS_PVAS_BROADCAST_PORT": str(free_port(socket.SOCK_DGRAM)),
        "EPICS_PVAS_INTF_ADDR_LIST": "",
        "EPICS_CAS_SERVER_PORT": str(ca_port),
        "EPICS_CAS_BEACON_PORT": str(free_port(socket.SOCK_DGRAM)),
    }
    with first_run([tasks, "--ioc"], ports, tmp_path) as (launcher, stderr):
        wait_for(
            lambda: "export " in stderr.read_text() or launcher.poll() is not None,
            timeout=60,
            what="the launcher's how-to-reach message",
        )
        said = stderr.read_text()
        assert launcher.poll() is None, said[-3000:]
        env = _export(said)
        assert env["EPICS_CA_ADDR_LIST"] == "127.0.0.1" and env["EPICS_CA_AUTO_ADDR_LIST"] == "NO"
        assert env["EPICS_CA_SERVER_PORT"] == str(ca_port)
        assert env["EPICS_CA_REPEATER_PORT"] == ports["EPICS_CAS_BEACON_PORT"]
        assert f"127.0.0.1:{ca_port} (Channel Access)" in said
        clean = {k: v for k, v in os.environ.items() if not k.startswith("EPICS_")}
        result = subprocess.run(
            [sys.executable, "-c", CLIENT], env={**clean, **env}, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stdout + result.stderr
        read = json.loads(result.stdout.strip().splitlines()[-1])
    ioc = Path(f"/proc/{_ioc_pid(said)}")
    wait_for(
        lambda: not ioc.exists() or "zombie" in (ioc / "status").read_text(),
        timeout=20,
        what="the embedded IOC to end with the launcher",
    )
    assert read["before"] != "Code Crash"
    assert read["after"] == "Code Crash"  # the cycle the CA put asked for ran, and failed as written
    assert read["severity"] == 2  # MAJOR, as bridge.db gives "Code Crash"
    assert read["choices"] == ["Success", "Task Fail", "IO Failure", "Code Crash", "Skipped"]


def test_private_iocs_stay_pva_only():
    """The test suite's own IOCs: no CA server, and no CA settings handed to clients."""
    ioc = SoftIOC([Database(db_dir() / "bridge.db", {"P": PREFIX})])
    assert ioc.server_env["EPICS_IOC_IGNORE_SERVERS"] == "rsrv"
    assert not [name for name in {**ioc.server_env, **ioc.client_env} if name.startswith(("EPICS_CA_", "EPICS_CAS_"))]


def test_a_bad_ca_port_setting_is_refused_before_anything_starts(tmp_path):
    tasks = write_tasks(
        tmp_path / "tasks",
        f"""
        from epics_bridge import bridge

        @bridge.task(prefix="{PREFIX}")
        def idle(t):
            pass
    """,
    )
    result = subprocess.run(
        [sys.executable, "-m", "epics_bridge", str(tasks), "--ioc"],
        cwd=tmp_path,
        env={**os.environ, "EPICS_CAS_SERVER_PORT": "not-a-port"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "EPICS_CAS_SERVER_PORT='not-a-port' is not a port number" in result.stderr
