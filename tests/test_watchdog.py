"""The watchdog on a real IOC: a task stuck in any way stops its heartbeat and ends the process.

Each case runs a daemon subprocess with two tasks on a private IOC: ``stuck``, whose cycle never
returns, and ``healthy``, which idles. Budgets are small (a stall after 3 s, exit after 6 stuck
periods of 0.5 s) so the whole story takes seconds; every bound has a margin for a loaded machine.
"""

from __future__ import annotations

import signal
import time
from contextlib import contextmanager
from typing import Any, Iterator, Tuple

import pytest
from helpers import Daemon, HeartbeatRecorder, client_for, daemon, wait_value, write_tasks

from epics_bridge.engine.runner import EXIT_STUCK

STUCK, HEALTHY = "WD:STUCK:", "WD:OK:"
PERIOD, STALL, MAX_STUCK = 0.5, 3.0, 6
#: Monitor latency and scheduling on a loaded machine.
MARGIN = 1.0
#: "A few seconds" for the exit after the last stuck period.
EXIT_MARGIN = 5.0

TASKS = f"""
import threading
import time

from epics_bridge import bridge

OPTIONS = dict(heartbeat_period={PERIOD}, stall_timeout={STALL}, max_stuck_cycles={MAX_STUCK}, timeout=1.0)
NEVER_RELEASED = threading.Lock()


@bridge.task(prefix="{STUCK}", **OPTIONS)
def stuck(t):
    {{body}}


@bridge.task(prefix="{HEALTHY}", **OPTIONS)
def healthy(t):
    return None
"""

#: How a cycle can hang: (test id, the statement the cycle hangs in).
HANGS = [
    ("pure-python-loop", "while True: pass"),
    ("sleep", "time.sleep(1e9)"),
    ("lock-never-released", "NEVER_RELEASED.acquire(); NEVER_RELEASED.acquire()"),
    ("p4p-get-strict", 't.get("WD:NOT:SERVED", timeout=1e9)'),
    ("p4p-get-raw-context", 't.io.ctx.get("WD:NOT:SERVED", timeout=1e9)'),
]


@contextmanager
def stuck_cycle(
    body: str, isolation: str, make_ioc, tmp_path, tasks: str = TASKS
) -> Iterator[Tuple[Daemon, Any, HeartbeatRecorder, float]]:
    """Both tasks pulsing, then the stuck one triggered and in its cycle: the daemon, a client, the
    heartbeat recorder and when the cycle began. ``tasks``: the file's source, with ``{body}``."""
    ioc = make_ioc(STUCK, HEALTHY)
    ctx = client_for(ioc.client_env)
    beats = HeartbeatRecorder(ctx, [STUCK, HEALTHY])
    try:
        source = write_tasks(tmp_path, tasks.format(body=body))
        with daemon([source, "--isolation", isolation], ioc.client_env, tmp_path) as d:
            beats.wait_pulses(STUCK, 2, timeout=30)
            beats.wait_pulses(HEALTHY, 2, timeout=30)
            started = time.monotonic()
            ctx.put(STUCK + "Trigger", 1)
            wait_value(ctx, STUCK + "Busy", 1)
            yield d, ctx, beats, started
    finally:
        beats.close()
        ctx.close()


@pytest.mark.parametrize("body", [b for _, b in HANGS], ids=[i for i, _ in HANGS])
def test_stuck_task_stops_its_heartbeat_and_ends_the_process(body, make_ioc, tmp_path):
    with stuck_cycle(body, "none", make_ioc, tmp_path) as (d, _, beats, started):
        status = d.wait_exit(STALL + MAX_STUCK * PERIOD + EXIT_MARGIN)
        exited = time.monotonic()

    stuck, healthy = beats.pulses[STUCK], beats.pulses[HEALTHY]
    print(
        f"\n{body}: exit status {status} {exited - started:.2f} s after the trigger; "
        f"last pulse of the stuck task at {stuck[-1] - started:.2f} s, "
        f"of the healthy one at {healthy[-1] - started:.2f} s"
    )
    assert status == EXIT_STUCK
    assert STALL <= exited - started <= STALL + MAX_STUCK * PERIOD + EXIT_MARGIN
    # Alive while the cycle is younger than stall_timeout, silent from stall_timeout + one period on.
    assert any(started + PERIOD < p < started + STALL for p in stuck), "no pulse during the young cycle"
    assert stuck[-1] <= started + STALL + PERIOD + MARGIN, f"pulse {stuck[-1] - started:.2f} s into the cycle"
    # The healthy task kept pulsing through the stall until the exit, without a missed period.
    during = [started] + [p for p in healthy if p > started]
    assert max(b - a for a, b in zip(during, during[1:])) <= 2 * PERIOD + MARGIN
    assert exited - during[-1] <= 2 * PERIOD + MARGIN, "the healthy task stopped pulsing before the exit"
    _assert_watchdog_logged(d, cause="a cycle has been running for", statement=body)


def _assert_watchdog_logged(d, cause: str, statement: str) -> None:
    """The operator's line: task, cause and where the loop hangs, in every log the exit reaches."""
    line = f"watchdog: task 'stuck' stuck for {MAX_STUCK} heartbeat periods in a row ({cause}"
    for where, text in (("stderr", d.stderr), ("process log", d.log("epics-bridge"))):
        assert line in text, f"{where} lacks the watchdog line:\n{text[-2000:]}"
        assert statement in text, f"{where} does not show where the task hangs:\n{text[-2000:]}"
    task_log = d.log("stuck")
    assert f"stuck heartbeat period {MAX_STUCK}/{MAX_STUCK}: {cause}" in task_log
    assert "watchdog" in task_log and statement in task_log
    assert "watchdog" not in d.log("healthy")


def test_healthy_daemon_is_not_ended_by_the_watchdog(make_ioc, tmp_path):
    """The control case: the same daemon with no stuck cycle outlives several budgets and stops cleanly."""
    ioc = make_ioc(STUCK, HEALTHY)
    ctx = client_for(ioc.client_env)
    beats = HeartbeatRecorder(ctx, [STUCK, HEALTHY])
    with daemon([write_tasks(tmp_path, TASKS.format(body="return None"))], ioc.client_env, tmp_path) as d:
        beats.wait_pulses(STUCK, 2, timeout=30)
        beats.wait_pulses(STUCK, int((STALL + MAX_STUCK * PERIOD) / PERIOD) + 2, timeout=30)
        assert d.proc.poll() is None
        d.signal(signal.SIGTERM)
        assert d.wait_exit(15) == 0
    assert "stuck heartbeat period" not in d.log("stuck") + d.log("healthy")
    beats.close()
    ctx.close()


#: Under the supervisor by default: a hang that holds the GIL and one blocked in C inside p4p (the
#: others, which the in-process test covers, under -m slow).
SUPERVISED = [
    pytest.param(b, id=i, marks=() if i in ("pure-python-loop", "p4p-get-raw-context") else pytest.mark.slow)
    for i, b in HANGS
]


@pytest.mark.parametrize("body", SUPERVISED)
def test_stuck_task_under_the_supervisor_ends_only_its_worker(body, make_ioc, tmp_path):
    """The same hangs with each task in a worker of its own: the stuck one's worker ends with the
    same diagnosis and is restarted, reporting the lost cycle; the healthy one's never stops pulsing
    and the service stays up."""
    with stuck_cycle(body, "task", make_ioc, tmp_path) as (d, ctx, beats, started):
        # restarted, the lost cycle reported
        wait_value(ctx, STUCK + "Busy", 0, timeout=STALL + MAX_STUCK * PERIOD + EXIT_MARGIN)
        back = time.monotonic() - started
        assert d.proc.poll() is None
        stderr = d.stderr
        during = [started] + [p for p in beats.pulses[HEALTHY] if p > started]
    print(f"\n{body}: the stuck task's worker back {back:.2f} s after the trigger")
    assert "worker stuck (pid" in stderr and "ended: exit status 3 (its watchdog) — task 'stuck' stuck" in stderr
    assert max(b - a for a, b in zip(during, during[1:])) <= 2 * PERIOD + MARGIN
