"""The cycle of a task on a real soft IOC: the context ``t``, return value -> TaskStatus, the order of
the handshake writes, exactly-once service, start-up recovery, event-driven waiting, timer mode, and
two tasks side by side.

Tasks run in this process (helpers.running) so the test can see inside the function; every check of
what the IOC holds is made from a separate p4p client, the way an operator's display sees it.
"""

from __future__ import annotations

import random
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Tuple

import pytest
from conftest import ROOT, VALUES
from helpers import Trigger, client_for, read, recorder, running, wait_for, wait_heartbeat
from loguru import logger

from epics_bridge import BridgeIO, PVError, Registry, TaskStatus
from epics_bridge.client import Handshake, Monitors
from epics_bridge.engine.gate import WIDTH
from epics_bridge.ioc.softioc import Database

S = TaskStatus
#: A PV no IOC serves.
MISSING = "TST:NOT:SERVED"


@contextmanager
def task_log(name: str) -> Iterator[List[str]]:
    """The log lines bound to task ``name`` (its ``t.log`` and the engine's lines about it)."""
    lines: List[str] = []
    sink = logger.add(
        lines.append, level="DEBUG", format="{message}", filter=lambda record: record["extra"].get("task") == name
    )
    try:
        yield lines
    finally:
        logger.remove(sink)


def stamp(value: Any) -> Tuple[int, int]:
    return value["timeStamp.secondsPastEpoch"], value["timeStamp.nanoseconds"]


# -- the task context ----------------------------------------------------------------------------
def test_context_reads_writes_and_logs_on_the_ioc(prefix, client):
    reg = Registry()
    seen: Dict[str, Any] = {}
    out_double, out_long, out_bool = round(random.uniform(1, 100), 3), random.randint(1, 10**6), 1

    @reg.task(
        prefix=prefix,
        name="ctx",
        prefixes={"v": VALUES},
        pvs={"double": "{v}Double", "out_double": "{v}DoubleOut", "out_long": "{v}LongOut"},
    )
    def ctx_task(t):
        seen.update(
            name=t.name,
            pvs=(t.pvs.double, t.pvs.trigger),
            busy=t.get("busy"),
            logical=t.get("double"),
            full=t.get(VALUES + "Long"),
            batch=t.get(["double", VALUES + "Long"]),
            io=t.io,
            pvget=t.io.pvget(VALUES + "Long"),
            pvget_missing=t.io.pvget(MISSING, timeout=0.3),
            pvput=t.io.pvput({VALUES + "BoolOut": out_bool}),
        )
        t.put({"out_double": out_double})
        t.put(out_long=out_long)
        t.log.info("hello from {}", t.name)

    client.put(VALUES + "BoolOut", 0)
    with task_log("ctx") as lines, running(reg.tasks):
        assert Trigger(client, prefix).cycle() == S.SUCCESS
        # acknowledged writes: the IOC holds them as soon as the cycle is acknowledged
        assert read(client, VALUES + "DoubleOut") == out_double
        assert read(client, VALUES + "LongOut") == out_long
        assert read(client, VALUES + "BoolOut") == out_bool
    assert seen["name"] == "ctx"
    assert seen["pvs"] == (VALUES + "Double", prefix + "Trigger")
    assert seen["busy"] == 1  # Busy=1 is acknowledged before the function runs
    assert (seen["logical"], seen["full"]) == (1.5, 42)
    assert seen["batch"] == {"double": 1.5, VALUES + "Long": 42}
    assert isinstance(seen["io"], BridgeIO)
    assert (seen["pvget"], seen["pvget_missing"], seen["pvput"]) == (42, None, True)
    assert any("hello from ctx" in line for line in lines)


# -- return value / exception -> TaskStatus ----------------------------------------------------------
def _raise(exc: BaseException) -> None:
    raise exc


#: (what the function does, the status, a fragment of the task's log). Each status differs from the
#: one before (and the first from the IOC's initial 0), so a stale read could not pass.
OUTCOMES: List[Tuple[str, Callable[[Any], Any], TaskStatus, str]] = [
    ("returns LOGIC_FAILURE", lambda t: S.LOGIC_FAILURE, S.LOGIC_FAILURE, ""),
    ("returns SUCCESS", lambda t: S.SUCCESS, S.SUCCESS, ""),
    ("returns IO_FAILURE", lambda t: S.IO_FAILURE, S.IO_FAILURE, ""),
    ("returns EXCEPTION", lambda t: S.EXCEPTION, S.EXCEPTION, ""),
    ("returns SKIPPED", lambda t: S.SKIPPED, S.SKIPPED, ""),
    ("returns None", lambda t: None, S.SUCCESS, ""),
    ("returns False", lambda t: False, S.LOGIC_FAILURE, ""),
    ("returns True", lambda t: True, S.SUCCESS, ""),
    (
        "t.get of a PV not served",
        lambda t: t.get(MISSING, timeout=0.3),
        S.IO_FAILURE,
        f"failed on PV IO: get failed for {MISSING}",
    ),
    ("raises ValueError", lambda t: _raise(ValueError("boom 17")), S.EXCEPTION, "ValueError: boom 17"),
    ("raw p4p TimeoutError", lambda t: t.io.ctx.get(MISSING, timeout=0.3), S.IO_FAILURE, "cycle failed on PV IO"),
    ("returns 'ok'", lambda t: "ok", S.EXCEPTION, "must return a TaskStatus, True/False or None, not str 'ok'"),
    ("raises PVError itself", lambda t: _raise(PVError("get", {"X:Y": TimeoutError()})), S.IO_FAILURE, "X:Y"),
    ("returns 3.5", lambda t: 3.5, S.EXCEPTION, "not float 3.5"),
]


def test_each_outcome_is_the_status_read_right_after_the_acknowledge(prefix, client):
    assert all(a[2] != b[2] for a, b in zip(OUTCOMES, OUTCOMES[1:])) and OUTCOMES[0][2] != 0
    reg = Registry()
    behaviour: List[Callable[[Any], Any]] = []

    @reg.task(prefix=prefix, timeout=2.0)
    def outcome(t):
        return behaviour[-1](t)

    with task_log("outcome") as lines, running(reg.tasks):
        trig = Trigger(client, prefix)
        for label, does, status, fragment in OUTCOMES:
            behaviour.append(does)
            first_line = len(lines)
            assert trig.cycle() == status, label
            assert read(client, prefix + "Busy") == 0, label
            logged = "".join(lines[first_line:])
            assert fragment in logged, f"{label}: {fragment!r} not in the log:\n{logged}"
            if label == "raises ValueError":  # the traceback, pointing at the raise
                assert "Traceback" in logged and "_raise" in logged, logged


def test_task_duration_is_the_functions_duration(prefix, client):
    reg = Registry()
    inner: List[float] = []

    @reg.task(prefix=prefix)
    def sleeper(t):
        started = time.perf_counter()
        time.sleep(0.2)
        inner.append(time.perf_counter() - started)

    with running(reg.tasks):
        assert Trigger(client, prefix).cycle() == S.SUCCESS
        duration = read(client, prefix + "TaskDuration")
    assert duration >= inner[0] >= 0.2


# -- the order of the handshake ------------------------------------------------------------------------
def _without_group(source: str) -> str:
    return "".join(line for line in source.splitlines(keepends=True) if "info(Q:group" not in line)


def _nested_group(source: str) -> str:
    """The CycleEnd group of the previous release's bridge.db: members of whole normative types."""
    return source.replace('+type: "plain", ', "")


@pytest.fixture(params=["group", "ordered puts", "nested group"])
def handshake(request, prefix, client, make_ioc, tmp_path, monkeypatch):
    """(prefix, client) on an IOC with db/bridge.db's CycleEnd group, with a copy lacking it, or with
    the previous release's group (an IOC not rebooted since the upgrade)."""
    if request.param == "group":
        return request.param, prefix, client
    edit = _without_group if request.param == "ordered puts" else _nested_group
    copy = tmp_path / "bridge_copy.db"
    copy.write_text(edit((ROOT / "db" / "bridge.db").read_text()))
    assert ("Q:group" in copy.read_text()) == (request.param == "nested group")
    assert '+type: "plain"' not in copy.read_text()
    ioc = make_ioc(extra=[Database(copy, {"P": "ORD:"})])
    for key, value in ioc.client_env.items():
        monkeypatch.setenv(key, value)  # for the runner's contexts
    ctx = client_for(ioc.client_env)
    request.addfinalizer(ctx.close)
    return request.param, "ORD:", ctx


_EDITS: Dict[str, Callable[[str], str]] = {
    "group": lambda source: source,
    "ordered puts": _without_group,
    "nested group": _nested_group,
}


@pytest.mark.parametrize(
    "before, after", [("group", "ordered puts"), ("group", "nested group"), ("ordered puts", "group")]
)
def test_an_ioc_rebooted_with_another_cycle_end_still_has_every_cycle_ended(
    before, after, make_ioc, tmp_path, monkeypatch
):
    """An IOC rebooted into another bridge.db (an upgrade, or a rollback to one without the CycleEnd
    group) while the task runs on: every cycle after the reboot is still acknowledged."""
    source = (ROOT / "db" / "bridge.db").read_text()
    copy = tmp_path / "bridge_copy.db"
    copy.write_text(_EDITS[before](source))
    ioc = make_ioc(extra=[Database(copy, {"P": "RBT:"})])
    for key, value in ioc.client_env.items():
        monkeypatch.setenv(key, value)
    reg = Registry()
    runs: List[float] = []

    @reg.task(prefix="RBT:", timeout=1.0)
    def ended(t):
        runs.append(time.monotonic())

    with running(reg.tasks) as runner:
        wait_for(runner.ready, 20.0, what="the task serving its prefix")
        ctx = client_for(ioc.client_env)
        assert Trigger(ctx, "RBT:").cycle(timeout=10.0) == S.SUCCESS
        ctx.close()
        ioc.stop()
        copy.write_text(_EDITS[after](source))
        ioc.start()
        ctx = client_for(ioc.client_env)
        try:
            for _ in range(2):
                assert Trigger(ctx, "RBT:").cycle(timeout=20.0) == S.SUCCESS
            assert read(ctx, "RBT:Busy") == 0
        finally:
            ctx.close()
    assert len(runs) == 3, "each trigger ran once"


def test_status_and_duration_are_written_before_the_acknowledge(handshake):
    """Busy=1 -> function -> TaskStatus, TaskDuration -> Busy=0, Trigger=0, by the IOC's timeStamps.

    A client that waits for Trigger=0 then reads this cycle's TaskStatus and TaskDuration, and Busy=0.
    """
    via, prefix, ctx = handshake
    statuses = [S.LOGIC_FAILURE, S.SKIPPED, S.SUCCESS, S.EXCEPTION]  # each differs from the one before
    reg = Registry()
    busy_inside: List[int] = []

    @reg.task(prefix=prefix)
    def ordered(t):
        busy_inside.append(t.get("busy"))
        return statuses[len(busy_inside) - 1]

    names = {n: prefix + n for n in ("Trigger", "Busy", "TaskStatus", "TaskDuration")}
    updates = recorder(ctx, list(names.values()))
    read_after_ack = []
    with task_log("ordered") as lines, running(reg.tasks):
        trig = Trigger(ctx, prefix)
        for _ in statuses:
            status = trig.cycle()
            read_after_ack.append((status, read(ctx, names["TaskDuration"]), read(ctx, names["Busy"])))
        n = len(statuses)
        wait_for(
            lambda: (
                all(len(updates.of[names[k]]) > n * 2 for k in ("Trigger", "Busy"))
                and all(len(updates.of[names[k]]) > n for k in ("TaskStatus", "TaskDuration"))
            ),
            what="every update of the cycles",
        )
    updates.close()

    assert busy_inside == [1] * len(statuses)
    # [0] is the value before the first cycle
    of = {k: [(u.value, u.stamp) for u in updates.of[pv][1:]] for k, pv in names.items()}
    for i, expected in enumerate(statuses):
        (trig1, t1), (trig0, t0) = of["Trigger"][2 * i : 2 * i + 2]
        (busy1, b1), (busy0, b0) = of["Busy"][2 * i : 2 * i + 2]
        status, s = of["TaskStatus"][i]
        duration, d = of["TaskDuration"][i]
        assert (trig1, trig0, busy1, busy0, status) == (1, 0, 1, 0, expected)
        assert t1 < b1 < s and b1 < d, f"cycle {i}: Busy=1 after the trigger, before the status"
        assert max(s, d) <= min(b0, t0), f"cycle {i}: status and duration before the acknowledge"
        if via != "ordered puts":  # one atomic put in the group's +putorder
            assert s <= d <= b0 <= t0
        assert read_after_ack[i] == (expected, duration, 0), f"cycle {i}: read after the acknowledge"
    assert any("ending cycles with ordered puts" in line for line in lines) == (via == "ordered puts")
    assert not any("refused the cycle end" in line for line in lines)


# -- exactly once ---------------------------------------------------------------------------------------
def test_exactly_once_over_1000_closed_loop_triggers(prefix, client):
    reg = Registry()
    runs = [0]

    @reg.task(prefix=prefix)
    def counting(t):
        runs[0] += 1

    with running(reg.tasks):
        trig = Trigger(client, prefix)
        started = time.monotonic()
        for n in range(1, 1001):
            assert trig.cycle(timeout=10.0) == S.SUCCESS
            assert runs[0] == n, f"trigger {n} acknowledged after {runs[0]} runs"
        elapsed = time.monotonic() - started
        trig.close()
    assert runs[0] == 1000
    assert elapsed < 120, f"1000 closed-loop cycles took {elapsed:.1f} s"  # a few seconds normally


def test_triggers_during_a_cycle_coalesce_into_it(prefix, client):
    """Trigger is a request flag, not a counter: Trigger=1 put again while a cycle runs (Busy=1)
    queues nothing; that cycle's acknowledge (Trigger=0) answers the whole burst. A client whose
    data changed during the cycle triggers again after the acknowledge, and that runs a new cycle.
    """
    reg = Registry()
    runs: List[int] = []
    entered, release = threading.Event(), threading.Event()

    @reg.task(prefix=prefix)
    def held(t):
        runs.append(1)
        entered.set()
        release.wait(20)

    with running(reg.tasks):
        trig = Trigger(client, prefix)
        since = time.time()
        client.put(prefix + "Trigger", 1)
        assert entered.wait(10)
        for _ in range(5):
            client.put(prefix + "Trigger", 1)
        assert read(client, prefix + "Busy") == 1
        release.set()
        trig.wait_acknowledge(since, 10)
        assert len(runs) == 1
        assert read(client, prefix + "Trigger") == 0
        assert trig.cycle() == S.SUCCESS
        assert len(runs) == 2
        trig.close()


# -- start-up ---------------------------------------------------------------------------------------------
def test_busy_left_at_start_up_is_reported_and_not_rerun(prefix, client):
    reg = Registry()
    runs: List[int] = []

    @reg.task(prefix=prefix)
    def interrupted(t):
        runs.append(1)

    client.put(prefix + "TaskStatus", int(S.SUCCESS))
    client.put(prefix + "Trigger", 1)
    client.put(prefix + "Busy", 1)  # as left by an instance killed mid-cycle
    with task_log("interrupted") as lines, running(reg.tasks):
        wait_for(
            lambda: read(client, prefix + "Busy") == 0 and read(client, prefix + "Trigger") == 0,
            what="Busy and Trigger cleared",
        )
        assert read(client, prefix + "TaskStatus") == S.EXCEPTION
        assert Trigger(client, prefix).cycle() == S.SUCCESS  # the next request is served ...
        assert runs == [1]  # ... and is the only run: the interrupted cycle was not re-run
    assert any("Busy=1 at start-up" in line for line in lines)


def test_trigger_set_while_no_daemon_ran_is_served_once(prefix, client):
    reg = Registry()
    runs: List[int] = []

    @reg.task(prefix=prefix)
    def pending(t):
        runs.append(1)
        return len(runs) == 2  # LOGIC_FAILURE, then SUCCESS: tells the two cycles apart

    client.put(prefix + "Busy", 0)
    client.put(prefix + "Trigger", 1)
    with running(reg.tasks):
        wait_for(lambda: read(client, prefix + "Trigger") == 0, what="the pending trigger served")
        assert read(client, prefix + "TaskStatus") == S.LOGIC_FAILURE
        assert runs == [1]
        assert Trigger(client, prefix).cycle() == S.SUCCESS
        assert runs == [1, 1]


# -- waiting --------------------------------------------------------------------------------------------
def test_trigger_mode_waits_on_a_monitor_without_polling(prefix, client, monkeypatch):
    """No trigger: the function never runs, Trigger is neither read (after the start-up handshake)
    nor written; a put is served."""
    reads: List[str] = []
    real_get = BridgeIO._get

    def counting_get(self, names, timeout, convert=True, **options):
        reads.extend([names] if isinstance(names, str) else names)
        return real_get(self, names, timeout, convert, **options)

    monkeypatch.setattr(BridgeIO, "_get", counting_get)
    reg = Registry()
    runs: List[int] = []

    @reg.task(prefix=prefix, heartbeat_period=0.2)
    def idle(t):
        runs.append(1)

    trigger_pv = prefix + "Trigger"
    before = stamp(client.get(trigger_pv))
    with running(reg.tasks):
        wait_heartbeat(client, prefix, pulses=1)  # serving: the handshake's one round is over
        reads.clear()
        wait_heartbeat(client, prefix, pulses=6)  # > 1 s of a live, idle daemon
        assert runs == []
        assert trigger_pv not in reads
        assert stamp(client.get(trigger_pv)) == before  # not written (a put would re-stamp it)
        assert Trigger(client, prefix).cycle(timeout=2.0) == S.SUCCESS  # generous bound, not a timing claim
        assert runs == [1]


def test_timer_mode_runs_on_its_grid_and_never_touches_trigger(prefix, client):
    reg = Registry()
    period = 0.2
    calls: List[float] = []

    @reg.task(prefix=prefix, period=period)
    def timed(t):
        calls.append(time.monotonic())
        time.sleep(0.01)
        return S.LOGIC_FAILURE

    client.put(prefix + "Trigger", 1)
    trigger_stamp = stamp(client.get(prefix + "Trigger"))
    updates = recorder(client, [prefix + "Busy"])
    origin = time.monotonic()
    with running(reg.tasks):
        wait_for(lambda: len(calls) >= 6, what="6 timer cycles")
        wait_for(
            lambda: (
                sum(u.value == 1 for u in updates.of[prefix + "Busy"]) >= 5
                and updates.of[prefix + "Busy"][-1].value == 0
            ),
            what="Busy 1 then 0 for each cycle",
        )
        assert read(client, prefix + "TaskStatus") == S.LOGIC_FAILURE
        assert read(client, prefix + "TaskDuration") >= 0.01
    updates.close()
    for k, at in enumerate(calls):
        assert at - origin >= k * period, f"cycle {k} ran before its slot on the {period} s grid"
    assert read(client, prefix + "Trigger") == 1
    assert stamp(client.get(prefix + "Trigger")) == trigger_stamp


# -- several tasks -----------------------------------------------------------------------------------------
def test_two_tasks_in_one_process_run_independently(make_ioc, monkeypatch):
    ioc = make_ioc("TWO:A:", "TWO:B:")
    for key, value in ioc.client_env.items():
        monkeypatch.setenv(key, value)
    ctx = client_for(ioc.client_env)
    reg = Registry()
    runs: Dict[str, int] = {"a": 0, "b": 0}
    entered, release = threading.Event(), threading.Event()

    @reg.task(prefix="TWO:A:")
    def a(t):
        runs["a"] += 1
        entered.set()
        release.wait(20)
        return S.LOGIC_FAILURE

    @reg.task(prefix="TWO:B:")
    def b(t):
        runs["b"] += 1
        return S.SKIPPED

    try:
        with running(reg.tasks):
            trig_a, trig_b = Trigger(ctx, "TWO:A:"), Trigger(ctx, "TWO:B:")
            since = time.time()
            ctx.put("TWO:A:Trigger", 1)
            assert entered.wait(10)
            assert trig_b.cycle() == S.SKIPPED  # served while a is still in its cycle
            assert trig_b.cycle() == S.SKIPPED
            assert read(ctx, "TWO:A:Busy") == 1 and runs == {"a": 1, "b": 2}
            release.set()
            trig_a.wait_acknowledge(since, 10)
            assert read(ctx, "TWO:A:TaskStatus") == S.LOGIC_FAILURE
            assert read(ctx, "TWO:B:TaskStatus") == S.SKIPPED
            assert runs == {"a": 1, "b": 2}
    finally:
        ctx.close()


def test_a_batch_trigger_of_more_tasks_than_the_gate_is_wide_runs_each_once(make_ioc, monkeypatch):
    """Twelve tasks in one process, more than the loops a Trigger update may wake at once
    (engine/gate.py): one batch put of Trigger=1 to all; every task runs once and acknowledges, and
    the client's span at the IOC lies within what it measured itself."""
    prefixes = [f"GATE:{i:02d}:" for i in range(WIDTH + 4)]
    ioc = make_ioc(*prefixes)
    for key, value in ioc.client_env.items():
        monkeypatch.setenv(key, value)
    ctx = client_for(ioc.client_env)
    reg = Registry()
    runs: Dict[str, int] = {}

    def count(t: Any) -> None:
        runs[t.name] = runs.get(t.name, 0) + 1

    for i, p in enumerate(prefixes):
        reg.task(prefix=p, name=f"gate{i:02d}")(count)
    monitors = Monitors(ctx)
    handshake = Handshake(monitors, prefixes)
    try:
        with running(reg.tasks) as runner:
            triggers = [p + "Trigger" for p in prefixes]
            wait_for(runner.ready, 20.0, what="every task serving its prefix")
            acks = handshake.trigger(triggers, timeout=20.0)
            assert sorted(acks) == sorted(triggers)
            assert runs == {f"gate{i:02d}": 1 for i in range(len(prefixes))}
            assert handshake.ioc_span is not None
            assert 0.0 < handshake.ioc_span <= max(acks.values()) + 0.01  # stamps of one host's clock
            assert all(read(ctx, p + "TaskStatus") == S.SUCCESS for p in prefixes)
    finally:
        handshake.close()
        monitors.close()
        ctx.close()
