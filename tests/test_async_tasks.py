"""``async def`` tasks on the real soft IOC: the handshake order, concurrent reads, the time limit, a
blocking call caught by the watchdog, and a graceful stop that cancels a running coroutine, under
the launcher and in a script ending in ``bridge.run()``.

The rules one by one, on the in-memory IO, are in tests/unit/test_async_context.py.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from typing import Any, List

import pytest
from helpers import (
    HeartbeatRecorder,
    Trigger,
    client_for,
    daemon,
    read,
    recorder,
    running,
    wait_for,
    wait_value,
    write_tasks,
)
from test_watchdog import (
    EXIT_MARGIN,
    HEALTHY,
    MARGIN,
    MAX_STUCK,
    PERIOD,
    STALL,
    STUCK,
    TASKS,
    _assert_watchdog_logged,
    stuck_cycle,
)

from epics_bridge import PVTimeoutError, Registry, TaskStatus
from epics_bridge.exits import EXIT_OK, EXIT_STUCK

S = TaskStatus


def test_the_handshake_order_is_that_of_a_plain_task(prefix, client):
    """Busy=1 -> coroutine -> TaskStatus, TaskDuration -> Busy=0, Trigger=0, by the IOC's timeStamps,
    and a client that waits for Trigger=0 reads this cycle's status."""
    statuses = [S.LOGIC_FAILURE, S.SUCCESS, S.SKIPPED]
    reg = Registry()
    busy_inside: List[int] = []

    @reg.task(prefix=prefix)
    async def ordered(t):
        busy_inside.append(await t.get("busy"))
        await asyncio.sleep(0.02)
        return statuses[len(busy_inside) - 1]

    names = {n: prefix + n for n in ("Trigger", "Busy", "TaskStatus", "TaskDuration")}
    updates = recorder(client, list(names.values()))
    read_after_ack = []
    with running(reg.tasks):
        trigger = Trigger(client, prefix)
        for _ in statuses:
            read_after_ack.append((trigger.cycle(), read(client, names["Busy"])))
        trigger.close()
        n = len(statuses)
        wait_for(
            lambda: (
                all(len(updates.of[names[k]]) > 2 * n for k in ("Trigger", "Busy"))
                and all(len(updates.of[names[k]]) > n for k in ("TaskStatus", "TaskDuration"))
            ),
            what="every update of the cycles",
        )
    updates.close()

    assert busy_inside == [1] * n
    of = {k: [(u.value, u.stamp) for u in updates.of[pv][1:]] for k, pv in names.items()}
    for i, expected in enumerate(statuses):
        (trig1, t1), (trig0, t0) = of["Trigger"][2 * i : 2 * i + 2]
        (busy1, b1), (busy0, b0) = of["Busy"][2 * i : 2 * i + 2]
        status, s = of["TaskStatus"][i]
        duration, d = of["TaskDuration"][i]
        assert (trig1, trig0, busy1, busy0, status) == (1, 0, 1, 0, expected)
        assert t1 < b1 < s and b1 < d, f"cycle {i}: Busy=1 after the trigger, before the status"
        assert max(s, d) <= min(b0, t0), f"cycle {i}: status and duration before the acknowledge"
        assert duration >= 0.02, f"cycle {i}: the duration is the coroutine's"
        assert read_after_ack[i] == (expected, 0), f"cycle {i}: read after the acknowledge"


def test_reads_awaited_together_take_the_time_of_the_slowest(bridge_ioc):
    """Three reads of PVs nobody serves (0.6 s deadline each), four served ones and a 0.6 s call of
    an async function, gathered: the cycle takes about 0.6 s, not the 2.4 s of one after another,
    and each unserved read fails with a PVError naming its PV."""
    reg = Registry()
    missing = [f"ASYNC:NOT:SERVED:{n}" for n in range(3)]
    seen: List[Any] = []

    async def service() -> str:  # stands for an async client library's call
        await asyncio.sleep(0.6)
        return "answered"

    @reg.task(prefix="ASYNC:GATHER:")
    async def gathered(t):
        results = await asyncio.gather(
            *(t.get(pv, timeout=0.6) for pv in missing),
            t.get("busy"),
            t.get(["task_status", "heartbeat"]),
            t.get("trigger"),
            service(),
            return_exceptions=True,
        )
        seen.extend(results)

    ioc = bridge_ioc(reg.tasks[0])
    result = ioc.cycle(gathered)
    assert result.status == S.SUCCESS, result.log
    failures, served = seen[:3], seen[3:]
    assert all(isinstance(exc, PVTimeoutError) for exc in failures)
    assert [exc.pv for exc in failures] == missing
    assert served == [1, {"task_status": 0, "heartbeat": served[1]["heartbeat"]}, 1, "answered"]
    assert 0.6 <= result.duration < 1.2, f"{result.duration:.3f} s: not concurrent (one after another: 2.4 s)"


def test_the_time_limit_cancels_the_coroutine_at_its_await_and_the_loop_goes_on(bridge_ioc):
    reg = Registry()
    calls: List[int] = []

    @reg.task(prefix="ASYNC:LIMIT:", time_limit=0.5)
    async def limited(t):
        calls.append(1)
        if len(calls) > 1:
            return S.SUCCESS
        try:
            await asyncio.sleep(30)  # cancelled here
        finally:
            t.log.info("cleaned up with Busy={}", int(await t.get("busy")))  # a finally block may still await

    ioc = bridge_ioc(reg.tasks[0])
    first = ioc.cycle(limited)
    assert first.status == S.EXCEPTION
    assert 0.5 <= first.duration < 0.5 + 1.0
    assert re.search(
        r"cycle interrupted by its time limit \(0\.5 s\) at .*test_async_tasks\.py:\d+ in limited: "
        r"await asyncio\.sleep\(30\)",
        first.log,
    ), first.log
    assert "cleaned up with Busy=1" in first.log
    assert ioc.cycle(limited).status == S.SUCCESS  # the same loop, the same event loop, goes on
    assert ioc.get(limited, "task_status") == S.SUCCESS


def test_a_timer_task_may_be_async(bridge_ioc):
    reg = Registry()

    @reg.task(prefix="ASYNC:TIMER:", period=0.2)
    async def timed(t):
        await asyncio.sleep(0.05)
        return S.SKIPPED if await t.get("trigger") else S.LOGIC_FAILURE

    ioc = bridge_ioc(reg.tasks[0])
    first = ioc.cycle(timed)
    assert first.status == S.LOGIC_FAILURE and first.duration >= 0.05
    ioc.put(timed, trigger=1)  # a timer task never reads Trigger as a request, nor clears it
    assert ioc.cycle(timed).status == S.SKIPPED
    assert ioc.get(timed, "trigger") == 1


ASYNC_TASKS = TASKS.replace("import time\n", "import asyncio\nimport time\n").replace(
    f'@bridge.task(prefix="{STUCK}", **OPTIONS)\ndef stuck(t):',
    f'@bridge.task(prefix="{STUCK}", time_limit=1.0, **OPTIONS)\nasync def stuck(t):',
)
#: How an async cycle can hang past its time limit: (test id, the code, the line the watchdog names).
ASYNC_HANGS = [
    ("blocking-sleep", "time.sleep(1e9)", "time.sleep(1e9)"),
    (
        "ignores-cancellation",
        "while True:\n        try:\n            await asyncio.sleep(1e9)\n        except asyncio.CancelledError:\n"
        "            pass",
        "await asyncio.sleep(1e9)",
    ),
]


@pytest.mark.parametrize("body, statement", [h[1:] for h in ASYNC_HANGS], ids=[h[0] for h in ASYNC_HANGS])
def test_a_hung_coroutine_stalls_only_its_task_and_the_watchdog_ends_the_process(body, statement, make_ioc, tmp_path):
    assert "async def stuck(t):" in ASYNC_TASKS and "time_limit=1.0" in ASYNC_TASKS
    with stuck_cycle(body, "none", make_ioc, tmp_path, tasks=ASYNC_TASKS) as (d, _, beats, started):
        status = d.wait_exit(STALL + MAX_STUCK * PERIOD + EXIT_MARGIN)
        exited = time.monotonic()
    assert status == EXIT_STUCK
    assert STALL <= exited - started <= STALL + MAX_STUCK * PERIOD + EXIT_MARGIN
    stuck, healthy = beats.pulses[STUCK], beats.pulses[HEALTHY]
    assert stuck[-1] <= started + STALL + PERIOD + MARGIN, f"pulse {stuck[-1] - started:.2f} s into the cycle"
    during = [started] + [p for p in healthy if p > started]
    assert max(b - a for a, b in zip(during, during[1:])) <= 2 * PERIOD + MARGIN, "the healthy task missed pulses"
    _assert_watchdog_logged(d, cause="a cycle has been running for", statement=statement)
    # where it hangs, also when the coroutine waits at an await (on no thread's stack then)
    assert re.search(rf"its loop is at \S+tasks_under_test\.py:\d+ in stuck: {re.escape(statement)}", d.stderr)
    assert "cycle interrupted by its time limit" not in d.log("stuck")


STOPPING = """
import asyncio
from pathlib import Path

from epics_bridge import TaskStatus, bridge


@bridge.task(prefix="ASYNC:FOREVER:", heartbeat_period=0.5, stall_timeout=60)
async def forever(t):
    try:
        await asyncio.sleep(1e9)
    finally:
        Path("forever.finally").write_text(str(int(await t.get("busy"))))


@bridge.task(prefix="ASYNC:SHORT:", heartbeat_period=0.5)
async def short(t):
    await asyncio.sleep(1.0)
    return TaskStatus.LOGIC_FAILURE


if __name__ == "__main__":
    bridge.run()
"""
STOP_GRACE = 3.0
FOREVER, SHORT = "ASYNC:FOREVER:", "ASYNC:SHORT:"


@pytest.mark.parametrize("how", ["launcher", "script"])
def test_sigterm_cancels_a_running_coroutine_within_the_stop_grace(how, make_ioc, tmp_path):
    """A short coroutine finishes and reports its own status; one that would run forever is
    cancelled before the grace ends, runs its ``finally`` (which still awaits a read) and
    reports EXCEPTION; the process exits 0 with Busy and Trigger cleared."""
    ioc = make_ioc(FOREVER, SHORT)
    ctx = client_for(ioc.client_env)
    source = write_tasks(tmp_path, STOPPING, "stopping.py")
    options = ["--stop-grace", str(STOP_GRACE)]
    args, script = ([source, *options], None) if how == "launcher" else (options, source)
    with daemon(args, ioc.client_env, tmp_path, script=script) as d:
        beats = HeartbeatRecorder(ctx, [FOREVER, SHORT])
        beats.wait_pulses(FOREVER, 2, timeout=30)
        beats.wait_pulses(SHORT, 2, timeout=30)
        for prefix in (FOREVER, SHORT):
            ctx.put(prefix + "Trigger", 1)
        for prefix in (FOREVER, SHORT):
            wait_value(ctx, prefix + "Busy", 1)
        d.signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert d.wait_exit(STOP_GRACE + EXIT_MARGIN) == EXIT_OK
        assert time.monotonic() - signalled <= STOP_GRACE + EXIT_MARGIN
        beats.close()

    values = {pv: read(ctx, pv) for prefix in (FOREVER, SHORT) for pv in (prefix + "Busy", prefix + "Trigger")}
    assert set(values.values()) == {0}, values
    assert read(ctx, SHORT + "TaskStatus") == S.LOGIC_FAILURE  # its own result
    assert read(ctx, FOREVER + "TaskStatus") == S.EXCEPTION
    assert (tmp_path / "forever.finally").read_text() == "1"  # the finally ran, and its read was served
    log = d.log("forever")
    assert f"cancelled: stopping, and the cycle ran to the end of its {STOP_GRACE:g} s stop grace" in log, log
    assert "abandoned" not in log  # it ended itself and wrote its own end of cycle
    assert "cancelled" not in d.log("short")
    ctx.close()
