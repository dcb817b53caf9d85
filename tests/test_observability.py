"""Observability on a real IOC: per-task log files, log PVs with a live LogLevel, Prometheus metrics.

In-process tests run the engine (Runner) with the observers the launcher would add; the last tests
run ``python -m epics_bridge`` as a subprocess, as an operator would, including two tasks with log
files and metrics. Tasks that need log records or two prefixes run on this module's own IOC; the
others use the session IOC.
"""

from __future__ import annotations

import re
import signal
import socket
import threading
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import pytest
from helpers import (
    Trigger,
    client_for,
    daemon,
    read,
    reset_logging,
    running,
    wait_for,
    wait_heartbeat,
    write_tasks,
)
from loguru import logger
from prometheus_client.parser import text_string_to_metric_families

from epics_bridge import Registry, TaskStatus
from epics_bridge.exits import EXIT_CONFIG, EXIT_OK, EXIT_STUCK
from epics_bridge.ioc.softioc import Database, SoftIOC, db_dir, free_port
from epics_bridge.observe.logpvs import PUT_TIMEOUT, QUEUE_SIZE, LogPVs
from epics_bridge.observe.logs import PROCESS_LOG, configure, task_log
from epics_bridge.observe.metrics import Metrics
from epics_bridge.service.options import Options
from epics_bridge.task import Task

#: Prefixes of this module's IOC; LOGS and LEVEL also have db/bridge-logs.db (LINES lines).
FILES1, FILES2, LOGS, LEVEL, DONE1, DONE2 = "OBS:F1:", "OBS:F2:", "OBS:L1:", "OBS:L2:", "OBS:D1:", "OBS:D2:"
LINES = 5
TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}"
#: A line of a log file: time | level | task | message.
LINE = re.compile(rf"^{TIME} \| (?P<level>[A-Z]+) *\| (?P<task>\S+) \| (?P<message>.*)$")


@pytest.fixture(scope="module")
def obs_ioc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftIOC]:
    bridge, logs = db_dir() / "bridge.db", db_dir() / "bridge-logs.db"
    dbs = [Database(bridge, {"P": p}) for p in (FILES1, FILES2, LOGS, LEVEL, DONE1, DONE2)]
    dbs += [Database(logs, {"P": p, "N": str(LINES)}) for p in (LOGS, LEVEL)]
    with SoftIOC(dbs, output=tmp_path_factory.mktemp("obs-ioc") / "ioc.log") as soft_ioc:
        yield soft_ioc


@pytest.fixture
def on_obs_ioc(obs_ioc: SoftIOC, monkeypatch: pytest.MonkeyPatch):
    """Point this process's new PVA contexts at the module's IOC; a client for the test."""
    for key, value in obs_ioc.client_env.items():
        monkeypatch.setenv(key, value)
    ctx = client_for(obs_ioc.client_env)
    yield ctx
    ctx.close()


@contextmanager
def observed(
    tasks: List[Task],
    log_dir: Path,
    *,
    log_pvs: bool = False,
    log_pv_queue: int = QUEUE_SIZE,
    metrics_port: Optional[int] = None,
) -> Iterator[None]:
    """Run ``tasks`` in this process with the launcher's logging, and log PVs / metrics if asked."""
    configure(tasks, replace(Options.of({"log_dir": log_dir}).log_config(), console=False))
    observers: list = []
    try:
        if metrics_port is not None:
            metrics = Metrics(tasks)
            metrics.serve(metrics_port)
            observers.append(metrics)
        if log_pvs:
            observers.append(LogPVs(tasks, queue_size=log_pv_queue))
        with running(tasks, hooks=observers):
            yield
    finally:
        for observer in observers:
            observer.close()
        reset_logging()


def lines(path: Path) -> List[Dict[str, str]]:
    """The log lines of a file (continuation lines of a traceback are not lines)."""
    text = path.read_text() if path.exists() else ""
    return [m.groupdict() for m in map(LINE.match, text.splitlines()) if m]


def wait_log_pvs(task_file: Path, level: str = "INFO") -> None:
    """Until the task follows its LogLevel PV (so later lines are the newest on its log PVs)."""
    wait_for(
        lambda: f"log PVs: publishing {level} and above" in task_file.read_text(),
        what=f"{task_file.stem} to follow its LogLevel ({level})",
    )


def scripted(reg: Registry, prefix: str, name: str, **options) -> List[Callable]:
    """A task whose every cycle runs the next step of the returned list (a step gets ``t``)."""
    steps: List[Callable] = []

    def body(t):
        return steps.pop(0)(t)

    reg.task(body, prefix=prefix, name=name, **options)
    return steps


# -- log files -------------------------------------------------------------------------------------
def test_each_task_file_holds_its_own_lines_and_its_summary(on_obs_ioc, tmp_path):
    reg = Registry()

    @reg.task(prefix=FILES1)
    def one(t):
        t.log.info("marker of one")
        logger.info("plain loguru line in one")  # not bound: credited to the task whose thread logs it

    @reg.task(prefix=FILES2)
    def two(t):
        t.log.warning("marker of two")

    with observed(reg.tasks, tmp_path):
        assert Trigger(on_obs_ioc, FILES1).cycle() == TaskStatus.SUCCESS
        assert Trigger(on_obs_ioc, FILES2).cycle() == TaskStatus.SUCCESS

    one_lines, two_lines = lines(task_log(tmp_path, "one")), lines(task_log(tmp_path, "two"))
    process = lines(tmp_path / PROCESS_LOG)
    assert {"level": "INFO", "task": "one", "message": "marker of one"} in one_lines
    assert {"level": "INFO", "task": "one", "message": "plain loguru line in one"} in one_lines
    assert {"level": "WARNING", "task": "two", "message": "marker of two"} in two_lines
    assert {line["task"] for line in one_lines} == {"one"}
    assert {line["task"] for line in two_lines} == {"two"}
    assert {line["task"] for line in process} == {"-"}
    assert any(line["message"] == f"  trigger          -> {FILES1}Trigger" for line in one_lines)
    assert any(line["message"].startswith("task 'two' ") and FILES2 in line["message"] for line in two_lines)
    process_messages = [line["message"] for line in process]
    assert "running 2 task(s)" in " ".join(process_messages) and "stopped" in process_messages


def test_raised_exception_traceback_lands_in_the_task_file(prefix, client, tmp_path):
    reg = Registry()

    @reg.task(prefix=prefix)
    def fragile(t):
        raise KeyError("sensor-42 missing")

    with observed(reg.tasks, tmp_path):
        assert Trigger(client, prefix).cycle() == TaskStatus.EXCEPTION

    text = task_log(tmp_path, "fragile").read_text()
    assert "| ERROR    | fragile | cycle raised an exception\nTraceback (most recent call last):" in text
    assert 'raise KeyError("sensor-42 missing")' in text
    assert "KeyError: 'sensor-42 missing'" in text
    assert "sensor-42" not in (tmp_path / PROCESS_LOG).read_text()


# -- log PVs ---------------------------------------------------------------------------------------
def test_log_pvs_show_recent_lines_newest_last(on_obs_ioc, tmp_path):
    reg = Registry()

    @reg.task(prefix=LOGS)
    def chatty(t):
        for n in range(LINES + 3):
            t.log.info("info line {}", n)
        t.log.warning("a warning line")
        return 1 / 0

    with observed(reg.tasks, tmp_path, log_pvs=True):
        wait_log_pvs(task_log(tmp_path, "chatty"))
        assert Trigger(on_obs_ioc, LOGS).cycle() == TaskStatus.EXCEPTION
        error = wait_for(
            lambda: "ZeroDivisionError" in read(on_obs_ioc, LOGS + "ErrorLog") and read(on_obs_ioc, LOGS + "ErrorLog"),
            what="the exception in ErrorLog",
        )
        info = wait_for(
            lambda: "info line 7" in read(on_obs_ioc, LOGS + "InfoLog") and read(on_obs_ioc, LOGS + "InfoLog"),
            what="the last line in InfoLog",
        )
        warning = wait_for(
            lambda: (
                "cycle status EXCEPTION" in read(on_obs_ioc, LOGS + "WarningLog")
                and read(on_obs_ioc, LOGS + "WarningLog")
            ),
            what="the status change in WarningLog",
        )

    info_lines = info.split("\n")
    assert all(re.match(f"{TIME} INFO info line ", line) for line in info_lines)
    newest = [f"info line {n}" for n in range(3, 3 + LINES)]  # of 0 .. LINES + 2, oldest first
    assert [line.split(" INFO ", 1)[1] for line in info_lines] == newest
    assert warning.split("\n")[0].endswith("WARNING a warning line")
    assert "ERROR cycle raised an exception [ZeroDivisionError: division by zero]" in error


def test_log_level_pv_filters_the_log_pvs_at_run_time(on_obs_ioc, tmp_path):
    reg = Registry()
    steps = scripted(reg, LEVEL, "tunable")
    logs = {kind: LEVEL + kind for kind in ("InfoLog", "ErrorLog")}
    task_file = task_log(tmp_path, "tunable")

    def cycle(*step_lines: Tuple[str, str]) -> None:
        def step(t):
            for level, text in step_lines:
                t.log.log(level, text)

        steps.append(step)
        assert Trigger(on_obs_ioc, LEVEL).cycle() == TaskStatus.SUCCESS

    def shows(kind: str, text: str) -> None:
        wait_for(lambda: text in read(on_obs_ioc, logs[kind]), what=f"{text!r} in {logs[kind]}")

    def set_level(name: str) -> None:
        on_obs_ioc.put(LEVEL + "LogLevel", name)
        wait_log_pvs(task_file, name)

    with observed(reg.tasks, tmp_path, log_pvs=True):
        wait_log_pvs(task_file)
        cycle(("INFO", "seen at INFO"))
        shows("InfoLog", "seen at INFO")

        set_level("ERROR")
        cycle(("INFO", "silenced info"), ("ERROR", "first error"))
        shows("ErrorLog", "first error")
        cycle(("ERROR", "second error"))  # published after anything the previous cycle queued
        shows("ErrorLog", "second error")
        assert "silenced info" not in read(on_obs_ioc, logs["InfoLog"])

        set_level("DEBUG")  # below the files' INFO: the log PVs still get DEBUG lines
        cycle(("DEBUG", "debug detail"), ("INFO", "info again"))
        shows("InfoLog", "info again")
        assert "debug detail" in read(on_obs_ioc, logs["InfoLog"])

    assert "silenced info" in task_file.read_text()  # the file keeps its own level
    assert "debug detail" not in task_file.read_text()


def test_a_frozen_ioc_never_blocks_logging_and_drops_the_oldest_lines(make_ioc, monkeypatch, tmp_path):
    frozen = "OBS:FZ:"
    soft_ioc = make_ioc(frozen, extra=[Database(db_dir() / "bridge-logs.db", {"P": frozen, "N": str(LINES)})])
    for key, value in soft_ioc.client_env.items():
        monkeypatch.setenv(key, value)
    reg = Registry()
    reg.task(lambda t: None, prefix=frozen, name="patient", max_stuck_cycles=10_000)
    log = logger.bind(task="patient")
    ctx = client_for(soft_ioc.client_env)
    with observed(reg.tasks, tmp_path, log_pvs=True, log_pv_queue=20):
        wait_log_pvs(task_log(tmp_path, "patient"))
        soft_ioc.freeze()
        try:
            log.info("first line while frozen")  # the publisher now waits for the IOC
            started = time.monotonic()
            for n in range(100):
                log.info("burst {}", n)
            took = time.monotonic() - started
        finally:
            soft_ioc.thaw()
        assert took < PUT_TIMEOUT, "logging waited for the IOC"
        # the newest line survives a full queue: the oldest were dropped
        wait_for(lambda: "burst 99" in read(ctx, frozen + "InfoLog"), timeout=30, what="the newest line")
        dropped = re.compile(r"(\d+) log line\(s\) not published")
        warning = wait_for(
            lambda: dropped.search(read(ctx, frozen + "WarningLog")), timeout=30, what="the count of dropped lines"
        )
    ctx.close()
    assert int(warning.group(1)) > 0  # how many the publisher took before it blocked varies
    in_file = [line["message"] for line in lines(task_log(tmp_path, "patient"))]
    assert [m for m in in_file if m.startswith("burst ")] == [f"burst {n}" for n in range(100)]


def test_ioc_without_log_records_gives_one_warning_and_nothing_more(prefix, client, tmp_path):
    reg = Registry()

    @reg.task(prefix=prefix)
    def plain(t):
        t.log.info("cycle ran")

    task_file = task_log(tmp_path, "plain")
    with observed(reg.tasks, tmp_path, log_pvs=True):
        wait_for(lambda: "no log PVs" in task_file.read_text(), what="the warning about missing log PVs")
        trig = Trigger(client, prefix)
        for _ in range(3):
            assert trig.cycle() == TaskStatus.SUCCESS
        trig.close()
        wait_heartbeat(client, prefix, pulses=2)

    about_log_pvs = [line for line in lines(task_file) if "log PV" in line["message"]]
    assert len(about_log_pvs) == 1, about_log_pvs
    assert about_log_pvs[0]["level"] == "WARNING" and f"{prefix}InfoLog" in about_log_pvs[0]["message"]
    assert [line["message"] for line in lines(task_file)].count("cycle ran") == 3


def test_a_log_pv_the_ioc_lacks_costs_one_warning_and_its_lines_only(make_ioc, monkeypatch, tmp_path):
    """A kind's PV is asked for on its first line: an IOC with InfoLog but no WarningLog (an edited
    copy of bridge-logs.db) shows the INFO lines, and the first warning says, once, where warnings go."""
    partial = "OBS:PART:"
    records = re.findall(r"record\(.*?\n\}\n", (db_dir() / "bridge-logs.db").read_text(), re.S)
    kept = [r for r in records if "WarningLog" not in r and "ErrorLog" not in r]
    (tmp_path / "partial-logs.db").write_text("\n".join(kept))
    soft_ioc = make_ioc(partial, extra=[Database(tmp_path / "partial-logs.db", {"P": partial, "N": str(LINES)})])
    for key, value in soft_ioc.client_env.items():
        monkeypatch.setenv(key, value)
    reg = Registry()
    steps = scripted(reg, partial, "partial")
    steps += [lambda t, n=n: (t.log.info(f"info {n}"), t.log.warning(f"warning {n}")) and None for n in range(3)]
    task_file = task_log(tmp_path, "partial")
    ctx = client_for(soft_ioc.client_env)
    with observed(reg.tasks, tmp_path, log_pvs=True):
        wait_log_pvs(task_file)
        trig = Trigger(ctx, partial)
        for n in range(3):
            assert trig.cycle() == TaskStatus.SUCCESS
            wait_for(lambda n=n: f"info {n}" in read(ctx, partial + "InfoLog"), what=f"info {n} on InfoLog")
        trig.close()
    ctx.close()
    said = [line for line in lines(task_file) if "does not serve" in line["message"]]
    assert len(said) == 1 and f"{partial}WarningLog" in said[0]["message"], said
    assert [line["message"] for line in lines(task_file) if line["level"] == "WARNING"].count("warning 2") == 1


# -- metrics ---------------------------------------------------------------------------------------
Samples = Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    """GET /metrics on loopback (no proxy) and index every sample by name and labels."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    text = opener.open(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> Optional[float]:
    return samples.get((name, tuple(sorted(labels.items()))))


def cycles(samples: Samples, task: str) -> Dict[str, float]:
    return {
        status.name: sample(samples, "epics_bridge_cycles_total", task=task, status=status.name)
        for status in TaskStatus
    }


def test_metrics_count_cycles_by_status(prefix, client, tmp_path):
    reg = Registry()
    results: List[Callable] = [
        lambda: TaskStatus.SUCCESS,
        lambda: None,
        lambda: False,
        lambda: 1 / 0,
        lambda: TaskStatus.SKIPPED,
    ]

    @reg.task(prefix=prefix)
    def counted(t):
        return results.pop(0)()

    port = free_port()
    trig = Trigger(client, prefix)
    with observed(reg.tasks, tmp_path, metrics_port=port):
        assert sample(scrape(port), "epics_bridge_cycles_total", task="counted", status="SUCCESS") == 0
        wait_heartbeat(client, prefix)
        before = time.time()
        statuses = [trig.cycle() for _ in range(5)]
        after = time.time()
        samples = scrape(port)
    trig.close()

    assert statuses == [0, 0, 1, 3, 4]
    assert cycles(samples, "counted") == {
        "SUCCESS": 2,
        "LOGIC_FAILURE": 1,
        "IO_FAILURE": 0,
        "EXCEPTION": 1,
        "SKIPPED": 1,
    }
    assert sample(samples, "epics_bridge_cycle_duration_seconds_count", task="counted") == 5
    assert sample(samples, "epics_bridge_heartbeat_ok", task="counted") == 1
    assert sample(samples, "epics_bridge_stuck_periods", task="counted") == 0
    assert before <= sample(samples, "epics_bridge_last_cycle_timestamp_seconds", task="counted") <= after


def test_metrics_follow_a_stalled_loop(prefix, client, tmp_path):
    """A cycle longer than stall_timeout: stuck periods count up and the heartbeat is not ok,
    then both recover when it returns."""
    release = threading.Event()
    reg = Registry()

    @reg.task(prefix=prefix, heartbeat_period=0.2, stall_timeout=0.5, max_stuck_cycles=10_000)
    def slow(t):
        release.wait(60)

    port = free_port()
    with observed(reg.tasks, tmp_path, metrics_port=port):
        wait_heartbeat(client, prefix)
        client.put(prefix + "Trigger", 1)
        try:
            wait_for(
                lambda: (sample(scrape(port), "epics_bridge_stuck_periods", task="slow") or 0) >= 2,
                timeout=20,
                what="two stuck periods",
            )
            assert sample(scrape(port), "epics_bridge_heartbeat_ok", task="slow") == 0
        finally:
            release.set()
        wait_for(
            lambda: sample(scrape(port), "epics_bridge_stuck_periods", task="slow") == 0,
            timeout=20,
            what="the stuck count to reset",
        )
        assert sample(scrape(port), "epics_bridge_heartbeat_ok", task="slow") == 1
        assert sample(scrape(port), "epics_bridge_cycles_total", task="slow", status="SUCCESS") == 1


# -- the launcher, as an operator runs it -----------------------------------------------------------
def test_done_when_two_tasks_logs_and_metrics(obs_ioc, tmp_path):
    """Two tasks with --log-dir logs --metrics-port N; one logs, one raises."""
    source = write_tasks(
        tmp_path,
        f"""
        from epics_bridge import bridge

        @bridge.task(prefix="{DONE1}")
        def talker(t):
            t.log.info("talker says hello")

        @bridge.task(prefix="{DONE2}")
        def crasher(t):
            raise RuntimeError("crasher broke down")
    """,
    )
    port = free_port()
    ctx = client_for(obs_ioc.client_env)
    with daemon([source, "--log-dir", "logs", "--metrics-port", port], obs_ioc.client_env, tmp_path) as d:
        wait_heartbeat(ctx, DONE1, timeout=30)
        wait_heartbeat(ctx, DONE2, timeout=30)
        assert Trigger(ctx, DONE1).cycle() == TaskStatus.SUCCESS
        assert Trigger(ctx, DONE2).cycle() == TaskStatus.EXCEPTION
        samples = scrape(port)
        d.signal(signal.SIGTERM)
        assert d.wait_exit(20) == EXIT_OK
    ctx.close()

    talker, crasher = d.log("talker"), d.log("crasher")
    assert "| INFO     | talker | talker says hello" in talker
    assert "talker says hello" not in crasher and "talker says hello" not in d.log("epics-bridge")
    assert "| ERROR    | crasher | cycle raised an exception\nTraceback (most recent call last):" in crasher
    assert 'raise RuntimeError("crasher broke down")' in crasher
    assert "RuntimeError: crasher broke down" in crasher and "crasher broke down" not in talker
    assert cycles(samples, "talker") == {
        "SUCCESS": 1,
        "LOGIC_FAILURE": 0,
        "IO_FAILURE": 0,
        "EXCEPTION": 0,
        "SKIPPED": 0,
    }
    assert cycles(samples, "crasher") == {
        "SUCCESS": 0,
        "LOGIC_FAILURE": 0,
        "IO_FAILURE": 0,
        "EXCEPTION": 1,
        "SKIPPED": 0,
    }
    assert "stopped" in d.log("epics-bridge")


def test_metrics_port_in_use_is_a_config_error(ioc, prefix, tmp_path):
    source = write_tasks(
        tmp_path,
        f"""
        from epics_bridge import bridge

        @bridge.task(prefix="{prefix}")
        def idle(t):
            pass
    """,
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with daemon([source, "--metrics-port", port], ioc.client_env, tmp_path) as d:
            assert d.wait_exit(30) == EXIT_CONFIG
    assert f"--metrics-port {port}" in d.stderr and "nothing started" in d.stderr
    assert "running" not in d.log("epics-bridge")
    assert d.log("idle") == ""


def test_watchdog_lines_go_to_the_task_file_and_the_exit_to_the_process_file(ioc, prefix, tmp_path):
    source = write_tasks(
        tmp_path,
        f"""
        import time
        from epics_bridge import bridge

        @bridge.task(prefix="{prefix}", heartbeat_period=0.2, stall_timeout=0.5, max_stuck_cycles=3)
        def hang(t):
            time.sleep(1e9)
    """,
    )
    with daemon([source, "--isolation", "none"], ioc.client_env, tmp_path) as d:
        ctx = client_for(ioc.client_env)
        wait_heartbeat(ctx, prefix, timeout=30)
        ctx.put(prefix + "Trigger", 1)
        ctx.close()
        assert d.wait_exit(30) == EXIT_STUCK
    task_messages = [line["message"] for line in lines(tmp_path / "logs" / "hang.log")]
    process_lines = lines(tmp_path / "logs" / PROCESS_LOG)
    stuck = [m.split(":")[0] for m in task_messages if m.startswith("stuck heartbeat period")]
    assert stuck == [f"stuck heartbeat period {n}/3" for n in (1, 2, 3)]
    assert any(m.startswith("watchdog: stuck for 3 heartbeat periods") for m in task_messages)
    assert any(
        line["level"] == "CRITICAL"
        and "watchdog: task 'hang'" in line["message"]
        and f"status {EXIT_STUCK}" in line["message"]
        for line in process_lines
    )
    assert not any("stuck heartbeat period" in line["message"] for line in process_lines)
