"""Before a task serves, on the in-memory IO: each answer of the handshake round and of the owner
record, and what the loop does with it. The same on the real soft IOC: tests/test_handshake.py."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, List, Optional, Tuple

import pytest
from helpers import wait_for

from epics_bridge.engine import handshake
from epics_bridge.engine.cycle import Loop
from epics_bridge.engine.hooks import Hooks
from epics_bridge.memory_io import MemoryIO
from epics_bridge.registry import Registry
from epics_bridge.task import Task

P = "UNIT:"
STANDARD = {P + "Trigger": 0, P + "Busy": 0, P + "Heartbeat": 0, P + "TaskStatus": 0, P + "TaskDuration": 0.0}


class Recorder(Hooks):
    def __init__(self) -> None:
        self.readiness: List[Tuple[bool, Optional[str]]] = []
        self.cycles = 0

    def ready(self, task: Task, ready: bool, reason: Optional[str]) -> None:
        self.readiness.append((ready, reason))

    def cycle_finished(self, task: Task, status: Any, duration: float) -> None:
        self.cycles += 1


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handshake, "INCOMPLETE_RETRY", 0.02)
    monkeypatch.setattr(handshake, "UNREACHABLE_RETRY", 0.02)


@contextmanager
def looping(io: MemoryIO) -> Iterator[Tuple[Loop, Recorder]]:
    recorder = Recorder()
    loop = Loop(Registry.make(lambda t: None, prefix=P, name="unit", heartbeat_period=0.01), io, recorder)
    loop.start()
    try:
        yield loop, recorder
    finally:
        loop.stop()
        loop.thread.join(2.0)
        assert not loop.thread.is_alive()


def test_a_record_of_the_wrong_kind_is_named_with_what_it_needs(caplog_loguru):
    io = MemoryIO({**STANDARD, P + "TaskStatus": "Success"})  # a stringin where an mbbi belongs
    with looping(io) as (loop, recorder):
        io.set(P + "Trigger", 1)
        wait_for(lambda: caplog_loguru.text.count("answers only part of the handshake") >= 3, 2.0)
        assert not loop.serving and not loop.pulsing and recorder.cycles == 0
    errors = [line for line in caplog_loguru.lines if line.startswith("ERROR")]
    assert len(errors) == 1
    assert "wrong kind: TaskStatus (UNIT:TaskStatus is a string, needs an mbbi or integer record)" in errors[0]
    assert recorder.readiness == [(False, "handshake incomplete: TaskStatus")]


def test_nothing_answering_is_the_ioc_unreachable_and_the_heartbeat_keeps_trying(caplog_loguru):
    io = MemoryIO({})
    with looping(io) as (loop, recorder):
        wait_for(lambda: recorder.readiness, 2.0)
        assert recorder.readiness == [(False, "IOC unreachable")] and loop.pulsing
        io.values.update(STANDARD)
        wait_for(lambda: recorder.readiness[-1] == (True, None), 2.0, what="served once the IOC answers")
    assert "none of the 5 handshake PVs answers (IOC unreachable or not running)" in caplog_loguru.text
    assert "answers only part" not in caplog_loguru.text


def test_a_live_foreign_owner_is_waited_for_and_a_stale_one_taken_over(caplog_loguru):
    io = MemoryIO({**STANDARD, P + "Owner": "other:7:2026-01-01T00:00:00Z", P + "HeartbeatAge": 0.0})
    with looping(io) as (loop, recorder):
        wait_for(lambda: recorder.readiness, 2.0)
        assert recorder.readiness[0] == (
            False,
            f"prefix served by other:7 (this is {':'.join(loop.ownership.token.split(':')[:2])})",
        )
        assert not loop.pulsing and io.values[P + "Owner"].startswith("other:7:")
        io.set(P + "HeartbeatAge", 6.0)  # silent past the limit (5 s): that daemon is gone
        wait_for(lambda: recorder.readiness[-1] == (True, None), 3.0, what="the prefix taken over")
        assert io.values[P + "Owner"] == loop.ownership.token and loop.pulsing
    assert "another daemon serves prefix UNIT:" in caplog_loguru.text
    assert (
        "taking over: UNIT:Owner names other:7:2026-01-01T00:00:00Z, whose heartbeat has been silent for 6 s"
        in caplog_loguru.text
    )
    assert io.values[P + "Owner"] == ""  # released at the stop
