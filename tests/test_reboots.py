"""Exactly once across IOC reboots: an IOC restarted in the middle of a cycle comes back with Busy=0
and Trigger=0, and a client may trigger again as soon as it answers. The cycle that was running
must then be reported without acknowledging that new request, which runs once.

Every request carries a number (written to ``$(P)Request`` before Trigger=1) and the task appends
the number it read to a file at the start of its call, and again at its end when that differs (a
call that saw a request made after the one it started on served that one too), so the test knows
which requests each call served, across restarts of the IOC and of any counter on it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List

import pytest
from conftest import ROOT
from helpers import HeartbeatRecorder, client_for, daemon, read, wait_for, wait_value, write_tasks
from p4p.client.thread import Context

from epics_bridge.ioc.softioc import Database

P = "RB:A:"
PERIOD = 0.5
TASK = """
import time
from epics_bridge import bridge


@bridge.task(prefix="{prefix}", pvs={{"request": "Request"}}, heartbeat_period={period}, stall_timeout=30,
             max_stuck_cycles=200, timeout=1.0)
def served(t):
    first = number(t)
    record(first)
    time.sleep({seconds})
    last = number(t)
    if last != first:
        record(last)


def number(t):
    try:
        return t.get("request")
    except Exception:
        return -1


def record(seen):
    with open("served.calls", "a") as f:
        f.write(f"{{seen}}\\n")
"""


def served(workdir: Path) -> List[int]:
    """The requests the calls served, in order (a read that failed is no request)."""
    path = workdir / "served.calls"
    return [n for n in map(int, path.read_text().split()) if n > 0] if path.exists() else []


def start(make_ioc, tmp_path: Path, seconds: float):
    ioc = make_ioc(P, extra=[Database(ROOT / "tests" / "db" / "request.db", {"P": P})])
    task = write_tasks(tmp_path / "tasks", TASK.format(prefix=P, period=PERIOD, seconds=seconds), "served.py")
    return ioc, daemon([task], ioc.client_env, tmp_path)


def request(ctx: Context, number: int, timeout: float = 5.0) -> None:
    ctx.put(P + "Request", number, timeout=timeout)
    ctx.put(P + "Trigger", 1, timeout=timeout)


@pytest.mark.parametrize(
    "seconds, outage, overlap",
    [
        (2.0, 1.5, False),
        pytest.param(2.0, 6.5, False, marks=pytest.mark.slow),  # back after the cycle would have ended
        # back, and the new request made, while the cycle still runs: the cycle must not serve it too
        (4.0, 0.2, True),
    ],
)
def test_a_trigger_written_after_a_reboot_mid_cycle_runs_once(seconds, outage, overlap, make_ioc, tmp_path):
    ioc, service = start(make_ioc, tmp_path, seconds=seconds)
    with service as d:
        ctx = client_for(ioc.client_env)
        HeartbeatRecorder(ctx, [P]).wait_pulses(P, 2, timeout=30)
        request(ctx, 1)
        wait_value(ctx, P + "Busy", 1)
        started = time.monotonic()
        time.sleep(0.5)  # the fault's timing: half a second into the cycle
        ioc.kill()
        time.sleep(outage)  # the fault's length
        ioc.start()
        ctx.close()
        after = client_for(ioc.client_env)
        request(after, 2)  # as soon as the IOC answers
        if overlap:
            assert time.monotonic() - started < seconds - 0.5, "request 2 was made after the cycle ended"
        wait_for(lambda: read(after, P + "Trigger") == 0, timeout=30, what="the new request's acknowledge")
        assert 2 in served(tmp_path), f"request 2 acknowledged but never run: calls {served(tmp_path)}"
        # one more, to see nothing else is still due
        request(after, 3)
        wait_for(lambda: read(after, P + "Trigger") == 0, timeout=30, what="the next request's acknowledge")
        assert served(tmp_path) == [1, 2, 3], "each request runs exactly once"
        assert read(after, P + "Busy") == 0
        after.close()
        assert d.proc.poll() is None
    assert "the IOC restarted during the cycle" in d.log("served")


class Client(threading.Thread):
    """A closed-loop client that rides out IOC restarts: a numbered request, then a wait for its
    acknowledge (Trigger back to 0, with Request still holding its number: a restarted IOC reads
    Trigger=0 too, having forgotten the request, and that is no acknowledge); a request whose put
    fails, that the IOC forgot or that is not acknowledged in time is given up, and the client
    waits for Trigger=0 before its next one, so an acknowledge is always its own request's."""

    def __init__(self, env: Dict[str, str], stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.env, self.stop = env, stop
        self.acknowledged: List[int] = []
        self.given_up = 0

    def run(self) -> None:
        ctx = client_for(self.env)
        number = 0
        try:
            while not self.stop.is_set():
                number += 1
                try:
                    request(ctx, number, timeout=2.0)
                    self._wait_trigger_0(ctx, timeout=10.0)
                    if read(ctx, P + "Request", timeout=2.0) != number:
                        raise LookupError("the IOC restarted and forgot the request")
                    self.acknowledged.append(number)
                except Exception:
                    self.given_up += 1
                    self._settle(ctx)
        finally:
            ctx.close()

    def _wait_trigger_0(self, ctx: Context, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while read(ctx, P + "Trigger", timeout=2.0) != 0:
            if time.monotonic() > deadline:
                raise TimeoutError("no acknowledge")
            time.sleep(0.01)

    def _settle(self, ctx: Context) -> None:
        deadline = time.monotonic() + 30
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                self._wait_trigger_0(ctx, timeout=10.0)
                return
            except Exception:
                time.sleep(0.1)


def restarts_under_load(make_ioc, tmp_path: Path, seconds: float, every: float = 3.0) -> None:
    ioc, service = start(make_ioc, tmp_path, seconds=0.2)
    with service as d:
        ctx = client_for(ioc.client_env)
        HeartbeatRecorder(ctx, [P]).wait_pulses(P, 2, timeout=30)
        ctx.close()
        stop = threading.Event()
        client = Client(ioc.client_env, stop)
        client.start()
        restarts = 0
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            time.sleep(every)  # the fault's rhythm
            ioc.kill()
            ioc.start()
            restarts += 1
        time.sleep(every)  # a last stretch without a fault, so the client's last requests complete
        stop.set()
        client.join(timeout=30)
        assert not client.is_alive()
        assert d.proc.poll() is None
    calls = Counter(n for n in served(tmp_path) if n > 0)
    never_run = [n for n in client.acknowledged if n not in calls]
    twice = {n: c for n, c in calls.items() if c > 1}
    print(
        f"\n{restarts} IOC restarts in {seconds:g} s: {len(client.acknowledged)} requests acknowledged, "
        f"{client.given_up} given up by the client, {len(never_run)} acknowledged but never run, "
        f"{len(twice)} run twice"
    )
    assert not never_run, f"acknowledged but never run: {never_run}"
    assert not twice, f"run more than once: {twice}"
    assert len(client.acknowledged) > 5 * restarts


def test_an_ioc_restarted_every_3_s_loses_and_doubles_nothing(make_ioc, tmp_path):
    restarts_under_load(make_ioc, tmp_path, seconds=12)


@pytest.mark.slow
def test_an_ioc_restarted_every_3_s_for_a_minute_loses_and_doubles_nothing(make_ioc, tmp_path):
    restarts_under_load(make_ioc, tmp_path, seconds=60)
