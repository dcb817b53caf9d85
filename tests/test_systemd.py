"""systemd integration: the notify protocol seen from a real AF_UNIX socket, and the unit files.

The daemon runs as ``python -m epics_bridge`` on the session IOC with NOTIFY_SOCKET pointing at a
datagram socket this test owns, as systemd would set it up for ``Type=notify``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import List, Optional

import pytest
from helpers import daemon, write_tasks

from epics_bridge.observe.systemd import SystemdNotifier, from_environment, notify_address, watchdog_interval
from epics_bridge.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "epics-bridge@.service"


class Listener:
    """The systemd side: a bound datagram socket that records every VAR=value line it receives."""

    def __init__(self, name: str) -> None:
        """``name`` is a path, or ``@name`` for the abstract namespace (as in NOTIFY_SOCKET)."""
        self.name = name
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(notify_address(name))
        self.lines: List[str] = []
        self._pending: List[str] = []

    def next_line(self, deadline: float) -> Optional[str]:
        """The next line received before ``deadline`` (monotonic), or None."""
        while not self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                datagram = self.sock.recv(4096)
            except socket.timeout:
                return None
            self._pending.extend(datagram.decode().split("\n"))
        line = self._pending.pop(0)
        self.lines.append(line)
        return line

    def expect(self, pattern: str, timeout: float = 15.0) -> str:
        """Read until a line matches ``pattern``; fail naming what did arrive."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.next_line(deadline)
            if line is None:
                got = self.lines[-10:]
                raise AssertionError(f"no line matching {pattern!r} within {timeout:g} s; got {got}")
            if re.search(pattern, line):
                return line

    def during(self, seconds: float) -> List[str]:
        """Every line that arrives in the next ``seconds``: to show that something does not happen."""
        deadline = time.monotonic() + seconds
        seen = []
        while (line := self.next_line(deadline)) is not None:
            seen.append(line)
        return seen

    def close(self) -> None:
        self.sock.close()
        if not self.name.startswith("@"):
            Path(self.name).unlink(missing_ok=True)


@pytest.fixture(params=["path", "abstract"])
def listener(request, tmp_path):
    name = str(tmp_path / "notify") if request.param == "path" else f"@epics-bridge-test-{uuid.uuid4().hex}"
    receiver = Listener(name)
    yield receiver
    receiver.close()


def _env(listener: Listener) -> dict:
    return {"NOTIFY_SOCKET": listener.name, "WATCHDOG_USEC": "1000000"}  # a ping every 0.5 s


@pytest.mark.parametrize(
    "isolation, status",
    [
        ("none", "STATUS=1 task(s) running, none stuck"),
        ("file", "STATUS=1/1 tasks running"),  # the supervisor speaks; its workers never do
    ],
)
def test_ready_status_watchdog_and_stopping(isolation, status, listener, prefix, tmp_path):
    tasks = write_tasks(
        tmp_path,
        f"""
        from epics_bridge import bridge

        @bridge.task(prefix="{prefix}", heartbeat_period=0.2)
        def quiet(t):
            pass
    """,
    )
    with daemon([tasks, "--isolation", isolation], _env(listener), tmp_path / "run") as d:
        listener.expect(r"^READY=1$", timeout=30)
        assert listener.expect(r"^STATUS=", timeout=5) == status
        for _ in range(3):
            listener.expect(r"^WATCHDOG=1$", timeout=10)
        d.signal(signal.SIGTERM)
        listener.expect(r"^STOPPING=1$", timeout=10)
        assert d.wait_exit(30) == 0
    after_stop = listener.lines[listener.lines.index("STOPPING=1") :] + listener.during(0.5)
    assert "WATCHDOG=1" not in after_stop
    assert listener.lines.count("READY=1") == 1


def test_watchdog_pings_stop_while_a_task_is_stalled(prefix, client, tmp_path):
    listener = Listener(str(tmp_path / "notify"))
    release = tmp_path / "release"
    tasks = write_tasks(
        tmp_path,
        f"""
        import os, time
        from epics_bridge import bridge

        @bridge.task(prefix="{prefix}", heartbeat_period=0.2, stall_timeout=1.0, max_stuck_cycles=100000)
        def hang(t):
            while not os.path.exists({str(release)!r}):  # stuck until the test lets go
                time.sleep(0.05)
    """,
    )
    try:
        with daemon([tasks, "--isolation", "none"], _env(listener), tmp_path / "run") as d:
            listener.expect(r"^READY=1$", timeout=30)
            listener.expect(r"^WATCHDOG=1$", timeout=10)
            client.put(prefix + "Trigger", 1)
            stuck = listener.expect(r"^STATUS=.*1 stuck", timeout=20)
            assert "hang (stuck)" in stuck and "watchdog pings paused" in stuck
            quiet = listener.during(3.0)  # six ping periods
            assert "WATCHDOG=1" not in quiet, quiet
            assert d.proc.poll() is None, "the process must not exit (max_stuck_cycles is large)"

            release.touch()
            listener.expect(r"^STATUS=1 task\(s\) running, none stuck$", timeout=20)
            listener.expect(r"^WATCHDOG=1$", timeout=5)
            d.signal(signal.SIGTERM)
            listener.expect(r"^STOPPING=1$", timeout=10)
            assert d.wait_exit(30) == 0
    finally:
        listener.close()


# -- the protocol's pieces, without a daemon ---------------------------------------------------------
def test_nothing_is_sent_without_notify_socket():
    assert from_environment({}) is None
    assert from_environment({"NOTIFY_SOCKET": "", "WATCHDOG_USEC": "1000000"}) is None


def test_notify_socket_forms():
    assert notify_address("/run/systemd/notify") == "/run/systemd/notify"
    assert notify_address("@abstract/name") == "\0abstract/name"
    assert notify_address("vsock:2:1234") is None
    assert from_environment({"NOTIFY_SOCKET": "relative/path"}) is None


def test_watchdog_is_ours_only_for_our_pid():
    assert watchdog_interval({"WATCHDOG_USEC": "3000000"}) == 1.5
    assert watchdog_interval({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}) == 1.5
    assert watchdog_interval({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None


def test_a_silent_heartbeat_counts_as_stuck(tmp_path):
    """A heartbeat thread that stops reporting is hung itself: the process could not exit on its own."""
    listener = Listener(str(tmp_path / "notify"))
    task = Registry.make(lambda t: None, prefix="SILENT:", name="silent", heartbeat_period=0.5)
    notifier = SystemdNotifier(notify_address(listener.name), interval=None)
    try:
        notifier.started([task])
        listener.expect("^READY=1$", timeout=5)
        now = time.monotonic()
        notifier.heartbeat(task, 0, None)
        assert notifier._unhealthy(now + 1.0) == {}
        assert notifier._unhealthy(now + 60.0) == {"silent": "heartbeat silent"}
    finally:
        notifier.stopping()
        notifier.close()
        listener.close()


# -- the unit file -----------------------------------------------------------------------------------
def test_unit_passes_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian/Ubuntu: apt-get install systemd)")
    # verify insists that ExecStart's program exists: point the venv path at this interpreter and
    # check everything else as written.
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/opt/epics-bridge/venv/bin/python", sys.executable))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    ours = [line for line in (result.stdout + result.stderr).splitlines() if UNIT.name.split("@")[0] in line]
    assert result.returncode == 0 and not ours, result.stdout + result.stderr
