"""``async def`` tasks on the in-memory IO: the awaited verbs, the cycle around a coroutine, its time
limit and cancellation, and the batch that p4p's callbacks complete on an event loop.

The same behaviour runs end to end on the real soft IOC in tests/test_async_tasks.py.
"""

from __future__ import annotations

import asyncio
import re
import threading
from typing import Any, Callable, List

import pytest
from helpers import wait_for
from test_loop import BUSY, DURATION, STATUS, TRIGGER, P, _handshake, _io, _task, looping

from epics_bridge.async_context import AsyncTaskContext, NotAwaitedError
from epics_bridge.engine import runner
from epics_bridge.io import PVDisconnectedError, PVTimeoutError, _abatch
from epics_bridge.memory_io import MemoryIO
from epics_bridge.status import TaskStatus
from epics_bridge.task_context import ReadOnlyError, UnknownNameError

PVS = {"pressure": "Press", "valve": "Valve", "other": "Other"}


def _async_io(**values: Any) -> MemoryIO:
    return _io(**{P + "Press": 2.5e-6, P + "Valve": 1, P + "Other": 7, **values})


def _context(io: MemoryIO) -> AsyncTaskContext:
    task = _task(pvs=PVS)
    return AsyncTaskContext(task.name, task.pvs, io)


def _cycle(func: Callable[[Any], Any], io: MemoryIO, **options: Any) -> TaskStatus:
    """One triggered cycle of ``func`` on a loop of its own; its status."""
    with looping(_task(func, pvs=PVS, **options), io) as (_, finished):
        io.set(TRIGGER, 1)
        return finished.next()


# -- the context, awaited directly (as a user's own unit test does) ----------------------------------------
def test_awaited_verbs_read_and_write_by_logical_and_full_name():
    io = _async_io(**{"OTHER:Value": 3})
    t = _context(io)

    async def body() -> Any:
        single = await t.get("pressure")
        batch = await t.get(["pressure", "OTHER:Value"])
        await t.put(valve=0)
        await t.put({"OTHER:Value": 8})
        return single, batch

    assert asyncio.run(body()) == (2.5e-6, {"pressure": 2.5e-6, "OTHER:Value": 3})
    assert io.writes == [{P + "Valve": 0}, {"OTHER:Value": 8}]


def test_awaited_verbs_pass_the_cycles_guard_before_and_after_their_io():
    io = _async_io()
    task = _task(pvs=PVS)
    calls: List[str] = []

    def guard(operation: str) -> None:
        calls.append(operation)
        if len(calls) > 4:  # the link dropped after the first read and write
            raise PVDisconnectedError(operation, {P + "Trigger": ConnectionError("the link dropped")})

    t = AsyncTaskContext(task.name, task.pvs, io, guard=guard)

    async def body() -> Any:
        first = await t.get("pressure")
        await t.put(valve=0)
        with pytest.raises(PVDisconnectedError):
            await t.get("pressure")
        with pytest.raises(PVDisconnectedError):
            await t.put(valve=1)
        return first

    assert asyncio.run(body()) == 2.5e-6
    assert calls == ["get", "get", "put", "put", "get", "put"]
    assert io.writes == [{P + "Valve": 0}]


def test_a_gather_of_reads_returns_each_value_in_order():
    t = _context(_async_io())

    async def body() -> List[Any]:
        return list(await asyncio.gather(t.get("pressure"), t.get("valve"), t.get(["other"])))

    assert asyncio.run(body()) == [2.5e-6, 1, {"other": 7}]


def test_a_typo_raises_at_the_call_before_any_await():
    t = _context(_async_io())
    with pytest.raises(UnknownNameError, match="did you mean 'pressure'"):
        t.get("presure")
    with pytest.raises(UnknownNameError, match="did you mean 'valve'"):
        t.put(vlave=0)
    t.check_awaited()  # nothing was made, so nothing is pending


def test_an_awaited_read_that_fails_raises_pverror_naming_each_pv():
    io = _async_io()
    io.fail[P + "Press"] = TimeoutError()
    t = _context(io)
    with pytest.raises(PVTimeoutError) as caught:
        asyncio.run(_await(t.get(["pressure", "valve"])))
    assert caught.value.failures.keys() == {P + "Press"} and P + "Press" in str(caught.value)


async def _await(operation: Any) -> Any:
    return await operation


def test_an_operation_never_awaited_is_named_with_its_line_and_did_not_happen():
    io = _async_io()
    t = _context(io)
    t.put(valve=0)  # not awaited here
    line = _line_of("# not awaited here")
    with pytest.raises(NotAwaitedError) as caught:
        t.check_awaited()
    assert f"never awaited: t.put(valve=…) at {__file__}:{line}" in str(caught.value)
    assert "await t.put(...)" in str(caught.value)
    assert io.writes == []
    t.check_awaited()  # reported once


def _line_of(code: str) -> int:
    """The line of this file where ``code`` first appears."""
    with open(__file__) as source:
        return next(n for n, text in enumerate(source, 1) if code in text and "_line_of" not in text)


# -- the cycle around a coroutine ------------------------------------------------------------------------
def test_an_async_task_keeps_the_handshake_order():
    seen: List[Any] = []

    async def task(t: Any) -> None:
        seen.append(await t.get("busy"))

    io = _async_io()
    assert _cycle(task, io) == TaskStatus.SUCCESS
    assert seen == [1]  # Busy=1 was acknowledged before the coroutine ran
    assert _handshake(io.writes) == [{BUSY: 1}, {STATUS: 0, DURATION: "d"}, {BUSY: 0, TRIGGER: 0}]


@pytest.mark.parametrize(
    "returned, status",
    [
        (None, TaskStatus.SUCCESS),
        (True, TaskStatus.SUCCESS),
        (False, TaskStatus.LOGIC_FAILURE),
        (TaskStatus.SKIPPED, TaskStatus.SKIPPED),
        ("done", TaskStatus.EXCEPTION),
    ],
)
def test_return_values_map_to_a_status_as_for_plain_functions(returned, status):
    async def task(t: Any) -> Any:
        return returned

    assert _cycle(task, _async_io()) == status


def test_a_pv_that_fails_inside_the_coroutine_is_an_io_failure():
    async def task(t: Any) -> None:
        await t.get("pressure")

    io = _async_io()
    io.fail[P + "Press"] = TimeoutError()
    assert _cycle(task, io) == TaskStatus.IO_FAILURE


def test_every_cycle_runs_on_the_tasks_own_thread_and_one_event_loop():
    where: List[Any] = []

    async def task(t: Any) -> None:
        where.append((threading.current_thread().name, asyncio.get_running_loop()))

    io = _async_io()
    with looping(_task(task, pvs=PVS), io) as (loop, finished):
        for _ in range(3):
            io.set(TRIGGER, 1)
            assert finished.next() == TaskStatus.SUCCESS
        events = loop.events
    assert [name for name, _ in where] == ["task:unit"] * 3
    assert len({id(event_loop) for _, event_loop in where}) == 1
    assert events is not None and events._loop is None  # closed when the task stopped
    assert where[0][1].is_closed()


def test_a_put_without_await_fails_the_cycle_naming_the_call(caplog_loguru):
    async def task(t: Any) -> None:
        t.put(valve=0)  # not awaited in a cycle

    io = _async_io()
    assert _cycle(task, io) == TaskStatus.EXCEPTION
    assert f"never awaited: t.put(valve=…) at {__file__}:{_line_of('# not awaited in a cycle')}" in caplog_loguru.text
    assert P + "Valve" not in {pv for batch in io.writes for pv in batch}


def test_a_read_used_without_await_fails_the_cycle_naming_the_read(caplog_loguru):
    async def task(t: Any) -> None:
        if t.get("pressure") > 1e-5:  # a TypeError: an operation is no number
            pass

    assert _cycle(task, _async_io()) == TaskStatus.EXCEPTION
    assert "never awaited: t.get('pressure')" in caplog_loguru.text
    assert "'>' not supported" in caplog_loguru.text  # what the coroutine raised, chained


def test_a_plain_function_returning_a_coroutine_is_told_to_be_async(caplog_loguru):
    async def helper(t: Any) -> None:
        pass

    def task(t: Any) -> Any:
        return helper(t)

    assert _cycle(task, _async_io()) == TaskStatus.EXCEPTION
    assert "declare the task function 'async def'" in caplog_loguru.text


# -- time limit and cancellation --------------------------------------------------------------------------
def test_the_time_limit_cancels_at_the_await_and_the_loop_goes_on(caplog_loguru):
    cleaned: List[bool] = []
    calls: List[int] = []

    async def task(t: Any) -> None:
        calls.append(1)
        if len(calls) > 1:
            return
        try:
            await asyncio.sleep(30)
        finally:
            await t.put(valve=0)  # a finally block may still await
            cleaned.append(True)

    io = _async_io()
    with looping(_task(task, pvs=PVS, time_limit=0.2), io) as (_, finished):
        io.set(TRIGGER, 1)
        assert finished.next(timeout=5) == TaskStatus.EXCEPTION
        io.set(TRIGGER, 1)
        assert finished.next() == TaskStatus.SUCCESS  # the same loop serves the next cycle
    assert cleaned == [True] and io.values[P + "Valve"] == 0
    assert re.search(
        r"cycle interrupted by its time limit \(0\.2 s\) at .*test_async_context\.py:\d+ in task: "
        r"await asyncio\.sleep\(30\)",
        caplog_loguru.text,
    )


def test_a_coroutine_swallowing_the_cancellation_still_ends_on_its_time_limit(caplog_loguru):
    async def task(t: Any) -> Any:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            return TaskStatus.SUCCESS

    assert _cycle(task, _async_io(), time_limit=0.2) == TaskStatus.EXCEPTION
    assert "cycle interrupted by its time limit (0.2 s)" in caplog_loguru.text


def test_cancel_ends_a_running_coroutine_as_exception_and_nothing_else(caplog_loguru):
    started = threading.Event()

    async def task(t: Any) -> None:
        started.set()
        await asyncio.sleep(30)

    io = _async_io()
    with looping(_task(task, pvs=PVS), io) as (loop, finished):
        loop.cancel("a test asked")  # nothing runs: nothing to cancel, the next cycle is unharmed
        io.set(TRIGGER, 1)
        assert started.wait(5)
        loop.cancel("a test asked")
        assert finished.next(timeout=5) == TaskStatus.EXCEPTION
    assert "cancelled: a test asked" in caplog_loguru.text
    assert io.values[BUSY] == 0 and io.values[TRIGGER] == 0


# -- the batch on an event loop, completed from another thread as p4p does ---------------------------------
class _Op:
    """An operation as p4p hands it out: closed by the batch when done or cancelled."""

    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_completions_from_another_thread_wake_the_loop_and_a_late_one_times_out():
    ops: List[_Op] = []
    callbacks: List[Callable[[Any], None]] = []

    def start(name: str, callback: Callable[[Any], None]) -> _Op:
        callbacks.append(callback)
        ops.append(_Op())
        if name != "silent":
            threading.Timer(0.05, callback, args=(f"{name}!",)).start()  # p4p's network thread
        return ops[-1]

    async def batch() -> List[Any]:
        return await _abatch(["a", "silent", "b"], 0.5, start)

    results = asyncio.run(batch())
    assert results[0] == "a!" and results[2] == "b!"
    assert isinstance(results[1], TimeoutError) and "0.5 s" in str(results[1])
    assert all(op.closed for op in ops)  # an unanswered batch is cancelled at once


def test_a_cancelled_batch_cancels_its_operations():
    ops: List[_Op] = []

    def start(name: str, callback: Callable[[Any], None]) -> _Op:
        ops.append(_Op())
        return ops[-1]

    async def cancelled() -> None:
        waiting = asyncio.ensure_future(_abatch(["a", "b"], 30.0, start))
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(cancelled())
    wait_for(lambda: all(op.closed for op in ops), 1.0, what="the operations closed")


def test_the_watchdog_sees_the_await_a_suspended_coroutine_waits_at():
    started = threading.Event()

    async def task(t: Any) -> None:
        started.set()
        await asyncio.sleep(30)  # suspended here

    io = _async_io()
    with looping(_task(task, pvs=PVS), io) as (loop, finished):
        assert loop.events is not None and not loop.events.awaiting()  # nothing runs
        io.set(TRIGGER, 1)
        assert started.wait(5)
        frames = wait_for(loop.events.awaiting, 2.0, what="the coroutine suspended")
        assert frames[0].name == "task" and frames[0].line == "await asyncio.sleep(30)  # suspended here"
        loop.cancel("the test is over")
        assert finished.next(timeout=5) == TaskStatus.EXCEPTION


@pytest.mark.parametrize(
    "limits, count, raised",
    [
        ((1024, 524288), 1000, (5024, 524288)),  # systemd's default: raised for 1000 event loops
        ((1024, 2048), 1000, (2048, 2048)),  # as far as the hard limit allows (and a warning)
        ((65536, 524288), 1000, None),  # enough already
        ((1024, 524288), 0, None),  # no async task: nothing changes
    ],
)
def test_the_open_files_limit_is_raised_for_the_event_loops(monkeypatch, limits, count, raised):
    set_to: List[Any] = []
    monkeypatch.setattr(runner, "_open_files", lambda: 1000)  # e.g. a log file per task
    monkeypatch.setattr(runner.resource, "getrlimit", lambda kind: limits)
    monkeypatch.setattr(runner.resource, "setrlimit", lambda kind, value: set_to.append(value))
    runner._allow_event_loops(count)
    assert set_to == ([raised] if raised else [])


def test_busy_left_at_start_up_is_reported_and_not_run_again_as_for_a_plain_task():
    calls: List[int] = []

    async def task(t: Any) -> None:
        calls.append(1)

    io = _async_io(**{BUSY: 1, TRIGGER: 1})
    with looping(_task(task, pvs=PVS), io) as (_, finished):
        wait_for(lambda: io.values[BUSY] == 0, 2.0, what="Busy cleared")
    assert calls == []
    assert io.values[STATUS] == int(TaskStatus.EXCEPTION) and io.values[TRIGGER] == 0
    assert finished.statuses.empty()


def test_a_timer_task_may_be_async():
    async def task(t: Any) -> Any:
        await asyncio.sleep(0.01)
        return TaskStatus.SKIPPED

    io = _async_io()
    with looping(_task(task, pvs=PVS, period=0.05), io) as (_, finished):
        assert [finished.next() for _ in range(3)] == [TaskStatus.SKIPPED] * 3
    assert TRIGGER not in {pv for batch in io.writes for pv in batch}


def test_an_operation_runs_once():
    io = _async_io()
    t = _context(io)

    async def twice() -> None:
        write = t.put(valve=0)
        await write
        await write

    with pytest.raises(RuntimeError, match=r"t\.put\(valve=…\) at .* was awaited already"):
        asyncio.run(twice())
    assert io.writes == [{P + "Valve": 0}]


def test_the_async_context_is_read_only_as_the_plain_one():
    t = _context(_async_io())
    with pytest.raises(ReadOnlyError):
        t.name = "other"  # type: ignore[misc]
    with pytest.raises(ReadOnlyError):
        t.pvs.busy = "OTHER:Busy"


def test_a_background_task_goes_on_in_the_next_cycle_and_is_cancelled_at_stop():
    events: List[str] = []
    kept: List[Any] = []

    async def background(name: str) -> None:
        try:
            await asyncio.sleep(0.05)
            events.append(f"{name} done")
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            events.append(f"{name} cancelled")
            raise

    async def task(t: Any) -> None:
        if not kept:
            kept.append(asyncio.get_running_loop().create_task(background("first")))  # not awaited
        else:
            await asyncio.sleep(0.1)  # the event loop runs again: the background task goes on

    io = _async_io()
    with looping(_task(task, pvs=PVS), io) as (loop, finished):
        for _ in range(2):
            io.set(TRIGGER, 1)
            assert finished.next() == TaskStatus.SUCCESS
        assert events == ["first done"]
    assert events == ["first done", "first cancelled"]  # the task stopped: its loop closed cleanly
