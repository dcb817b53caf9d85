"""An operator (or a script) toggling LogLevel is told what is published, but cannot flood the log:
a task's first LEVEL_NOTES changes in a LEVEL_NOTE_WINDOW are said at INFO, the rest at DEBUG."""

from __future__ import annotations

import time
from typing import List

from loguru import logger

from epics_bridge.observe.logpvs import LEVEL_NOTE_WINDOW, LEVEL_NOTES, LogPVs
from epics_bridge.registry import Registry


def test_many_toggles_say_info_a_few_times_per_window():
    task = Registry.make(lambda t: None, prefix="LVL:", name="toggled")
    publisher = LogPVs([task])
    said: List[str] = []
    sink = logger.add(
        lambda m: said.append(m.record["level"].name), format="{message}", filter=lambda r: "publishing" in r["message"]
    )
    started = time.monotonic()
    try:
        logs = publisher._logs["toggled"]
        for n in range(200):
            publisher._apply_level(logs, n % 2)  # DEBUG, INFO, DEBUG ...
    finally:
        logger.remove(sink)
        publisher.close()
    windows = int((time.monotonic() - started) // LEVEL_NOTE_WINDOW) + 1
    assert said[:LEVEL_NOTES] == ["INFO"] * LEVEL_NOTES, "the first changes are said"
    assert said.count("INFO") <= LEVEL_NOTES * windows and len(said) == 200
    assert logs.level == 20  # the last choice holds
