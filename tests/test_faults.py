"""IOC faults and stop signals against a daemon subprocess on a private IOC.

Faults shorter than the stuck budget are ridden out (nothing lost, nothing run twice); longer ones
end the process inside its budget with status 3 and a line naming the task and the cause; SIGTERM
and SIGINT stop it with status 0 and Busy=0 whatever its cycles were doing.

Every task counts its calls in a file beside it, so a lost or doubled cycle shows even when the
IOC (and any counter on it) was restarted.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from helpers import (
    HeartbeatRecorder,
    client_for,
    daemon,
    read,
    ready_trigger,
    wait_for,
    wait_value,
    write_tasks,
)

from epics_bridge import TaskStatus
from epics_bridge.exits import EXIT_OK, EXIT_STUCK

P, Q = "FX:A:", "FX:B:"
PERIOD, STALL = 0.5, 3.0
#: Length of the short faults; well inside a budget of RIDE_OUT stuck periods (8 s).
OUTAGE, RIDE_OUT = 2.0, 16
#: Budget for the long faults: they must end the process after this many stuck periods.
GIVE_UP = 6
EXIT_MARGIN = 5.0

COUNTING = """
from epics_bridge import bridge


def count(name):
    with open(name + ".calls", "a") as f:
        f.write("1\\n")


@bridge.task(prefix="{prefix}", heartbeat_period={period}, stall_timeout={stall}, max_stuck_cycles={stuck},
             timeout=1.0)
def counting(t):
    count(t.name)
"""


def calls(workdir: Path, name: str) -> int:
    path = workdir / f"{name}.calls"
    return len(path.read_text().splitlines()) if path.exists() else 0


def kill_restart(ioc) -> None:
    ioc.kill()
    time.sleep(OUTAGE)  # the fault's length, not a wait for a condition
    ioc.start()


def freeze_thaw(ioc) -> None:
    ioc.freeze()
    time.sleep(OUTAGE)
    ioc.thaw()


def counting_daemon(ioc, workdir: Path, stuck: int, isolation: str = "none"):
    source = COUNTING.format(prefix=P, period=PERIOD, stall=STALL, stuck=stuck)
    return daemon([write_tasks(workdir, source), "--isolation", isolation], ioc.client_env, workdir)


@pytest.mark.parametrize("isolation", ["none", "file"])
@pytest.mark.parametrize("fault", [kill_restart, freeze_thaw], ids=["ioc-killed-2s", "ioc-frozen-2s"])
def test_short_ioc_fault_is_ridden_out(fault, isolation, make_ioc, tmp_path):
    ioc = make_ioc(P)
    with counting_daemon(ioc, tmp_path, RIDE_OUT, isolation) as d:
        before = client_for(ioc.client_env)
        HeartbeatRecorder(before, [P]).wait_pulses(P, 2, timeout=30)
        assert ready_trigger(before, P).cycle() == TaskStatus.SUCCESS
        before.close()

        fault(ioc)
        back = time.monotonic()
        after = client_for(ioc.client_env)  # a fresh client: the daemon may not have reconnected yet
        after.put(P + "Trigger", 1, timeout=5.0)
        wait_for(
            lambda: calls(tmp_path, "counting") == 2 and read(after, P + "Trigger") == 0,
            timeout=20,
            what="the trigger put right after the fault to be served",
        )
        print(
            f"\n{fault.__name__}: the trigger put once the IOC was back was served "
            f"{time.monotonic() - back:.2f} s later"
        )

        HeartbeatRecorder(after, [P]).wait_pulses(P, 2, timeout=10)
        assert ready_trigger(after, P).cycle() == TaskStatus.SUCCESS
        assert calls(tmp_path, "counting") == 3  # nothing lost, nothing run twice
        assert d.proc.poll() is None
        after.close()
    task_log = d.log("counting")
    assert "stuck heartbeat period 1/" in task_log, "the fault was not even noticed"
    assert "healthy again after" in task_log
    assert "watchdog" not in d.log("epics-bridge")


@pytest.mark.parametrize("fault", ["kill", "freeze"], ids=["ioc-gone", "ioc-frozen"])
def test_long_ioc_fault_ends_the_process_inside_its_budget(fault, make_ioc, tmp_path):
    """With ``--isolation none``: the process is the daemon, and exit 3 is its restart. Under worker
    processes the service stays up instead (tests/test_probes.py)."""
    ioc = make_ioc(P)
    ctx = client_for(ioc.client_env)
    with counting_daemon(ioc, tmp_path, GIVE_UP) as d:
        HeartbeatRecorder(ctx, [P]).wait_pulses(P, 2, timeout=30)
        started = time.monotonic()
        getattr(ioc, fault)()
        try:
            status = d.wait_exit(STALL + GIVE_UP * PERIOD + EXIT_MARGIN)
        finally:
            if fault == "freeze":
                ioc.thaw()
        elapsed = time.monotonic() - started
    ctx.close()

    print(f"\nIOC {fault}: exit status {status} after {elapsed:.2f} s")
    assert status == EXIT_STUCK
    assert (GIVE_UP - 2) * PERIOD <= elapsed <= STALL + GIVE_UP * PERIOD + EXIT_MARGIN
    cause = f"the heartbeat could not be written (put failed for {P}Heartbeat: timeout"
    line = f"watchdog: task 'counting' stuck for {GIVE_UP} heartbeat periods in a row ({cause}"
    assert line in d.stderr
    assert line in d.log("epics-bridge")
    assert f"stuck heartbeat period {GIVE_UP}/{GIVE_UP}: {cause}" in d.log("counting")


STOPPING = """
import threading
import time

from epics_bridge import bridge, TaskStatus


def count(name):
    with open(name + ".calls", "a") as f:
        f.write("1\\n")


@bridge.task(prefix="{forever}", heartbeat_period=0.5, stall_timeout=60)
def forever(t):
    count(t.name)
    threading.Event().wait()


@bridge.task(prefix="{short}", heartbeat_period=0.5)
def short(t):
    count(t.name)
    time.sleep(1.5)
    return TaskStatus.LOGIC_FAILURE
"""
STOP_GRACE = 3.0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_mid_cycle_exits_0_with_busy_cleared(sig, make_ioc, tmp_path):
    """A short cycle in flight finishes and reports; one longer than --stop-grace is abandoned."""
    ioc = make_ioc(P, Q)
    ctx = client_for(ioc.client_env)
    source = STOPPING.format(forever=P, short=Q)
    with daemon([write_tasks(tmp_path, source), "--stop-grace", STOP_GRACE], ioc.client_env, tmp_path) as d:
        beats = HeartbeatRecorder(ctx, [P, Q])
        beats.wait_pulses(P, 2, timeout=30)
        beats.wait_pulses(Q, 2, timeout=30)
        for prefix in (P, Q):
            ctx.put(prefix + "Trigger", 1)
        for prefix in (P, Q):
            wait_value(ctx, prefix + "Busy", 1)
        d.signal(sig)
        signalled = time.monotonic()
        assert d.wait_exit(STOP_GRACE + EXIT_MARGIN) == EXIT_OK
        assert time.monotonic() - signalled <= STOP_GRACE + EXIT_MARGIN
        beats.close()

    values = {pv: read(ctx, pv) for prefix in (P, Q) for pv in (prefix + "Busy", prefix + "Trigger")}
    assert set(values.values()) == {0}, values
    assert read(ctx, Q + "TaskStatus") == TaskStatus.LOGIC_FAILURE  # the short cycle's own result
    assert read(ctx, Q + "TaskDuration") >= 1.5
    assert read(ctx, P + "TaskStatus") == TaskStatus.EXCEPTION  # the abandoned one
    assert calls(tmp_path, "forever") == calls(tmp_path, "short") == 1
    assert "cycle still running at shutdown: abandoned" in d.log("forever")
    assert "abandoned" not in d.log("short")
    ctx.close()
