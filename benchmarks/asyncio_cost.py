"""``python -m benchmarks.asyncio_cost``: what an ``async def`` task costs beside a plain one.

On one soft IOC of its own (loopback, free ports), with the standard databases for every prefix:

- closed-loop cycle: a plain no-op task and an ``async def`` no-op task in one launcher process
  (``--isolation none``, logging to files as in production); a client triggers them in alternating
  blocks of 50 cycles, so a machine whose speed drifts weighs on both alike;
- memory: N plain no-op tasks in one process, then N async ones in another (each alone, in
  alternating rounds), measured once every task pulses its Heartbeat and the start-up burst has
  settled: PSS, threads, fds.

It prints the figures side by side and writes them as JSON::

    python -m benchmarks.asyncio_cost --cycles 1000 --tasks 1000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from p4p.client.thread import Context

from epics_bridge.client import Handshake, Monitors
from epics_bridge.ioc.embedded import STANDARD_DBS
from epics_bridge.ioc.softioc import Database, SoftIOC, db_dir

from .measure import BenchError, Child, HeartbeatWatch, tree_figures

KINDS = ("plain", "async")
#: Prefixes of the two latency tasks.
LATENCY = {"plain": "BENCH:PLAIN:", "async": "BENCH:ASYNC:"}
BLOCK = 50
CYCLE_TIMEOUT = 5.0
#: Seconds after every task pulsed before memory is read (the start-up burst settles).
SETTLE = 5.0


def _task_source(kind: str, prefix: str, name: str) -> List[str]:
    return [
        f"@bridge.task(prefix={prefix!r})",
        f"{'async ' if kind == 'async' else ''}def {name}(t):",
        "    return None",
        "",
        "",
    ]


def _write(path: Path, tasks: Sequence[List[str]]) -> Path:
    path.write_text("from epics_bridge import bridge\n\n\n" + "".join(line + "\n" for task in tasks for line in task))
    return path


def _engine(workdir: Path, name: str, source: Path) -> List[str]:
    return [sys.executable, "-m", "epics_bridge", str(source), "--isolation", "none", "--log-dir", str(workdir / name)]


def _until_answering(handshake: Handshake, child: Child, prefix: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while handshake.cycle(prefix, CYCLE_TIMEOUT) is None:
        child.check()
        if time.monotonic() > deadline:
            raise BenchError(f"{child.name} did not answer a trigger on {prefix} within {timeout:g} s")


def _summary(samples: List[float]) -> Dict[str, float]:
    ordered = sorted(samples)
    return {
        "cycles": len(ordered),
        "median_ms": round(statistics.median(ordered) * 1e3, 3),
        "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))] * 1e3, 3),
        "mean_ms": round(statistics.fmean(ordered) * 1e3, 3),
    }


def latency(handshake: Handshake, env: Dict[str, str], workdir: Path, cycles: int, warmup: int) -> Dict[str, Any]:
    source = _write(workdir / "latency.py", [_task_source(kind, LATENCY[kind], f"noop_{kind}") for kind in KINDS])
    samples: Dict[str, List[float]] = {kind: [] for kind in KINDS}
    with Child("latency", _engine(workdir, "logs-latency", source), env, workdir) as child:
        for kind in KINDS:
            _until_answering(handshake, child, LATENCY[kind])
            for _ in range(warmup):
                handshake.cycle(LATENCY[kind], CYCLE_TIMEOUT)
        while any(len(samples[kind]) < cycles for kind in KINDS):
            for kind in KINDS:
                for _ in range(min(BLOCK, cycles - len(samples[kind]))):
                    seconds = handshake.cycle(LATENCY[kind], CYCLE_TIMEOUT)
                    if seconds is None:
                        child.check()
                        raise BenchError(f"{kind}: a cycle was not acknowledged within {CYCLE_TIMEOUT:g} s")
                    samples[kind].append(seconds)
    result: Dict[str, Any] = {kind: _summary(samples[kind]) for kind in KINDS}
    result["async_over_plain_median"] = round(result["async"]["median_ms"] / result["plain"]["median_ms"], 3)
    return result


def memory(
    monitors: Monitors, env: Dict[str, str], workdir: Path, prefixes: Dict[str, List[str]], rounds: int
) -> Dict[str, Any]:
    """Each kind ``rounds`` times, alternating: a start-up burst leaves a different amount of free
    memory behind each time, so one process of each kind is not a comparison."""
    watches = {kind: HeartbeatWatch(monitors, prefixes[kind]) for kind in KINDS}
    try:
        return _memory_rounds(watches, env, workdir, prefixes, rounds)
    finally:
        for watch in watches.values():
            watch.close()


def _memory_rounds(
    watches: Dict[str, HeartbeatWatch],
    env: Dict[str, str],
    workdir: Path,
    prefixes: Dict[str, List[str]],
    rounds: int,
) -> Dict[str, Any]:
    runs: Dict[str, List[Dict[str, Any]]] = {kind: [] for kind in KINDS}
    for round_ in range(rounds):
        for kind in KINDS:
            tasks = [_task_source(kind, p, f"noop{i:04d}") for i, p in enumerate(prefixes[kind])]
            source = _write(workdir / f"memory_{kind}.py", tasks)
            beats = [p + "Heartbeat" for p in prefixes[kind]]
            name = f"memory-{kind}-{round_}"
            with Child(name, _engine(workdir, f"logs-{name}", source), env, workdir) as child:
                first = watches[kind].wait_all(beats, child.started_wall, 60 + len(beats) * 0.2, child)
                time.sleep(SETTLE)
                child.check()
                figures = tree_figures(child.pid)
            runs[kind].append(
                {
                    "startup_s": round(first - child.started_wall, 2),
                    "pss_mb": round(figures["pss_mb"], 1),
                    "threads": figures["threads"],
                    "fds": figures["fds"],
                }
            )
    result: Dict[str, Any] = {"tasks": len(prefixes["plain"]), **runs}
    median = {kind: statistics.median(run["pss_mb"] for run in runs[kind]) for kind in KINDS}
    result["median_pss_mb"] = median
    result["async_minus_plain_kb_per_task"] = round((median["async"] - median["plain"]) * 1024 / result["tasks"], 1)
    return result


def _parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.asyncio_cost", description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=1000, help="timed cycles of each kind (default 1000)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed cycles of each kind first (default 50)")
    parser.add_argument("--tasks", type=int, default=1000, help="tasks of each kind, for memory (default 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="processes of each kind, for memory (default 3)")
    parser.add_argument("--workdir", type=Path, help="where files, logs and the JSON go (default: a new temp dir)")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parse(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="epics-bridge-asyncio-cost-"))
    workdir.mkdir(parents=True, exist_ok=True)
    prefixes = {kind: [f"BENCH:{kind[0].upper()}{i:04d}:" for i in range(args.tasks)] for kind in KINDS}
    standard = [db_dir() / name for name in STANDARD_DBS if (db_dir() / name).is_file()]
    every = [*LATENCY.values(), *prefixes["plain"], *prefixes["async"]]
    figures: Dict[str, Any] = {"load_average": round(os.getloadavg()[0], 2)}
    with SoftIOC([Database(path, {"P": p}) for p in every for path in standard], output=workdir / "ioc.log") as ioc:
        env = {**os.environ, **ioc.client_env}
        ctx = Context("pva", nt=False, conf=ioc.client_env, useenv=False)
        monitors = Monitors(ctx)
        try:
            figures["latency"] = latency(
                Handshake(monitors, list(LATENCY.values())), env, workdir, args.cycles, args.warmup
            )
            figures["memory"] = memory(monitors, env, workdir, prefixes, args.rounds)
        finally:
            monitors.close()
            ctx.close()
    (workdir / "asyncio_cost.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))
    print(f"(figures in {workdir / 'asyncio_cost.json'})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
