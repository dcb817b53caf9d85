"""The gate that lets a few of a process's loops wake on Trigger updates at a time: pure logic, and
loops behind a narrow gate on the in-memory IO (tests/test_cycle.py runs the real one on the IOC)."""

from __future__ import annotations

import queue
import threading
from contextlib import ExitStack
from typing import Any, Callable, List

import pytest
from helpers import wait_for

from epics_bridge.engine.cycle import Loop
from epics_bridge.engine.gate import Gate
from epics_bridge.engine.hooks import Hooks
from epics_bridge.memory_io import MemoryIO
from epics_bridge.registry import Registry
from epics_bridge.status import TaskStatus
from epics_bridge.task import Task


class Finished(Hooks):
    def __init__(self) -> None:
        self.done: queue.SimpleQueue = queue.SimpleQueue()

    def cycle_finished(self, task: Task, status: TaskStatus, duration: float) -> None:
        self.done.put((task.name, status))


def _loop(name: str, gate: Gate, hooks: Hooks, func: Callable[[Any], object] = lambda t: None) -> Loop:
    prefix = f"GATE:{name}:"
    io = MemoryIO({prefix + n: 0 for n in ("Trigger", "Heartbeat", "Busy", "TaskStatus", "TaskDuration")})
    loop = Loop(Registry.make(func, prefix=prefix, name=name), io, hooks, gate=gate)
    loop.start()
    return loop


def _trigger(loop: Loop) -> None:
    loop.io.set(loop.task.pvs.trigger, 1)  # type: ignore[attr-defined]


def _stopped(loop: Loop) -> None:
    loop.stop()
    loop.thread.join(2.0)
    assert not loop.thread.is_alive()


def test_wake_ups_beyond_the_width_wait_and_go_in_order_as_places_come_back():
    gate, delivered = Gate(width=2), []
    drains = [lambda: None for _ in range(4)]
    for drain in drains:
        gate.wake(delivered.append, drain)
    assert delivered == drains[:2]
    gate.leave()
    assert delivered == drains[:3]
    gate.leave()
    gate.leave()
    gate.leave()  # every place free again: the next wake-up goes at once
    assert delivered == drains
    extra = lambda: None  # noqa: E731
    gate.wake(delivered.append, extra)
    assert delivered[-1] is extra


@pytest.mark.parametrize("again", [False, True], ids=["one request", "a second request mid-cycle"])
def test_a_slow_cycle_never_keeps_another_task_waiting_at_a_gate_of_one(again: bool) -> None:
    """A cycle holds no place; nor does a loop woken while it runs one (a second request to a slow
    task): it is not asleep, so the task beside it is served at once."""
    gate, finished, release = Gate(width=1), Finished(), threading.Event()
    entered = threading.Event()

    def slow(t: Any) -> None:
        entered.set()
        release.wait(5.0)

    with ExitStack() as stack:
        long_one = _loop("long", gate, finished, slow)
        stack.callback(_stopped, long_one)
        stack.callback(release.set)
        quick = _loop("quick", gate, finished)
        stack.callback(_stopped, quick)
        wait_for(lambda: long_one.serving and quick.serving, 2.0, what="both loops serving")
        _trigger(long_one)
        assert entered.wait(2.0)
        if again:
            _trigger(long_one)
        _trigger(quick)
        assert finished.done.get(timeout=2.0) == ("quick", TaskStatus.SUCCESS)
        release.set()
        assert finished.done.get(timeout=2.0) == ("long", TaskStatus.SUCCESS)


def test_many_loops_triggered_at_once_through_one_place_each_run_once():
    gate, finished = Gate(width=1), Finished()
    with ExitStack() as stack:
        loops = [_loop(f"t{i}", gate, finished) for i in range(20)]
        for loop in loops:
            stack.callback(_stopped, loop)
        for loop in loops:
            _trigger(loop)
        done: List[str] = [finished.done.get(timeout=5.0)[0] for _ in loops]
        assert sorted(done) == sorted(loop.task.name for loop in loops)
        assert finished.done.empty()
        assert all(loop.io.values[loop.task.pvs.trigger] == 0 for loop in loops)  # type: ignore[attr-defined]


def test_a_place_handed_to_a_loop_that_has_ended_goes_back_to_the_gate():
    gate, finished = Gate(width=1), Finished()
    ended = _loop("ended", gate, finished)
    _stopped(ended)
    # a wake-up that waited at the gate while the loop stopped, delivered now
    gate.wake(ended._deliver, lambda: None)
    with ExitStack() as stack:
        after = _loop("after", gate, finished)
        stack.callback(_stopped, after)
        _trigger(after)
        assert finished.done.get(timeout=2.0) == ("after", TaskStatus.SUCCESS)
