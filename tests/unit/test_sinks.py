"""The never-blocking log sink: a blocked writer costs dropped lines (counted, said once), never a
waiting logger; an orderly stop writes what is pending, within its bound."""

from __future__ import annotations

import threading
import time
from typing import Iterator, List

import pytest
from helpers import reset_logging, wait_for
from loguru import logger

from epics_bridge.sinks import QueuedSink, drain


class Blocked:
    """A writer that blocks until released, as a pipe nobody reads does."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.written: List[str] = []

    def __call__(self, text: str) -> None:
        self.entered.set()
        self.release.wait()
        self.written.append(text)


@pytest.fixture
def notes() -> Iterator[List[str]]:
    """The lines logged while the test runs (the drop notes among them), and no other sink."""
    seen: List[str] = []
    logger.remove()
    logger.add(seen.append, format="{message}")
    yield seen
    reset_logging()


def test_a_blocked_sink_drops_counts_and_says_so_once(notes):
    writer = Blocked()
    sink = QueuedSink("the test sink", writer, size=5)
    sink.write("line 0\n")
    assert writer.entered.wait(5), "the writer took the first line"
    started = time.monotonic()
    for n in range(1, 20):
        sink.write(f"line {n}\n")
    assert time.monotonic() - started < 1.0, "the logging thread never waits"
    # one line is in the writer's hands, five wait in the queue, the rest are dropped
    assert sink.dropped == 14
    writer.release.set()
    wait_for(lambda: len(writer.written) == 6, timeout=5, what="the queued lines written")
    wait_for(lambda: notes, timeout=5, what="the note")
    assert notes == ["14 log line(s) dropped: the test sink was blocked\n"]
    for n in range(3):  # the episode is over: no further note
        sink.write(f"more {n}\n")
    sink.stop()
    assert writer.written[-3:] == ["more 0\n", "more 1\n", "more 2\n"]
    assert notes == ["14 log line(s) dropped: the test sink was blocked\n"]


def test_a_writer_that_raises_loses_that_line_only_and_says_so_once(notes):
    written: List[str] = []

    def write(text: str) -> None:
        if "bad" in text:
            raise OSError("No space left on device")
        written.append(text)

    sink = QueuedSink("the disk", write)
    for text in ("bad 1\n", "bad 2\n", "good\n"):
        sink.write(text)
    sink.stop()
    assert written == ["good\n"]
    assert sink.dropped == 2
    assert notes == ["1 log line(s) dropped: the disk failed (No space left on device)\n"]


def test_stop_writes_what_is_pending_and_gives_up_on_a_blocked_sink_in_time():
    writer = Blocked()
    sink = QueuedSink("the test sink", writer)
    sink.write("pending\n")
    started = time.monotonic()
    sink.stop(timeout=0.3)
    assert 0.25 <= time.monotonic() - started < 2.0, "bounded: the blocked writer is not waited for"
    assert writer.written == []
    writer.release.set()  # the given-up writer may now finish its line, on its own thread
    written: List[str] = []
    healthy = QueuedSink("another sink", written.append)
    for n in range(100):
        healthy.write(f"{n}\n")
    healthy.stop()
    assert written == [f"{n}\n" for n in range(100)], "an orderly stop writes every pending line"


def test_drain_waits_for_a_writing_sink_and_not_for_a_blocked_one():
    blocked_writer, written = Blocked(), []
    blocked = QueuedSink("a blocked sink", blocked_writer)
    healthy = QueuedSink("a healthy sink", lambda text: (time.sleep(0.001), written.append(text)))
    blocked.write("stuck\n")
    assert blocked_writer.entered.wait(5)
    wait_for(lambda: blocked.blocked, timeout=5, what="the writer seen as blocked")
    for n in range(50):
        healthy.write(f"{n}\n")
    started = time.monotonic()
    drain(2.0)
    assert len(written) == 50, "the healthy sink's lines are written before the exit"
    assert time.monotonic() - started < 1.0, "the blocked sink is not waited for"
    blocked_writer.release.set()
    blocked.stop()
    healthy.stop()
