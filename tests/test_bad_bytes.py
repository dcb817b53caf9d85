"""Bad bytes are data, not failures, on a real IOC: a task that logs lone surrogates (undecodable
bytes from a device) and control characters has those lines, escaped, in its file and on its log
PVs, and its neighbour's lines keep being published; a string record holding bytes that are not
UTF-8 reads as text with replacement characters."""

from __future__ import annotations

import pytest
from helpers import client_for, daemon, read, ready_trigger, wait_for, write_tasks

from epics_bridge import TaskStatus
from epics_bridge.io import BridgeIO
from epics_bridge.ioc.softioc import Database, db_dir

BAD, GOOD = "BB:BAD:", "BB:GOOD:"
PUBLISHING = "log PVs: publishing INFO and above"
TASKS = f"""
from epics_bridge import bridge


@bridge.task(prefix="{BAD}", name="bad")
def bad(t):
    t.log.info("raw ok" + "\\udcff" + "bad" + "\\x00" + "end")
    t.log.warning("from the device: {{}}", b"\\xfe\\x01".decode("utf-8", errors="surrogateescape"))


@bridge.task(prefix="{GOOD}", name="good")
def good(t):
    t.log.info("good line after the bad one")
"""
#: What the lines above look like once escaped (the file and the PVs show the same text).
ESCAPED_INFO = r"raw ok\udcffbad\x00end"
ESCAPED_WARNING = r"from the device: \udcfe\x01"


def test_a_task_logging_bad_bytes_shows_them_escaped_and_its_neighbour_keeps_publishing(make_ioc, tmp_path):
    logs = [Database(db_dir() / "bridge-logs.db", {"P": prefix}) for prefix in (BAD, GOOD)]
    ioc = make_ioc(BAD, GOOD, extra=logs)
    folder = write_tasks(tmp_path / "tasks", TASKS, "both.py").parent
    ctx = client_for(ioc.client_env)
    with daemon([folder], ioc.client_env, tmp_path) as d:
        for name in ("bad", "good"):
            wait_for(lambda name=name: PUBLISHING in d.log(name), timeout=30, what=f"{name}'s log PVs")
        for prefix in (BAD, GOOD):  # one worker: one publisher for both tasks
            trigger = ready_trigger(ctx, prefix)
            assert trigger.cycle(timeout=10) == TaskStatus.SUCCESS
            trigger.close()
        wait_for(lambda: ESCAPED_INFO in read(ctx, BAD + "InfoLog"), what="the escaped line on InfoLog")
        wait_for(lambda: ESCAPED_WARNING in read(ctx, BAD + "WarningLog"), what="the escaped line on WarningLog")
        wait_for(lambda: "good line after the bad one" in read(ctx, GOOD + "InfoLog"), what="the neighbour's line")
        wait_for(lambda: ESCAPED_WARNING in d.log("bad"), what="the lines in the task's file")
        bad_log, stderr = d.log("bad"), d.stderr
    ctx.close()
    assert ESCAPED_INFO in bad_log
    assert "publisher failed" not in stderr and "Logging error" not in stderr, stderr[-3000:]


def test_a_string_that_is_not_utf8_reads_as_text_with_replacement(make_ioc, tmp_path):
    record = tmp_path / "odd.db"
    record.write_text('record(stringin, "BB:ODD") {\n    field(VAL, "ok\\xffbad\\xc3")\n}\n')
    ioc = make_ioc(extra=[Database(record, {})])
    io = BridgeIO(client_for(ioc.client_env), timeout=5)
    try:
        assert io.get(["BB:ODD"]) == {"BB:ODD": "ok\ufffdbad\ufffd"}
    finally:
        io.close()


def test_a_string_array_that_is_not_utf8_reads_each_element_with_replacement(make_ioc, tmp_path):
    record = tmp_path / "odds.db"
    record.write_text('record(waveform, "BB:ODDS") {\n    field(FTVL, "STRING")\n    field(NELM, "4")\n}\n')
    ioc = make_ioc(extra=[Database(record, {})])
    ctx = client_for(ioc.client_env)
    io = BridgeIO(ctx, timeout=5)
    try:
        ctx.put("BB:ODDS", [b"ok", b"\xffbad", b'caf\xc3\xa9 "q"', b""], timeout=5)
        with pytest.raises(UnicodeDecodeError):  # what p4p itself makes of it
            ctx.get("BB:ODDS", timeout=5)["value"]
        assert io.get(["BB:ODDS"]) == {"BB:ODDS": ["ok", "\ufffdbad", 'café "q"', ""]}
    finally:
        io.close()
        ctx.close()
