"""The host service as a supervisor of worker processes, on a private real IOC.

A task blocked forever costs only its own worker: the others keep every cycle and every
heartbeat, the blocked one comes back by itself (with backoff when it keeps failing) and reports
the cycle it lost; a worker killed by any signal is restarted alone; the supervisor's own death
leaves no process behind; SIGTERM stops everything with Busy=0; a time limit interrupts a
runaway cycle without a restart.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import List

import pytest
from helpers import (
    ClosedLoop,
    HeartbeatRecorder,
    client_for,
    daemon,
    embedded_ports,
    read,
    ready_trigger,
    wait_for,
    wait_value,
    write_tasks,
)

from epics_bridge import TaskStatus
from epics_bridge.service.supervisor import Backoff

PERIOD, STALL, STUCK = 0.5, 2.0, 4
#: The promise: a blocked task's worker is back within this (first failure: 1 s of backoff).
BACK_WITHIN = STALL + STUCK * PERIOD + 5.0  # + 1 s backoff and a worker start-up on a loaded 2-core machine
HEALTHY = {"healthy_a.py": ["HA:1:", "HA:2:"], "healthy_b.py": ["HB:1:"]}
HANG = "HG:1:"
COUNTING = """
from epics_bridge import bridge


def counted(prefix):
    @bridge.task(prefix=prefix, name=prefix.replace(":", "_").strip("_"), heartbeat_period={period},
                 stall_timeout={stall}, max_stuck_cycles={stuck})
    def count(t):
        with open(t.name + ".calls", "a") as f:
            f.write("1\\n")


for prefix in {prefixes!r}:
    counted(prefix)
"""
HANGING = """
import time
from epics_bridge import bridge


@bridge.task(prefix="{prefix}", heartbeat_period={period}, stall_timeout={stall}, max_stuck_cycles={stuck})
def hang(t):
    time.sleep(3600)  # blocked in C: only the stall watchdog and a worker restart end this
"""


def folder_of_tasks(root: Path) -> Path:
    folder = root / "tasks"
    for name, prefixes in HEALTHY.items():
        write_tasks(folder, COUNTING.format(prefixes=prefixes, period=PERIOD, stall=STALL, stuck=STUCK), name)
    write_tasks(folder, HANGING.format(prefix=HANG, period=PERIOD, stall=STALL, stuck=STUCK), "hang.py")
    return folder


def calls(workdir: Path, prefix: str) -> int:
    path = workdir / (prefix.replace(":", "_").strip("_") + ".calls")
    return len(path.read_text().splitlines()) if path.exists() else 0


def two_files(root: Path, prefixes: List[str], body: str = "pass") -> Path:
    """A folder with a.py and b.py, one task each (on the two prefixes), whose function is ``body``."""
    folder = root / "tasks"
    for name, prefix in zip(("a", "b"), prefixes):
        write_tasks(
            folder,
            f"""
            import time
            from epics_bridge import bridge

            @bridge.task(prefix="{prefix}", heartbeat_period={PERIOD})
            def {name}(t):
                {body}
        """,
            f"{name}.py",
        )
    return folder


def max_gap(times: List[float]) -> float:
    return max((b - a for a, b in zip(times, times[1:])), default=0.0)


def test_a_task_blocked_forever_costs_only_itself(make_ioc, tmp_path):
    healthy = [p for prefixes in HEALTHY.values() for p in prefixes]
    ioc = make_ioc(*healthy, HANG)
    ctx = client_for(ioc.client_env)
    beats = HeartbeatRecorder(ctx, [*healthy, HANG])
    stop = threading.Event()
    with daemon([folder_of_tasks(tmp_path)], ioc.client_env, tmp_path) as d:
        for prefix in [*healthy, HANG]:
            beats.wait_pulses(prefix, 2, timeout=30)
        assert len(d.workers()) == 3, "a worker per task file"
        drivers = [ClosedLoop(ioc.client_env, prefix, stop) for prefix in healthy]
        for driver in drivers:
            driver.start()
        pulses_before = {p: len(beats.pulses[p]) for p in healthy}
        back_after = []
        for attempt in range(3):
            ctx.put(HANG + "Trigger", 1)
            wait_value(ctx, HANG + "Busy", 1)
            hung_at = time.monotonic()
            # the restarted worker finds Busy=1, reports the lost cycle, clears Busy and Trigger
            wait_for(
                lambda: read(ctx, HANG + "Busy") == 0 and read(ctx, HANG + "Trigger") == 0,
                timeout=30,
                what=f"the hung task's worker back (attempt {attempt + 1})",
            )
            back_after.append(time.monotonic() - hung_at)
            assert read(ctx, HANG + "TaskStatus") == TaskStatus.EXCEPTION
            assert d.proc.poll() is None, "the service itself must never exit"
        stop.set()
        for driver in drivers:
            driver.join(timeout=15)
        assert d.proc.poll() is None
        log = d.stderr
        hang_log = d.log("hang")
    beats.close()
    ctx.close()
    gaps = {p: max_gap(beats.pulses[p][pulses_before[p] :]) for p in healthy}
    print(
        f"\nhung task back after {', '.join(f'{t:.1f}' for t in back_after)} s; healthy cycles "
        f"{sum(r.acknowledged for r in drivers)} acknowledged, {sum(r.lost for r in drivers)} lost; "
        f"largest heartbeat gap {max(gaps.values()):.2f} s"
    )
    # nothing lost elsewhere: every trigger acknowledged, every cycle run exactly once
    for driver in drivers:
        assert driver.lost == 0, f"{driver.prefix}: {driver.lost} cycles lost"
        assert driver.acknowledged > 10, f"{driver.prefix}: only {driver.acknowledged} cycles"
        assert calls(tmp_path, driver.prefix) == driver.acknowledged
    for prefix, gap in gaps.items():
        assert gap <= 3 * PERIOD, f"{prefix}: heartbeat gap {gap:.2f} s"
    # back by itself each time, with 1 s, 2 s then 4 s of backoff
    assert back_after[0] <= BACK_WITHIN, back_after
    assert back_after[2] <= BACK_WITHIN + 3.0 + 1.0, back_after
    for delay in ("1 s", "2 s", "4 s"):
        assert f"restarting it in {delay}" in log
    assert re.search(
        r"worker hang\.py .* ended: exit status 3 \(its watchdog\) — task 'hang' stuck: .*hang\.py:\d+ "
        r"in hang: time\.sleep\(3600\)",
        log,
    ), log[-3000:]
    assert "Busy=1 at start-up" in hang_log


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV], ids=["SIGKILL", "SIGSEGV"])
def test_a_killed_worker_is_restarted_alone(sig, make_ioc, tmp_path):
    ioc = make_ioc("KW:A:", "KW:B:")
    folder = two_files(tmp_path, ["KW:A:", "KW:B:"])
    ctx = client_for(ioc.client_env)
    beats = HeartbeatRecorder(ctx, ["KW:A:", "KW:B:"])
    with daemon([folder], ioc.client_env, tmp_path) as d:
        beats.wait_pulses("KW:A:", 2, timeout=30)
        beats.wait_pulses("KW:B:", 2, timeout=30)
        before = set(wait_for(lambda: len(d.workers()) == 2 and d.workers(), what="two workers"))
        assert not d.spares(), d.stderr[-3000:]  # no spare before any restart
        victim = d.worker("a.py")
        survivor = (before - {victim}).pop()
        b_pulses = len(beats.pulses["KW:B:"])
        os.kill(victim, sig)
        after = wait_for(
            lambda: len(d.workers()) == 2 and set(d.workers()) != before and d.workers(),
            timeout=15,
            what="a new worker for a.py",
        )
        assert survivor in after, "the other worker is never touched"
        wait_for(lambda: len(d.spares()) == 1, timeout=15, what="a spare kept for the next restart")
        beats.wait_pulses("KW:A:", 2, timeout=15)
        trigger = ready_trigger(ctx, "KW:A:")
        assert trigger.cycle(timeout=10) == TaskStatus.SUCCESS
        trigger.close()
        assert max_gap(beats.pulses["KW:B:"][b_pulses:]) <= 3 * PERIOD
        assert f"killed by {signal.Signals(sig).name}" in d.stderr
        assert d.proc.poll() is None
    beats.close()
    ctx.close()


def test_supervisor_killed_leaves_no_process(tmp_path):
    ports = embedded_ports()
    folder = two_files(tmp_path, ["SK:A:", "SK:B:"])
    with daemon([folder, "--ioc"], ports, tmp_path) as d:
        wait_for(
            lambda: "serves 2 task(s)" in d.stderr or d.proc.poll() is not None,
            timeout=60,
            what="the service up with its embedded IOC",
        )
        assert d.proc.poll() is None, d.stderr[-3000:]
        # no spare yet: one is only kept once a worker has restarted
        # the supervisor, its IOC, 2 workers (too few for a zygote)
        assert len(d.workers()) == 2 and len(d.descendants()) == 4, d.stderr[-3000:]
        d.proc.kill()
        d.proc.wait()
        d.assert_nothing_left(timeout=15)


def test_sigterm_stops_every_worker_with_busy_cleared(make_ioc, tmp_path):
    ioc = make_ioc("ST:A:", "ST:B:")
    # a long cycle, still running when SIGTERM comes
    folder = two_files(tmp_path, ["ST:A:", "ST:B:"], "time.sleep(30)")
    ctx = client_for(ioc.client_env)
    with daemon([folder, "--stop-grace", "1"], ioc.client_env, tmp_path) as d:
        for prefix in ("ST:A:", "ST:B:"):
            wait_value(ctx, prefix + "Trigger", 0, timeout=30)
        wait_for(lambda: len(d.workers()) == 2, timeout=30, what="two workers")
        wait_for(lambda: "2/2 tasks running" in d.stderr, timeout=30, what="both workers up")
        for prefix in ("ST:A:", "ST:B:"):
            ctx.put(prefix + "Trigger", 1)
            wait_value(ctx, prefix + "Busy", 1)
        d.signal(signal.SIGTERM)
        assert d.wait_exit(20) == 0
    for prefix in ("ST:A:", "ST:B:"):
        assert read(ctx, prefix + "Busy") == 0
        assert read(ctx, prefix + "TaskStatus") == TaskStatus.EXCEPTION  # abandoned, reported
    ctx.close()


def test_time_limit_interrupts_a_python_cycle_without_a_restart(make_ioc, tmp_path):
    ioc = make_ioc("TL:S:", "TL:C:")
    folder = tmp_path / "tasks"
    write_tasks(
        folder,
        f"""
        import time
        from epics_bridge import bridge

        @bridge.task(prefix="TL:S:", heartbeat_period={PERIOD}, stall_timeout=3.0, max_stuck_cycles=4, time_limit=1.0)
        def spin(t):
            n = 0
            while True:  # pure Python: the time limit interrupts it
                n += 1

        @bridge.task(prefix="TL:C:", heartbeat_period={PERIOD}, stall_timeout=2.0, max_stuck_cycles=4, time_limit=1.0)
        def sleeper(t):
            time.sleep(3600)  # blocked in C: the limit cannot interrupt it, the watchdog restarts the worker
    """,
        "limits.py",
    )
    ctx = client_for(ioc.client_env)
    beats = HeartbeatRecorder(ctx, ["TL:S:"])
    with daemon([folder, "--isolation", "task"], ioc.client_env, tmp_path) as d:
        beats.wait_pulses("TL:S:", 2, timeout=30)
        wait_for(lambda: len(d.workers()) == 2, timeout=30, what="a worker per task")
        spin_worker = d.worker("spin")
        trigger = ready_trigger(ctx, "TL:S:")
        for _ in range(2):
            started = time.monotonic()
            assert trigger.cycle(timeout=10) == TaskStatus.EXCEPTION
            assert time.monotonic() - started <= 1.0 + 0.5 + 0.5  # the limit, its margin, the round trips
        trigger.close()
        assert spin_worker in d.workers(), "no restart: the same worker served both cycles"
        pulses = len(beats.pulses["TL:S:"])
        beats.wait_pulses("TL:S:", 2, timeout=5)
        assert len(beats.pulses["TL:S:"]) > pulses
        assert re.search(r"cycle interrupted by its time limit \(1 s\) at .*limits\.py:\d+ in spin", d.log("spin"))
        ctx.put("TL:C:Trigger", 1)
        wait_value(ctx, "TL:C:Busy", 1)
        wait_for(
            lambda: read(ctx, "TL:C:Busy") == 0 and read(ctx, "TL:C:Trigger") == 0,
            timeout=30,
            what="the sleeper's worker restarted and its cycle reported",
        )
        assert read(ctx, "TL:C:TaskStatus") == TaskStatus.EXCEPTION
        assert "worker sleeper" in d.stderr and "its watchdog" in d.stderr
    beats.close()
    ctx.close()


@pytest.mark.parametrize(
    "setting, message",
    [
        ("time_limit=5.0, stall_timeout=5.0", "field 'time_limit' (5 s) must be below stall_timeout (5 s)"),
        ("time_limit=-1", "field 'time_limit' must be a positive number of seconds"),
    ],
)
def test_bad_time_limit_is_refused_before_anything_starts(setting, message, tmp_path):
    source = write_tasks(
        tmp_path,
        f"""
        from epics_bridge import bridge

        @bridge.task(prefix="BAD:", {setting})
        def limited(t):
            pass
    """,
    )
    with daemon([source], {}, tmp_path) as d:
        assert d.wait_exit(30) == 2
        assert message in d.stderr and "task 'limited'" in d.stderr and str(source) in d.stderr


@pytest.mark.parametrize(
    "options, expected",
    [
        (["--isolation", "thread"], ["--isolation", "invalid choice"]),
        (["--reload", "--isolation", "none"], ["--reload restarts worker processes"]),
    ],
    ids=["unknown-isolation", "reload-without-workers"],
)
def test_bad_service_options_are_refused(options, expected, tmp_path):
    source = write_tasks(
        tmp_path,
        """
        from epics_bridge import bridge

        @bridge.task(prefix="BAD:")
        def fine(t):
            pass
    """,
    )
    with daemon([source, *options], {}, tmp_path) as d:
        assert d.wait_exit(30) == 2
        for text in expected:
            assert text in d.stderr


def test_backoff_doubles_to_its_cap():
    backoff = Backoff()
    assert [backoff.delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
