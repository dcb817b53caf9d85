"""A log sink that blocks never stops the engine: the service's stderr is a pipe that nobody reads.

One task file holds a chatty task (thousands of lines a cycle, far more than a pipe holds) and a
task that hangs; another file holds a healthy task. With every log line to stderr going nowhere,
the hung task's worker still ends within its watchdog's budget and is restarted by the supervisor
(which logs to the same pipe), the chatty task's cycles finish, and the other file's task keeps
serving triggers throughout.
"""

from __future__ import annotations

import threading
import time

from helpers import ClosedLoop, client_for, daemon, read, ready_trigger, wait_for, wait_value, write_tasks

from epics_bridge import TaskStatus

CHATTY, HANG, HEALTHY = "BL:CHAT:", "BL:HANG:", "BL:OK:"
PERIOD, STALL, STUCK = 0.5, 2.0, 4
#: The watchdog's budget (stalled, then STUCK periods), with a margin for a loaded 2-core machine.
ENDS_WITHIN = STALL + STUCK * PERIOD + 2.0
#: Then the restart: 1 s of backoff and a fresh worker interpreter (no spare is ready before the
#: first restart), which took up to 6 s here under load.
BACK_WITHIN = ENDS_WITHIN + 10.0
LINES = 3000  # about 300 kB a cycle: a pipe holds 64 kB
NOISY = f"""
import time
from epics_bridge import bridge

SETTINGS = dict(heartbeat_period={PERIOD}, stall_timeout={STALL}, max_stuck_cycles={STUCK})
cycles = []


@bridge.task(prefix="{CHATTY}", name="chatty", **SETTINGS)
def chatty(t):
    cycles.append(1)
    for n in range({LINES}):
        t.log.info("chatty line {{}} of cycle {{}}: {{}}", n, len(cycles), "x" * 80)


@bridge.task(prefix="{HANG}", name="hang", **SETTINGS)
def hang(t):
    time.sleep(3600)  # blocked in C: only the stall watchdog and a worker restart end this
"""
QUIET = f"""
from epics_bridge import bridge


@bridge.task(prefix="{HEALTHY}", name="healthy", heartbeat_period={PERIOD})
def healthy(t):
    t.log.info("served")
"""


def test_a_stderr_nobody_reads_blocks_neither_the_watchdog_nor_the_neighbours(make_ioc, tmp_path):
    ioc = make_ioc(CHATTY, HANG, HEALTHY)
    folder = tmp_path / "tasks"
    write_tasks(folder, NOISY, "noisy.py")
    write_tasks(folder, QUIET, "quiet.py")
    ctx = client_for(ioc.client_env)
    stop = threading.Event()
    with daemon([folder], ioc.client_env, tmp_path, stderr_pipe=True) as d:
        chatty = ready_trigger(ctx, CHATTY, timeout=30)
        healthy = ClosedLoop(ioc.client_env, HEALTHY, stop)
        healthy.start()
        first_worker = d.worker("noisy.py")
        for _ in range(3):  # each cycle alone overfills the pipe
            assert chatty.cycle(timeout=20) == TaskStatus.SUCCESS
        chatty.close()
        ctx.put(HANG + "Trigger", 1)
        wait_value(ctx, HANG + "Busy", 1)
        hung_at = time.monotonic()
        wait_for(lambda: first_worker not in d.workers(), timeout=30, what="the hung task's worker to end")
        ended_after = time.monotonic() - hung_at
        # the restarted worker finds Busy=1, reports the lost cycle, clears Busy and Trigger
        wait_for(
            lambda: read(ctx, HANG + "Busy") == 0 and read(ctx, HANG + "Trigger") == 0,
            timeout=30,
            what="the hung task's worker ended and restarted",
        )
        back_after = time.monotonic() - hung_at
        assert read(ctx, HANG + "TaskStatus") == TaskStatus.EXCEPTION
        assert d.worker("noisy.py") != first_worker
        chatty = ready_trigger(ctx, CHATTY, timeout=30)
        assert chatty.cycle(timeout=20) == TaskStatus.SUCCESS, "the restarted worker serves too"
        chatty.close()
        stop.set()
        healthy.join(timeout=15)
        assert d.proc.poll() is None, "the service itself never exits"
        chatty_log = d.log("chatty")
    ctx.close()
    print(
        f"\nhung task's worker ended after {ended_after:.1f} s, back after {back_after:.1f} s; "
        f"healthy cycles {healthy.acknowledged} acknowledged"
    )
    assert ended_after <= ENDS_WITHIN, ended_after
    assert back_after <= BACK_WITHIN, back_after
    assert healthy.lost == 0, f"{healthy.lost} healthy cycles lost"
    assert healthy.acknowledged > 10, healthy.acknowledged
    # the files have their own writer: a blocked stderr costs them nothing
    assert f"chatty line {LINES - 1} of cycle 3:" in chatty_log
