"""What a task checks before it serves, on real soft IOCs: the whole handshake answers (else one
ERROR naming what is missing and what to load, and the task not ready), its own PVs answer (else a
warning naming them), and no other daemon serves its prefix (two real daemons on one IOC)."""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest
from conftest import ROOT
from helpers import client_for, daemon, read, ready_trigger, running, wait_for, wait_heartbeat, write_tasks
from test_observability import sample, scrape

from epics_bridge.engine import handshake
from epics_bridge.engine.handshake import kind_of
from epics_bridge.engine.hooks import Hooks
from epics_bridge.ioc.softioc import Database, free_port
from epics_bridge.observe.metrics import Metrics
from epics_bridge.observe.systemd import SystemdNotifier
from epics_bridge.registry import Registry
from epics_bridge.status import TaskStatus

A = "HSK:A:"


def _bridge_db_without(folder: Path, record: str) -> Path:
    """db/bridge.db minus one record, e.g. 'bi, "$(P)Busy"' (an IOC that serves only part of the
    handshake) or 'lsi, "$(P)Owner"' (one loaded with a db/bridge.db older than the owner record)."""
    source = (ROOT / "db" / "bridge.db").read_text()
    start = source.index(f"record({record})")
    path = folder / "bridge-without.db"
    path.write_text(source[:start] + source[source.index("}\n", start) + 2 :])
    return path


@pytest.fixture
def lines() -> Iterator[List[str]]:
    """Every log line of this process, as 'LEVEL message', while the test runs."""
    from loguru import logger

    seen: List[str] = []
    sink = logger.add(lambda m: seen.append(f"{m.record['level'].name} {m.record['message']}"), level="DEBUG")
    yield seen
    logger.remove(sink)


def _status_lines(notify: socket.socket, until: str) -> List[str]:
    """The STATUS= lines the notifier sent, up to the first that holds ``until`` (its socket times out)."""
    lines: List[str] = []
    while not any(until in line for line in lines):
        lines += [line for line in notify.recv(4096).decode().splitlines() if line.startswith("STATUS=")]
    return lines


class Readiness(Hooks):
    def __init__(self) -> None:
        self.events: List[tuple] = []

    def ready(self, task, ready, reason) -> None:
        self.events.append((ready, reason))


def test_an_ioc_without_busy_is_named_once_and_the_task_is_not_ready(make_ioc, monkeypatch, lines, tmp_path):
    ioc = make_ioc(extra=[Database(_bridge_db_without(tmp_path, 'bi, "$(P)Busy"'), {"P": A})])
    for key, value in ioc.client_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(handshake, "INCOMPLETE_RETRY", 0.2)
    reg = Registry()
    calls: List[int] = []

    @reg.task(prefix=A, timeout=0.5, heartbeat_period=0.2)
    def half(t):
        calls.append(1)

    port, readiness = free_port(), Readiness()
    metrics = Metrics(reg.tasks)
    metrics.serve(port)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(10)
    notifier = SystemdNotifier(str(tmp_path / "notify"), None)
    ctx = client_for(ioc.client_env)
    try:
        with running(reg.tasks, hooks=[metrics, readiness, notifier]):
            rounds = wait_for(
                lambda: [m for m in lines if "answers only part of the handshake" in m][3:],
                15,
                what="four handshake rounds",
            )
            ctx.put(A + "Trigger", 1)
            status = _status_lines(notify, until="not ready")
            samples = scrape(port)
            seen = len(lines)
            wait_for(
                lambda: [m for m in lines[seen:] if "answers only part of the handshake" in m],
                15,
                what="a round after the Trigger put",
            )
            heartbeat_age = read(ctx, A + "HeartbeatAge")
    finally:
        metrics.close()
        notify.close()
        ctx.close()

    errors = [m for m in lines if m.startswith("ERROR") and "answers only part of the handshake" in m]
    assert len(errors) == 1, errors  # once; the rounds after it repeat at DEBUG
    assert all(m.startswith("DEBUG") for m in rounds[1:])
    assert f"missing: Busy ({A}Busy is not served)" in errors[0]
    assert f'dbLoadRecords("db/bridge.db", "P={A}")' in errors[0]
    assert "unreachable" not in errors[0]
    assert sample(samples, "epics_bridge_task_ready", task="half") == 0
    assert readiness.events == [(False, "handshake incomplete: Busy")]
    assert "STATUS=1 task(s) running, none stuck; 1 not ready: half (handshake incomplete: Busy)" in status
    assert calls == []  # the Trigger put was not served
    assert heartbeat_age >= 2  # the IOC has been up for seconds and no pulse came: not ready shows there too


def test_a_fully_served_task_is_ready_and_its_silent_pvs_are_named(prefix, client, lines, tmp_path):
    reg = Registry()

    @reg.task(
        prefix=prefix,
        pvs={"temperature": "{x}Temp", "position": "{v}Double"},
        prefixes={"x": "NOT:SERVED:", "v": "TST:V:"},
    )
    def served(t):
        pass

    port, readiness = free_port(), Readiness()
    metrics = Metrics(reg.tasks)
    metrics.serve(port)
    try:
        with running(reg.tasks, hooks=[metrics, readiness]):
            wait_for(lambda: readiness.events, 10, what="the task to be ready")
            wait_heartbeat(client, prefix)
            assert sample(scrape(port), "epics_bridge_task_ready", task="served") == 1
            assert ready_trigger(client, prefix).cycle() == TaskStatus.SUCCESS
    finally:
        metrics.close()
    assert readiness.events == [(True, None)]
    warnings = [m for m in lines if "own PV(s) did not answer" in m]
    assert len(warnings) == 1 and warnings[0].startswith("WARNING")
    assert "temperature (NOT:SERVED:Temp: timeout" in warnings[0] and "position" not in warnings[0]
    assert not [m for m in lines if m.startswith("ERROR")]


def test_an_ioc_without_the_owner_record_is_served_as_before(make_ioc, monkeypatch, lines, tmp_path):
    ioc = make_ioc(extra=[Database(_bridge_db_without(tmp_path, 'lsi, "$(P)Owner"'), {"P": A})])
    for key, value in ioc.client_env.items():
        monkeypatch.setenv(key, value)
    reg = Registry()

    @reg.task(prefix=A, heartbeat_period=0.2)
    def older(t):
        pass

    ctx = client_for(ioc.client_env)
    try:
        with running(reg.tasks):
            wait_heartbeat(ctx, A)
            assert ready_trigger(ctx, A).cycle() == TaskStatus.SUCCESS
    finally:
        ctx.close()
    notes = [m for m in lines if f"the IOC has no {A}Owner record" in m]
    assert len(notes) == 1 and notes[0].startswith("INFO")
    assert not [m for m in lines if m.startswith(("ERROR", "WARNING"))]


def test_kinds_of_records_over_qsrv(client):
    kinds = {name: kind_of(client.get("TST:V:" + name)) for name in ("Bool", "Mode", "Long", "Double", "Text", "Wave")}
    assert kinds == {
        "Bool": "enum",
        "Mode": "enum",
        "Long": "integer",
        "Double": "float",
        "Text": "string",
        "Wave": "array",
    }


# -- two daemons on one prefix -----------------------------------------------------------------------------
COUNTING = """
import os
from epics_bridge import bridge

@bridge.task(prefix="{prefix}", heartbeat_period=0.5)
def counted(t):
    with open("calls", "a") as f:
        f.write(f"{{os.getpid()}}\\n")
"""


def _calls(workdir: Path) -> int:
    path = workdir / "calls"
    return len(path.read_text().split()) if path.exists() else 0


def _readyz(port: int) -> Tuple[int, str]:
    """/readyz of a service: (status code, body)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _owner(ctx, prefix: str) -> str:
    return ctx.get(prefix + "Owner")["value"]


# SIGKILL: a crash, nothing released (in one process, so that no supervisor outlives it to stop a worker)
@pytest.mark.parametrize(
    "stop, isolation", [(signal.SIGTERM, "file"), (signal.SIGKILL, "none")], ids=["SIGTERM", "SIGKILL"]
)
def test_a_second_daemon_on_one_prefix_waits_until_the_first_is_gone(stop, isolation, ioc, prefix, client, tmp_path):
    source = write_tasks(tmp_path, COUNTING.format(prefix=prefix))
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    port = free_port()
    with daemon([source, "--isolation", isolation], ioc.client_env, first_dir) as first:
        wait_for(lambda: _owner(client, prefix), 30, what="the first daemon's claim")
        first_owner = _owner(client, prefix)
        wait_heartbeat(client, prefix)
        with daemon([source, "--metrics-port", port], ioc.client_env, second_dir) as second:
            waiting = wait_for(
                lambda: [line for line in second.log("counted").splitlines() if "another daemon serves prefix" in line],
                60,
                what="the second to wait",
            )
            wait_for(lambda: sample(scrape(port), "epics_bridge_task_ready", task="counted") == 0, 10)
            not_ready = _readyz(port)
            trigger = ready_trigger(client, prefix)
            assert trigger.cycle() == TaskStatus.SUCCESS
            wait_heartbeat(client, prefix)  # time for a second cycle to show, if one ran
            assert (_calls(first_dir), _calls(second_dir)) == (1, 0)
            assert _owner(client, prefix) == first_owner

            first.signal(stop)
            first.wait_exit(15)
            gone = time.monotonic()
            wait_for(
                lambda: "handshake complete: serving prefix" in second.log("counted"),
                15,
                what="the second to take over",
            )
            took = time.monotonic() - gone
            second_owner = _owner(client, prefix)
            assert trigger.cycle() == TaskStatus.SUCCESS
            assert (_calls(first_dir), _calls(second_dir)) == (1, 1)
            ready = _readyz(port)
            trigger.close()
            log = second.log("counted")
    print(f"\n{stop.name}: the second daemon served {took:.2f} s after the first exited")
    assert len(waiting) == 1 and "| ERROR " in waiting[0]
    assert not_ready[0] == 503 and "counted: prefix served by" in not_ready[1]
    assert ready[0] == 200
    first_label, second_label = (":".join(owner.split(":")[:2]) for owner in (first_owner, second_owner))
    assert first_label in waiting[0] and second_label in waiting[0] and first_label != second_label
    if stop == signal.SIGTERM:  # a graceful stop released the prefix: no heartbeat timeout to wait out
        assert "taking over" not in log
    else:
        assert f"taking over: {prefix}Owner names {first_owner}, whose process " in log  # it ended, on this host


def test_a_restarted_worker_takes_its_prefix_over_from_the_one_killed(ioc, prefix, client, tmp_path):
    """The worker dies without releasing its claim; the supervisor's new worker (another pid) serves
    once the dead one's heartbeat is stale."""
    source = write_tasks(tmp_path, COUNTING.format(prefix=prefix))
    with daemon([source], ioc.client_env, tmp_path / "run") as d:
        wait_for(lambda: _owner(client, prefix), 30, what="the worker's claim")
        before = _owner(client, prefix)
        wait_heartbeat(client, prefix)
        os.kill(int(before.split(":")[1]), signal.SIGKILL)
        killed = time.monotonic()
        after = wait_for(
            lambda: (_owner(client, prefix) or before) != before and _owner(client, prefix),
            30,
            what="a new worker's claim",
        )
        took = time.monotonic() - killed
        assert ready_trigger(client, prefix).cycle() == TaskStatus.SUCCESS
        log = d.log("counted")
    print(f"\nthe restarted worker served {took:.2f} s after the kill")
    assert (
        f"taking over: {prefix}Owner names {before}, whose process {before.split(':')[1]} on this host has ended" in log
    )
    assert after.split(":")[1] != before.split(":")[1]
    assert took <= 2.0 + 1.0 + 5.0  # two silent seconds, a round, the supervisor's restart


def test_a_serving_task_yields_to_a_foreign_claim_and_takes_an_emptied_record_back(prefix, client, lines):
    """Another name in Owner (two daemons that claimed in the same instant): this one stops serving
    and waits; with nobody pulsing, that claim goes stale and this one serves again. An emptied
    record (an IOC restart) is claimed again at once."""
    reg = Registry()
    calls: List[int] = []

    @reg.task(prefix=prefix, heartbeat_period=0.2)
    def yielding(t):
        calls.append(1)

    readiness = Readiness()
    with running(reg.tasks, hooks=[readiness]):
        mine = wait_for(lambda: _owner(client, prefix), 10, what="the claim")
        # serving, not still in its handshake (which writes its claim itself and would mask this)
        wait_for(lambda: (True, None) in readiness.events, 10, what="the task serving")
        client.put(prefix + "Owner", "")
        wait_for(lambda: _owner(client, prefix) == mine, 10, what="the emptied record claimed again")

        client.put(prefix + "Owner", "elsewhere:4242:2026-01-01T00:00:00Z")
        wait_for(
            lambda: (
                (False, "prefix served by elsewhere:4242 (this is " + ":".join(mine.split(":")[:2]) + ")")
                in readiness.events
            ),
            10,
            what="the task to stop serving",
        )
        client.put(prefix + "Trigger", 1)  # not served while another daemon holds the prefix
        wait_for(lambda: readiness.events[-1] == (True, None), 15, what="the stale claim taken over")
        wait_for(lambda: read(client, prefix + "Trigger") == 0, 10, what="the request served")
        assert _owner(client, prefix) == mine
    assert calls == [1]
    assert [m for m in lines if m.startswith("INFO") and "was empty (an IOC restart?): claimed again" in m]
    took = [m for m in lines if m.startswith("ERROR") and "another daemon took prefix" in m]
    assert len(took) == 1 and "elsewhere:4242" in took[0]
    assert [m for m in lines if m.startswith("WARNING") and "taking over: " in m and "elsewhere:4242" in m]
