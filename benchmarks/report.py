"""The benchmark's arithmetic and its report: summaries of raw samples, the benchmark's targets
as ratios, and the markdown tables of docs/performance.md.

Everything here is pure (plain numbers and dicts in, plain numbers, dicts and text out), so that it
can be checked without an IOC and the JSON file holds exactly what the table shows.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

__all__ = ["LIMITS", "RESPONDERS", "ack_summary", "evaluate", "heartbeat_summary", "latency_summary", "render"]

#: The benchmark's targets: the limit each measured figure must stay within (the third release's).
LIMITS: Dict[str, float] = {
    "vs_floor": 0.5,  # our median cycle <= this x the hand-written floor
    "vs_upstream": 0.35,  # ... and <= this x epics-bridge 5.0.0 polling flat out
    "idle_cpu_percent": 0.1,  # idle CPU of one task (the whole service), % of a core
    "scale_tasks": 1000,
    "scale_files": 10,  # the big service: scale_tasks tasks spread over this many files, default launcher
    "mid_tasks": 200,  # ... and a middle-sized one, in one file
    "scale_pss_mb": 400.0,  # PSS of the whole service (supervisor + workers)
    "scale_cpu_ratio": 0.8,  # its idle CPU <= this x the same number of plain p4p puts a second
    "heartbeat_p99_ms": 20.0,  # heartbeat error p99 (IOC timestamps), and no pulse skipped
    "scale_ack_s": 1.0,  # all tasks acknowledge one batch trigger within this
    "one_file_ack_s": 1.0,  # ... also when all scale_tasks sit in one file
}

#: Each target's figures in the first release and in the previous one (the issue that set the
#: limits above), shown beside this run's.
EARLIER: Dict[str, Tuple[str, str]] = {
    "median cycle vs floor": ("0.57-0.65x", "0.54-0.59x"),
    "median cycle vs 5.0.0 flat out": ("0.39-0.52x", "0.38-0.43x"),
    "idle CPU, one task": ("0.20 %", "0.13-0.30 %"),
    "idle CPU, {mid} tasks in one file vs {mid} plain puts/s": ("0.82x", "1.35-1.70x"),
    "PSS of the whole service, {n} tasks in {files} files": ("173 MB (one process)", "404 MB"),
    "idle CPU, {n} tasks in {files} files vs {n} plain puts/s": ("1.14x (one process)", "1.21x"),
    "all {n} in {files} files acknowledge one batch trigger": ("2.25 s", "1.50 s"),
    "idle CPU, {n} tasks in one file vs {n} plain puts/s": ("1.40x", "1.45x"),
    "all {n} in one file acknowledge one batch trigger": ("6.6 s", "3.09 s"),
    "heartbeat error p99, {n} tasks in one file": ("220 ms", "35 ms"),
}


#: The processes of the latency/idle part, in table order: key -> label.
RESPONDERS = {
    "floor": "floor: minimal hand-written p4p responder",
    "ours": "epics-bridge (this tree), one no-op task",
    "v5_default": "epics-bridge 5.0.0, default poll (1 s)",
    "v5_flat": "epics-bridge 5.0.0, polling flat out",
}


def _ms(seconds: Optional[float]) -> Optional[float]:
    return None if seconds is None else round(float(seconds) * 1000.0, 3)


def latency_summary(samples_s: Sequence[float], timeouts: int = 0) -> Dict[str, Any]:
    """Median/p90/p99 (ms) of closed-loop cycle times given in seconds."""
    out: Dict[str, Any] = {"cycles": len(samples_s), "timeouts": timeouts}
    if not samples_s:
        return {**out, "median_ms": None, "p90_ms": None, "p99_ms": None, "min_ms": None, "max_ms": None}
    a = np.asarray(samples_s, dtype=float)
    median, p90, p99 = np.percentile(a, [50, 90, 99])
    return {
        **out,
        "median_ms": _ms(median),
        "p90_ms": _ms(p90),
        "p99_ms": _ms(p99),
        "min_ms": _ms(a.min()),
        "max_ms": _ms(a.max()),
    }


def heartbeat_summary(
    stamps: Mapping[str, Sequence[float]], period: float, window: Tuple[float, float]
) -> Dict[str, Any]:
    """How regular the pulses were: IOC timestamps of each Heartbeat PV's updates inside ``window``.

    The error of an interval is ``|interval - period|``. An interval of 1.5 periods or more has
    *skipped* a pulse. A heartbeat is *within its period* when no pulse was skipped or a whole
    period late (every error < period) and each PV pulsed throughout the window (less than two
    periods without a pulse at either end).
    """
    start, end = window
    errors: List[float] = []
    silent = stale = skipped = 0
    longest = 0.0
    for values in stamps.values():
        inside = sorted(s for s in values if start <= s <= end)
        if len(inside) < 2:
            silent += 1
            continue
        intervals = np.diff(inside)
        errors.extend(np.abs(intervals - period).tolist())
        skipped += int(np.count_nonzero(intervals >= 1.5 * period))
        longest = max(longest, float(intervals.max()))
        if inside[0] - start >= 2 * period or end - inside[-1] >= 2 * period:
            stale += 1
    p99 = float(np.percentile(errors, 99)) if errors else None
    worst = max(errors) if errors else None
    within = bool(stamps) and not silent and not stale and worst is not None and bool(worst < period)
    return {
        "pvs": len(stamps),
        "intervals": len(errors),
        "silent_pvs": silent,
        "stale_pvs": stale,
        "skipped": skipped,
        "period_s": period,
        "p99_error_ms": _ms(p99),
        "max_error_ms": _ms(worst),
        "longest_interval_ms": _ms(longest) if errors else None,
        "within_period": within,
    }


def ack_summary(
    rounds: Sequence[Mapping[str, float]],
    expected: int,
    puts: Sequence[Optional[float]] = (),
    spans: Sequence[Optional[float]] = (),
) -> Dict[str, Any]:
    """Simultaneous-trigger rounds (seconds to each task's acknowledge): worst round, median task, misses.

    ``puts``: how long the client's batch put of Trigger=1 took in each round (part of the time).
    ``spans``: each round's earliest Trigger=1 to its latest acknowledge as the IOC stamped them
    (without the client's own delays in writing and in hearing back).
    """
    everyone = [s for r in rounds for s in r.values()]
    missing = sum(expected - len(r) for r in rounds)
    worst = max((max(r.values()) for r in rounds if r), default=None)
    return {
        "rounds": len(rounds),
        "tasks": expected,
        "missing": missing,
        "worst_ms": _ms(worst),
        "median_ms": _ms(float(np.median(everyone))) if everyone else None,
        "per_round_ms": [_ms(max(r.values())) if r else None for r in rounds],
        "put_ms": [_ms(p) for p in puts],
        "ioc_span_ms": [_ms(p) for p in spans],
    }


# -- targets -----------------------------------------------------------------------------------------
def _get(d: Optional[Mapping[str, Any]], *keys: str) -> Any:
    for key in keys:
        if not isinstance(d, Mapping):
            return None
        d = d.get(key)
    return d


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a is not None and b else None


def _target(name: str, measured: Optional[float], limit: float, unit: str, fmt: str = "{:.2f}") -> Dict[str, Any]:
    shown = "not measured" if measured is None else fmt.format(measured) + unit
    ok = None if measured is None else measured <= limit
    return {"target": name, "measured": shown, "limit": f"<= {fmt.format(limit)}{unit}", "value": measured, "pass": ok}


def _scale_step(results: Mapping[str, Any], tasks: int, files: int = 1) -> Optional[Mapping[str, Any]]:
    steps = [s for s in results.get("scale") or [] if s.get("tasks") == tasks and s.get("files", 1) == files]
    return steps[0] if steps else None


def _heartbeat_target(name: str, hb: Any) -> Dict[str, Any]:
    """p99 of the heartbeat error within the limit, and not one pulse skipped or PV silent."""
    target = _target(name, _get(hb, "p99_error_ms"), LIMITS["heartbeat_p99_ms"], " ms", "{:.1f}")
    target["limit"] += ", none skipped"
    if isinstance(hb, Mapping):
        missed = hb.get("skipped", 0) + hb.get("silent_pvs", 0) + hb.get("stale_pvs", 0)
        target["measured"] += f"; {hb.get('skipped', 0)} skipped, {hb['silent_pvs']} silent, {hb['stale_pvs']} stale"
        target["pass"] = bool(target["pass"]) and not missed
    return target


def _ack_target(name: str, ack: Any, limit: float) -> Dict[str, Any]:
    worst = _get(ack, "worst_ms")
    target = _target(name, None if worst is None else worst / 1000.0, limit, " s", "{:.3f}")
    if isinstance(ack, Mapping) and ack.get("missing"):
        target.update({"measured": f"{ack['missing']} acknowledges missing", "pass": False})
    return target


def evaluate(results: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """The targets, each with the measured value, the limit and pass/fail/None."""
    resp = results.get("responders") or {}
    ours = _get(resp, "ours", "latency", "median_ms")
    idle = _get(resp, "ours", "idle", "cpu_percent")
    if idle is None:  # --only scale: one task in one file is the same thing
        idle = _get(_scale_step(results, 1), "cpu_percent")
    n, files, mid = _sizes(results)
    spread, single, middle = _scale_step(results, n, files), _scale_step(results, n), _scale_step(results, mid)
    where = f"{n} tasks in {files} files"
    targets = [
        _target(
            "median cycle vs floor", _ratio(ours, _get(resp, "floor", "latency", "median_ms")), LIMITS["vs_floor"], "x"
        ),
        _target(
            "median cycle vs 5.0.0 flat out",
            _ratio(ours, _get(resp, "v5_flat", "latency", "median_ms")),
            LIMITS["vs_upstream"],
            "x",
        ),
        _target("idle CPU, one task", idle, LIMITS["idle_cpu_percent"], " %"),
        _target(f"PSS of the whole service, {where}", _get(spread, "pss_mb"), LIMITS["scale_pss_mb"], " MB", "{:.0f}"),
        _target(
            f"idle CPU, {where} vs {n} plain puts/s",
            _ratio(_get(spread, "cpu_percent"), _get(spread, "reference_cpu_percent")),
            LIMITS["scale_cpu_ratio"],
            "x",
        ),
        _heartbeat_target(f"heartbeat error p99, {where}", _get(spread, "heartbeat")),
        _ack_target(
            f"all {n} in {files} files acknowledge one batch trigger", _get(spread, "ack"), LIMITS["scale_ack_s"]
        ),
        _ack_target(
            f"all {n} in one file acknowledge one batch trigger", _get(single, "ack"), LIMITS["one_file_ack_s"]
        ),
        _heartbeat_target(f"heartbeat error p99, {n} tasks in one file", _get(single, "heartbeat")),
        _idle_ratio_target(f"idle CPU, {mid} tasks in one file vs {mid} plain puts/s", middle),
        _idle_ratio_target(f"idle CPU, {n} tasks in one file vs {n} plain puts/s", single),
    ]
    full = {"n": int(LIMITS["scale_tasks"]), "files": int(LIMITS["scale_files"]), "mid": int(LIMITS["mid_tasks"])}
    names = {template.format(**full): earlier for template, earlier in EARLIER.items()}  # at the full sizes only
    unique = list({target["target"]: target for target in targets}.values())  # a --quick run's mid may be its n
    for target in unique:
        target["first"], target["previous"] = names.get(target["target"], ("", ""))
    return unique


def _sizes(results: Mapping[str, Any]) -> Tuple[int, int, int]:
    """The scale steps the targets are judged on: the full sizes, or what a ``--quick`` run measured
    (its largest step, spread over its files, and its middle one)."""
    steps = results.get("scale") or []
    if not steps or any(s.get("tasks") == LIMITS["scale_tasks"] for s in steps):
        return int(LIMITS["scale_tasks"]), int(LIMITS["scale_files"]), int(LIMITS["mid_tasks"])
    largest = max(s["tasks"] for s in steps)
    files = max(s.get("files", 1) for s in steps if s["tasks"] == largest)
    counts = sorted({s["tasks"] for s in steps if 1 < s["tasks"] < largest}) or [largest]
    return largest, files, counts[-1]


def _idle_ratio_target(name: str, step: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    ratio = _ratio(_get(step, "cpu_percent"), _get(step, "reference_cpu_percent"))
    return _target(name, ratio, LIMITS["scale_cpu_ratio"], "x")


# -- the table ---------------------------------------------------------------------------------------
def _num(value: Any, fmt: str = "{:.2f}") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return fmt.format(value)


def _verdict(ok: Optional[bool]) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "**FAIL**")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _responder_rows(results: Mapping[str, Any]) -> List[List[str]]:
    rows = []
    for key, label in RESPONDERS.items():
        r = _get(results, "responders", key)
        if not isinstance(r, Mapping):
            continue
        lat, idle = r.get("latency") or {}, r.get("idle") or {}
        if r.get("error") and not lat and not idle:
            rows.append([label, f"not measured: {r['error']}"] + [""] * 8)
            continue
        cycles = _num(lat.get("cycles"), "{}")
        if lat.get("timeouts"):
            cycles += f" ({lat['timeouts']} timed out)"
        rows.append(
            [
                label,
                cycles,
                _num(lat.get("median_ms")),
                _num(lat.get("p90_ms")),
                _num(lat.get("p99_ms")),
                _num(idle.get("cpu_percent")),
                _num(idle.get("pss_mb"), "{:.0f}"),
                _num(idle.get("threads"), "{}"),
                r.get("status_before_ack") or "–",
                r.get("note") or "",
            ]
        )
    return rows


def _scale_rows(results: Mapping[str, Any]) -> List[List[str]]:
    rows = []
    for s in results.get("scale") or []:
        where = [str(s.get("tasks")), str(s.get("files", 1))]
        if s.get("error") and "pss_mb" not in s:
            rows.append(where + [f"not measured: {s['error']}"] + [""] * 9)
            continue
        hb, ack = s.get("heartbeat") or {}, s.get("ack") or {}
        rows.append(
            where
            + [
                _num(s.get("processes"), "{}"),
                _num(s.get("startup_s"), "{:.1f}"),
                _num(s.get("pss_mb"), "{:.0f}"),
                _num(s.get("threads"), "{}"),
                _num(s.get("cpu_percent")),
                _num(s.get("reference_cpu_percent")),
                _num(_ratio(s.get("cpu_percent"), s.get("reference_cpu_percent")), "{:.2f}x"),
                _heartbeat_cell(hb),
                _ack_cell(ack),
                str(s.get("error") or ""),
            ]
        )
    return rows


def _heartbeat_cell(hb: Mapping[str, Any]) -> str:
    cell = f"{_num(hb.get('p99_error_ms'), '{:.1f}')} / {_num(hb.get('max_error_ms'), '{:.1f}')}"
    if hb.get("skipped"):
        cell += f" ({hb['skipped']} skipped)"
    return cell if hb.get("within_period", True) else cell + " (missed)"


def _ack_cell(ack: Mapping[str, Any]) -> str:
    put, span = (
        max((v for v in ack.get(key) or [] if v is not None), default=None) for key in ("put_ms", "ioc_span_ms")
    )
    worst, median = _num(ack.get("worst_ms"), "{:.0f}"), _num(ack.get("median_ms"), "{:.0f}")
    return f"{worst} ({median}; {_num(put, '{:.0f}')}; {_num(span, '{:.0f}')})"


def _machine(m: Mapping[str, Any], cfg: Mapping[str, Any]) -> str:
    upstream = f" (p4p {m['p4p_upstream_venv']} in the venv of 5.0.0)" if m.get("p4p_upstream_venv") else ""
    command = " ".join(["python -m benchmarks", cfg.get("argv") or ""]).strip()
    return (
        f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, Linux {m.get('kernel', '?')}, "
        f"Python {m.get('python', '?')}, p4p {m.get('p4p', '?')}{upstream}; load average at start "
        f"{_num(m.get('load_average'))}. One loopback soft IOC (epicscorelibs + pvxslibs QSRV) serving "
        f"{' + '.join(cfg.get('databases') or ['bridge.db'])} for our tasks, bridge.db for the others; "
        f"the floor and this engine run side by side, their timed cycles alternating in blocks of "
        f"{cfg.get('block', '?')}; every other process measured alone. Command: `{command}`."
    )


def render(results: Mapping[str, Any]) -> str:
    """The markdown report: machine, the side-by-side tables, the targets with PASS/FAIL."""
    m, cfg = results.get("machine") or {}, results.get("settings") or {}
    lines = [
        f"### Benchmark ({results.get('date', '?')})",
        "",
        _machine(m, cfg),
        "",
        "Closed-loop cycle: the client puts Trigger=1 and waits (monitor) for Trigger=0; "
        f"{cfg.get('warmup', '?')} warm-up cycles are not counted. Status before ack: cycles in which the "
        "IOC held that cycle's TaskStatus when Trigger returned to 0 (IOC timestamps), as the contract "
        "requires. Idle: no triggers, "
        f"{_num(cfg.get('idle_seconds'), '{:g}')} s, CPU from /proc utime+stime (% of one core); CPU, PSS "
        "(/proc smaps_rollup) and threads are summed over the process and every process it started.",
        "",
    ]
    lines += _table(
        [
            "responder",
            "cycles",
            "median ms",
            "p90 ms",
            "p99 ms",
            "idle CPU %",
            "PSS MB",
            "threads",
            "status before ack",
            "note",
        ],
        _responder_rows(results),
    )
    if results.get("scale"):
        lines += [
            "",
            "No-op tasks spread over files, run by `python -m epics_bridge FILES...` "
            f"({cfg.get('isolation') or 'the default launcher'}): processes, PSS (summed over the "
            "service's process tree), threads and idle CPU of the whole service; start-up until every "
            f"heartbeat pulsed; the idle window starts {_num(cfg.get('settle_s'), '{:g}')} s after a "
            "warm-up batch trigger (every task's first cycle, whose log lines make the log PVs' "
            "channels); idle CPU against a plain p4p client putting to the same N Heartbeat PVs "
            "once a second each; heartbeat error = |interval between pulses (IOC timestamps) - "
            "heartbeat_period|, skipped = intervals of 1.5 periods or more; ack = one batch put of "
            "Trigger=1 to all N until every Trigger is back "
            f"to 0, worst of {cfg.get('batches', '?')} (median over tasks; the longest time the "
            "client's batch put itself took; the longest span at the IOC, from a round's earliest "
            "Trigger=1 to its latest acknowledge by the IOC's timestamps, which leaves out the client's "
            "own delays).",
            "",
        ]
        lines += _table(
            [
                "tasks",
                "files",
                "processes",
                "start-up s",
                "PSS MB",
                "threads",
                "idle CPU %",
                "N puts/s CPU %",
                "ratio",
                "heartbeat error p99 / max ms",
                "ack all ms (median; put; IOC span)",
                "note",
            ],
            _scale_rows(results),
        )
    targets = results.get("targets") or evaluate(results)
    lines += ["", "Targets:", ""]
    lines += _table(
        ["target", "measured", "limit", "result", "first release", "previous release"],
        [
            [t["target"], t["measured"], t["limit"], _verdict(t["pass"]), t.get("first", ""), t.get("previous", "")]
            for t in targets
        ],
    )
    return "\n".join(lines) + "\n"
