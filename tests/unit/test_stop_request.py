"""A stop asked for from a signal handler. Python runs a handler in the main thread between any two
lines that thread runs, including the lines of the runner's own wait for that request; whatever
lock the wait holds there, a handler that needs it waits for its own thread for ever."""

from __future__ import annotations

import sys
import threading
from types import FrameType
from typing import Any, Callable, List, Optional

import pytest

from epics_bridge.engine import heap
from epics_bridge.engine.runner import Runner
from epics_bridge.registry import Registry

WAIT = 0.01  # s: the wait times out, so the lines after it (where a lock is taken back) run too


def _runner() -> Runner:
    return Runner([Registry.make(lambda t: None, prefix="STOP:", name="stop")], hooks=(), stop_grace=0.1)


def _wait_tracing(runner: Runner, on_line: Callable[[int], None]) -> threading.Thread:
    """``runner.wait(WAIT)`` in a thread of its own that calls ``on_line(n)`` before its n-th line,
    as a signal handler could run there (a daemon thread: one that deadlocks is left behind)."""
    count = [0]

    def tracer(frame: FrameType, event: str, arg: Any) -> Optional[Callable[..., Any]]:
        if event == "line":
            count[0] += 1
            on_line(count[0])
        return tracer

    def run() -> None:
        sys.settrace(tracer)
        try:
            runner.wait(WAIT)
        finally:
            sys.settrace(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_stop_asked_before_any_line_of_the_wait_never_deadlocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "freeze", lambda: None)  # the runner never started: nothing to freeze
    lines: List[int] = []
    dry = _wait_tracing(_runner(), lines.append)
    dry.join(5.0)
    assert not dry.is_alive() and lines, "the wait alone did not return"
    for n in range(1, len(lines) + 1):
        runner = _runner()
        thread = _wait_tracing(runner, lambda i, n=n, runner=runner: runner.stop() if i == n else None)
        thread.join(5.0)
        assert not thread.is_alive(), f"stop() asked before line {n} of {len(lines)} of the wait deadlocked"
        assert runner.wait(5.0) == 0, f"stop() asked before line {n} was lost"
