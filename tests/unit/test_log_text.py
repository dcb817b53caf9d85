"""A log line is data whatever it holds: escaped where a file, a terminal or a PV could not show it,
and one line that cannot be turned into text costs that line only, never the other lines."""

from __future__ import annotations

from loguru import logger

from epics_bridge import Registry
from epics_bridge.observe.logpvs import LogPVs
from epics_bridge.observe.logs import visible


def test_visible_escapes_controls_and_lone_surrogates_and_keeps_the_rest():
    assert visible("a\x00b\udcffc\x7fd\x1be\rf") == r"a\x00b\udcffc\x7fd\x1be\x0df"
    assert visible("tab\tand\nnewline, µ, 漢, 🙂") == "tab\tand\nnewline, µ, 漢, 🙂"


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("this exception cannot be shown")


def test_a_line_that_cannot_be_shown_on_the_log_pvs_is_skipped_and_said_once(caplog_loguru):
    reg = Registry()
    for name in ("odd", "neighbour"):
        reg.task(lambda t: None, prefix=f"UNIT:{name}:", name=name)
    publisher = LogPVs(reg.tasks)
    try:
        odd, neighbour = (logger.bind(task=name) for name in ("odd", "neighbour"))
        for _ in range(2):
            try:
                raise Unprintable()
            except Unprintable:
                odd.exception("a failure whose text cannot be had")
        odd.info("odd \x00 line")
        neighbour.info("neighbour line")
        publisher._collect()
    finally:
        publisher.close()
    lines = {name: logs.lines for name, logs in publisher._logs.items()}
    assert [line.split(" INFO ", 1)[1] for line in lines["odd"]["InfoLog"]] == [r"odd \x00 line"]
    assert not lines["odd"]["ErrorLog"]
    assert [line.split(" INFO ", 1)[1] for line in lines["neighbour"]["InfoLog"]] == ["neighbour line"]
    assert publisher.unshown == 2
    said = [line for line in caplog_loguru.lines if "could not be shown on the log PVs" in line]
    assert len(said) == 1 and "this exception cannot be shown" in said[0], said
