"""The systemd unit's sandbox: scored, verified, documented, and wide enough for what the service does.

``systemd-analyze`` reads the unit offline (no running systemd needed). The service itself is run
under ``strace -f`` against a real soft IOC, through start-up, a cycle, a reload by the unit's own
``ExecReload=`` command and SIGTERM, and every system call and socket family it (and any process it
forks) used must be allowed by the unit's ``SystemCallFilter=`` and ``RestrictAddressFamilies=``: a
call outside them would fail with EPERM in production.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Set

import pytest
from helpers import client_for, ready_trigger, wait_for, write_tasks

from epics_bridge import TaskStatus

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "epics-bridge@.service"
README = ROOT / "systemd" / "README.md"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed (Debian/Ubuntu: apt-get install systemd)"
)


def directives(text: str) -> Dict[str, List[str]]:
    """Every ``Key=value`` of the unit, values in order (a key may be repeated)."""
    found: Dict[str, List[str]] = {}
    for line in text.splitlines():
        if re.match(r"^[A-Za-z]+=", line):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


SANDBOX = UNIT.read_text().split("# Sandbox:", 1)[1].split("[Install]", 1)[0]


@needs_analyze
def test_security_exposure_is_at_most_2_5():
    result = subprocess.run(
        [ANALYZE, "security", "--offline=yes", "--no-pager", str(UNIT)], capture_output=True, text=True, timeout=60
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", result.stdout + result.stderr)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.5, result.stdout
    assert match.group(2) == "OK"


@needs_analyze
def test_an_instance_passes_systemd_analyze_verify(tmp_path):
    unit = tmp_path / "epics-bridge@vacuum.service"
    unit.write_text(UNIT.read_text().replace("/opt/epics-bridge/venv/bin/python", sys.executable))
    result = subprocess.run([ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    ours = [line for line in (result.stdout + result.stderr).splitlines() if "epics-bridge" in line]
    assert not ours, "\n".join(ours)


def test_reload_and_notify_access():
    found = directives(UNIT.read_text())
    assert found["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert found["NotifyAccess"] == ["main"], "a worker process must not be able to notify systemd"
    assert found["Type"] == ["notify"]


def test_every_hardening_line_is_documented():
    documented = README.read_text().split("## Hardening", 1)[1]
    missing = [key for key in directives(SANDBOX) if f"`{key}=" not in documented]
    assert not missing, f"systemd/README.md, section Hardening, does not explain: {missing}"


# -- what the service really does, against what the unit allows ---------------------------------------
def expand(group: str, seen: Set[str] = frozenset()) -> Set[str]:
    """The system calls of a ``systemd-analyze syscall-filter`` group, nested groups expanded."""
    if not group.startswith("@"):
        return {group}
    out = subprocess.run([ANALYZE, "syscall-filter", group], capture_output=True, text=True, timeout=30).stdout
    names = {line.strip() for line in out.splitlines()[1:] if line.strip() and not line.strip().startswith("#")}
    return set().union(*(expand(n, seen | {group}) for n in names - seen - {group}))


def allowed_syscalls() -> Set[str]:
    allowed: Set[str] = set()
    for entry in directives(SANDBOX)["SystemCallFilter"]:
        names = entry.lstrip("~").split()
        calls = set().union(*(expand(name) for name in names))
        allowed = allowed - calls if entry.startswith("~") else allowed | calls
    return allowed


def traced_service(tracer: int) -> Optional[int]:
    """The service's pid among strace's children (strace first forks a short-lived probe of itself)."""
    for pid in Path(f"/proc/{tracer}/task/{tracer}/children").read_text().split():
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(sys.executable.encode() + b"\0"):
                return int(pid)
        except FileNotFoundError:
            continue
    return None


TASK = """
    import numpy
    from epics_bridge import bridge

    @bridge.task(prefix="{prefix}")
    def {name}(t):
        return float(numpy.arange(1000.0).std()) > 0
"""


def cycle(ioc, prefix: str) -> None:
    ctx = client_for(ioc.client_env)
    trigger = ready_trigger(ctx, prefix)
    try:
        assert trigger.cycle(timeout=30) == TaskStatus.SUCCESS
    finally:
        trigger.close()
        ctx.close()


def trace(ioc, tmp_path: Path) -> str:
    """strace -f of ``python -m epics_bridge``: start-up, a cycle, the unit's ExecReload with a task
    file added (a new worker, its cycle), SIGTERM."""
    folder = tmp_path / "tasks"
    write_tasks(folder, TASK.format(prefix="UNIT:A:", name="first"), "first.py")
    output, stderr = tmp_path / "strace.txt", tmp_path / "service.stderr"
    with stderr.open("wb") as err:
        tracer = subprocess.Popen(
            [
                "strace",
                "-f",
                "-qq",
                "-o",
                str(output),
                sys.executable,
                "-m",
                "epics_bridge",
                str(folder),
                "--metrics-port",
                "0",
                "--log-dir",
                str(tmp_path / "logs"),
            ],
            env={**os.environ, **ioc.client_env},
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    service = None
    try:
        service = wait_for(lambda: traced_service(tracer.pid), timeout=10, what="the traced service")
        cycle(ioc, "UNIT:A:")
        write_tasks(folder, TASK.format(prefix="UNIT:B:", name="added"), "added.py")
        (reload,) = directives(UNIT.read_text())["ExecReload"]
        subprocess.run(shlex.split(reload.replace("$MAINPID", str(service))), check=True, timeout=10)
        cycle(ioc, "UNIT:B:")
        os.kill(service, signal.SIGTERM)
        assert tracer.wait(timeout=30) == 0, stderr.read_text(errors="replace")[-3000:]
    finally:
        if tracer.poll() is None:  # a killed strace would leave the service running, detached
            if service is not None:
                os.kill(service, signal.SIGKILL)
            tracer.kill()
            tracer.wait()
    return output.read_text()


@needs_analyze
@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed (apt-get install strace)")
def test_the_service_stays_inside_the_sandbox(make_ioc, tmp_path):
    text = trace(make_ioc("UNIT:A:", "UNIT:B:"), tmp_path)
    if "PTRACE_TRACEME" in text or not text.strip():
        pytest.skip("ptrace is not permitted here")
    used = set(re.findall(r"^\d+\s+(?:<\.\.\. )?([a-z_0-9]+)\(", text, re.M))
    assert {"clone3", "socket", "sendto"} & used, "the trace is empty: strace saw nothing"
    assert used - allowed_syscalls() == set(), "system calls the unit's SystemCallFilter= denies"
    families = set(re.findall(r"socket\((AF_[A-Z0-9]+)", text))
    allowed = set(directives(SANDBOX)["RestrictAddressFamilies"][0].split())
    assert families and families <= allowed, f"socket families used: {families}, allowed: {allowed}"
