"""Bad or unusual values at run time end one cycle with a TaskStatus, never the daemon.

Each task does the odd thing on its first call and a plain read on its second, so every test also
shows that the cycle after the failure works (on the session IOC, tasks run in this process).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator, List

import numpy as np
import pytest
from conftest import VALUES
from helpers import read, ready_trigger, running, wait_heartbeat
from loguru import logger

from epics_bridge import PVError, PVRejectedError, PVTimeoutError, Registry, TaskStatus

PVS = {
    "double": "{v}Double",
    "scratch": "{v}Scratch",
    "double_out": "{v}DoubleOut",
    "wave": "{v}Wave",
    "long": "{v}Long",
    "ghost": "Ghost",
}


@pytest.fixture
def log_lines() -> Iterator[List[str]]:
    """Every log line emitted while the test runs."""
    lines: List[str] = []

    def keep(message: Any) -> None:
        record = message.record
        lines.append(f"{record['level'].name} | {record['extra'].get('task', '-')} | {message}")

    sink = logger.add(keep, level="DEBUG", format="{message}\n{exception}")
    yield lines
    logger.remove(sink)


def serve_twice(prefix: str, client, first: Callable[[Any], object]) -> List[int]:
    """Run a task whose first cycle is ``first`` and whose next is a plain read; both TaskStatus values."""
    reg = Registry()
    calls: List[int] = []

    @reg.task(prefix=prefix, pvs=PVS, prefixes={"v": VALUES}, timeout=1.0)
    def odd(t):
        calls.append(1)
        if len(calls) == 1:
            return first(t)
        return isinstance(t.get("long"), int)

    with running(reg.tasks):
        wait_heartbeat(client, prefix)
        trigger = ready_trigger(client, prefix)
        statuses = [trigger.cycle(), trigger.cycle()]
        trigger.close()
    assert len(calls) == 2
    assert statuses[1] == TaskStatus.SUCCESS, "the cycle after the odd one failed"
    return statuses


def test_string_into_an_ai_is_an_io_failure(prefix, client, log_lines):
    raised: List[PVError] = []
    before = read(client, VALUES + "Double")

    def put_text(t):
        try:
            t.put(double="not a number")
        except PVError as exc:
            raised.append(exc)
            raise

    assert serve_twice(prefix, client, put_text)[0] == TaskStatus.IO_FAILURE
    assert isinstance(raised[0], PVRejectedError) and raised[0].pv == VALUES + "Double"
    assert read(client, VALUES + "Double") == before
    assert any(f"cycle failed on PV IO: put failed for {VALUES}Double" in line for line in log_lines)


def test_100000_element_waveform_is_read_and_reduced(prefix, client):
    wave = np.random.default_rng(7).normal(3.0, 2.0, 100_000)
    client.put(VALUES + "Wave", wave)

    def reduce(t):
        values = t.get("wave")
        t.put(double_out=float(np.mean(values)))
        return isinstance(values, np.ndarray) and values.shape == (100_000,)

    assert serve_twice(prefix, client, reduce)[0] == TaskStatus.SUCCESS
    assert read(client, VALUES + "DoubleOut") == pytest.approx(float(np.mean(wave)), rel=1e-12)


def test_nan_and_inf_are_written_and_read_back(prefix, client):
    read_back: List[float] = []

    def non_finite(t):
        for value in (math.nan, math.inf, -math.inf):
            t.put(double_out=value, scratch=-value)
            got = t.get(["double_out", "scratch"])
            read_back.extend([got["double_out"], got["scratch"]])

    assert serve_twice(prefix, client, non_finite)[0] == TaskStatus.SUCCESS
    assert math.isnan(read_back[0]) and math.isnan(read_back[1])
    assert read_back[2:] == [math.inf, -math.inf, -math.inf, math.inf]
    assert read(client, VALUES + "DoubleOut") == -math.inf and read(client, VALUES + "Scratch") == math.inf


def test_unexpected_return_type_is_an_exception_with_a_clear_line(prefix, client, log_lines):
    assert serve_twice(prefix, client, lambda t: "done")[0] == TaskStatus.EXCEPTION
    text = "\n".join(log_lines)
    assert "ERROR | odd | cycle raised an exception" in text
    assert "TypeError: a task must return a TaskStatus, True/False or None, not str 'done'" in text


def test_pv_the_ioc_does_not_serve_is_an_io_failure_naming_it(prefix, client, log_lines):
    raised: List[PVError] = []

    def read_ghost(t):
        try:
            return t.get("ghost")
        except PVError as exc:
            raised.append(exc)
            raise

    assert serve_twice(prefix, client, read_ghost)[0] == TaskStatus.IO_FAILURE
    assert isinstance(raised[0], PVTimeoutError) and raised[0].pv == prefix + "Ghost"
    assert any(f"cycle failed on PV IO: get failed for {prefix}Ghost: timeout" in line for line in log_lines)
