"""SoftIOC: the test IOC stays on loopback, serves PV Access only, and never outlives its owner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import List, NamedTuple

import pytest
from conftest import ROOT
from helpers import client_for, read, wait_for

from epics_bridge.ioc.softioc import Database, IOCError, SoftIOC

VALUES_DB = ROOT / "tests" / "db" / "values.db"
CA_PORTS = {5064, 5065}
TCP_LISTEN = "0A"


class Sock(NamedTuple):
    proto: str
    address: str
    port: int
    state: str


def _address(hex_addr: str) -> str:
    if len(hex_addr) == 8:  # IPv4, little-endian
        return ".".join(str(int(hex_addr[i : i + 2], 16)) for i in (6, 4, 2, 0))
    return "ipv6:" + hex_addr


def sockets_of(pid: int) -> List[Sock]:
    """The process's sockets from /proc (the same tables ``ss -p`` reads)."""
    fd_dir = Path(f"/proc/{pid}/fd")
    inodes = set()
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        table = Path(f"/proc/{pid}/net/{proto}")
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                addr, port = fields[1].split(":")
                found.append(Sock(proto, _address(addr), int(port, 16), fields[3]))
    return found


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for a reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def values_ioc(tmp_path: Path):
    """A private IOC of tests/db/values.db that the test may stop itself."""
    soft_ioc = SoftIOC([Database(VALUES_DB, {"P": "PRIV:"})], output=tmp_path / "ioc.log")
    yield soft_ioc
    soft_ioc.stop()


def test_fixture_ioc_listens_only_on_loopback(ioc):
    if not Path(f"/proc/{ioc.pid}/net/tcp").exists():
        pytest.skip("no /proc/<pid>/net on this system")
    listeners = [s for s in sockets_of(ioc.pid) if s.proto.startswith("tcp") and s.state == TCP_LISTEN]
    assert listeners == [Sock("tcp", "127.0.0.1", ioc.server_port, TCP_LISTEN)]


def test_fixture_ioc_runs_no_channel_access_server(ioc):
    if not Path(f"/proc/{ioc.pid}/net/tcp").exists():
        pytest.skip("no /proc/<pid>/net on this system")
    socks = sockets_of(ioc.pid)
    # RSRV would bind UDP 5064/5065 and listen on TCP 5064 (or any free port if that is taken).
    assert not [s for s in socks if s.port in CA_PORTS]
    assert {s.port for s in socks if s.state == TCP_LISTEN and s.proto.startswith("tcp")} == {ioc.server_port}


def test_client_env_reaches_the_ioc(values_ioc):
    values_ioc.start()
    ctx = client_for(values_ioc.client_env)
    try:
        assert read(ctx, "PRIV:Long") == 42
    finally:
        ctx.close()


def test_stop_leaves_no_process(values_ioc):
    values_ioc.start()
    proc = values_ioc.process
    values_ioc.stop()
    assert proc.returncode is not None  # exited and reaped: no zombie either
    assert not alive(proc.pid)
    values_ioc.stop()  # idempotent


def test_stop_ends_a_frozen_ioc(values_ioc):
    values_ioc.start()
    proc = values_ioc.process
    values_ioc.freeze()
    values_ioc.stop(timeout=5.0)
    assert proc.returncode is not None and not alive(proc.pid)


PARENT = """
import sys, time
from epics_bridge.ioc.softioc import Database, SoftIOC
ioc = SoftIOC([Database(sys.argv[1], {"P": "ORPHAN:"})], output=sys.argv[2]).start()
print(ioc.pid, flush=True)
time.sleep(120)
"""


def test_ioc_exits_when_its_parent_is_killed(tmp_path):
    parent = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(PARENT), str(VALUES_DB), str(tmp_path / "ioc.log")],
        stdout=subprocess.PIPE,
        text=True,
    )
    ioc_pid = None
    try:
        line = parent.stdout.readline()  # bounded: SoftIOC.start gives up after 30 s
        assert line.strip().isdigit(), f"parent did not start its IOC: {line!r}"
        ioc_pid = int(line)
        assert alive(ioc_pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        wait_for(lambda: not alive(ioc_pid), timeout=15, what=f"orphaned IOC {ioc_pid} to exit")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        parent.stdout.close()
        if ioc_pid is not None and alive(ioc_pid):
            os.kill(ioc_pid, signal.SIGKILL)


@pytest.mark.parametrize(
    "content",
    ['record(ai, "$(P)X") { field(VAL, "1")\n', 'recrod(ai, "$(P)X") { }\n', None],
    ids=["unterminated", "unknown-keyword", "missing-file"],
)
def test_bad_database_is_an_error_not_a_hang(tmp_path, content):
    db = tmp_path / "bad.db"
    if content is not None:
        db.write_text(content)
    log = tmp_path / "bad-ioc.log"
    soft_ioc = SoftIOC([Database(db, {"P": "BAD:"})], output=log)
    start = time.monotonic()
    with pytest.raises(IOCError, match="exited during start-up"):
        soft_ioc.start(timeout=60)
    assert time.monotonic() - start < 30  # far below the start timeout: detected, not waited out
    assert soft_ioc.process is None
    assert str(db) in log.read_text(errors="replace")
