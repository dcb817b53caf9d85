"""``python -m benchmarks``: how fast this engine is, beside the floor and epics-bridge 5.0.0.

One run starts its own soft IOC (loopback, free ports) and measures against it:

- closed-loop cycle latency (a client puts Trigger=1 and waits on a monitor for Trigger=0) and idle
  CPU / RSS of: a minimal hand-written p4p responder (the floor) and one no-op task of this engine,
  side by side with their timed cycles alternating in blocks, then epics-bridge 5.0.0 from PyPI
  (in a throw-away venv, each alone) at its default poll and polling flat out;
- scale: N no-op tasks in one task file, and the largest N spread over ``--files`` files, each run
  by the launcher as a user runs it: PSS, threads and processes of the whole service (summed over
  its process tree), its idle CPU against N plain p4p puts a second, heartbeat regularity and
  skipped pulses (IOC timestamps), and the time until all N acknowledge one batch trigger.

It prints the markdown tables of docs/performance.md with its targets and writes every figure
as JSON. A full run takes about ten minutes on two cores (the first one also makes the
venv of epics-bridge 5.0.0: a pip install); ``--only``, ``--scales``, ``--files``, ``--cycles`` and
``--idle-seconds`` make development runs short::

    python -m benchmarks --only latency --cycles 100
    python -m benchmarks --cycles 100 --idle-seconds 3 --scales 1,10 --files 2
    python -m benchmarks --only scale --scales 1000 --files 10 --isolation none
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shlex
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from p4p.client.thread import Context

from epics_bridge.ioc.embedded import STANDARD_DBS
from epics_bridge.ioc.softioc import Database, SoftIOC, db_dir

from .measure import (
    BenchError,
    Child,
    Handshake,
    HeartbeatWatch,
    Monitors,
    OrderCheck,
    idle_usage,
    upstream_python,
    upstream_versions,
)
from .report import RESPONDERS, ack_summary, evaluate, heartbeat_summary, latency_summary, render

PARTS = ("latency", "idle", "scale")
#: The heartbeat_period of every benchmark task (the engine's default).
PERIOD = 1.0
#: Seconds one cycle may take before it counts as timed out.
CYCLE_TIMEOUT = 5.0
#: Consecutive timed-out cycles after which a responder is given up.
MAX_TIMEOUTS_IN_A_ROW = 5
#: Cycles (after the warm-up, not timed) checking that the status is written before the acknowledge.
ORDER_CHECKS = 5
#: Seconds between a scale step's warm-up batch and its idle window. The warm-up's cycle is every
#: task's first, and logs its status; a task's first line of a kind makes that log PV's channel:
#: 1000 tasks in one process then used about 90 % of a core for 3 s (2026-12-04), which a window
#: starting one second later (as before) counted as idle CPU and heartbeat error.
SETTLE = 5.0
#: The floor and this engine run side by side and their timed cycles alternate in blocks of this
#: many: a machine whose speed drifts during the run (load, CPU clock) weighs on both alike.
BLOCK = 50
PEERS = Path(__file__).resolve().with_name("peers.py")
#: Each responder of the latency part gets its own prefix.
PREFIXES = {"floor": "BENCH:FLOOR:", "ours": "BENCH:OURS:", "v5_default": "BENCH:V5:", "v5_flat": "BENCH:V5F:"}
#: epics-bridge 5.0.0 reads LogLevel and SilencedLoggers every loop and publishes its log lines
#: to four string arrays; without these records each of its reads would wait for a timeout.
UPSTREAM_DB = """
record(mbbo, "$(P)LogLevel") {
    field(ZRST, "DEBUG")
    field(ONST, "INFO")
    field(TWST, "WARNING")
    field(THST, "ERROR")
    field(VAL, "1")
}
record(waveform, "$(P)SilencedLoggers") {
    field(FTVL, "STRING")
    field(NELM, "16")
    field(INP, {const: ["p4p"]})
}
""" + "".join(
    f"""
record(waveform, "$(P){name}Log") {{
    field(FTVL, "STRING")
    field(NELM, "100")
}}
"""
    for name in ("Debug", "Info", "Warning", "Error")
)


@dataclass
class _Run:
    """One responder's timed cycles so far."""

    left: int
    samples: List[float] = field(default_factory=list)
    timeouts: int = 0
    in_a_row: int = 0
    abandoned: Optional[str] = None


def _describe(exc: Exception) -> str:
    return str(exc) if isinstance(exc, BenchError) else f"{type(exc).__name__}: {exc}"


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def scale_prefixes(count: int) -> List[str]:
    return [f"BENCH:S{i:03d}:" for i in range(count)]


def write_task_file(path: Path, prefixes: Sequence[str], first: int = 0) -> Path:
    """A task file with one decorated no-op function per prefix, as a user would write it; the
    functions are numbered from ``first`` so that task names stay unique across files."""
    lines = [
        f'"""{len(prefixes)} no-op task(s), generated by benchmarks."""',
        "from epics_bridge import bridge",
        "",
    ]
    for i, prefix in enumerate(prefixes, first):
        lines += [
            "",
            f"@bridge.task(prefix={prefix!r}, heartbeat_period={PERIOD!r})",
            f"def noop{i:03d}(t):",
            "    return None",
            "",
        ]
    path.write_text("\n".join(lines))
    return path


def machine() -> Dict[str, Any]:
    with open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "p4p": version("p4p"),
        "load_average": round(os.getloadavg()[0], 2),
    }


class Bench:
    """One benchmark run against one IOC; each method measures one thing and returns its figures."""

    def __init__(self, args: argparse.Namespace, workdir: Path, ioc: SoftIOC) -> None:
        self.args, self.workdir = args, workdir
        self.env = {**os.environ, **ioc.client_env}
        self.ctx = Context("pva", nt=False, conf=ioc.client_env, useenv=False)
        self.monitors = Monitors(self.ctx)
        self.scale = scale_prefixes(max(args.scales)) if "scale" in args.only else []
        self.handshake = Handshake(self.monitors, list(PREFIXES.values()))
        self.batches = Handshake(self.monitors, self.scale, recorded=True)
        self.heartbeats = HeartbeatWatch(self.monitors, self.scale)
        self.order = OrderCheck(self.monitors, self.handshake, list(PREFIXES.values()))
        self._upstream: Optional[Path] = None
        self.upstream_p4p: Optional[str] = None

    def close(self) -> None:
        self.handshake.close()
        self.batches.close()
        self.heartbeats.close()
        self.monitors.close()
        self.ctx.close()

    # -- latency and idle ------------------------------------------------------------------------
    def command(self, key: str) -> List[str]:
        prefix = PREFIXES[key]
        if key == "floor":
            return [sys.executable, "-I", str(PEERS), "floor", prefix]
        if key == "ours":
            return self.engine(key, [prefix])
        if self._upstream is None:
            self._upstream = upstream_python(self.args.upstream_venv, self.workdir / "upstream-install.log")
            self.upstream_p4p = upstream_versions(self._upstream).get("p4p")
        log_dir = str(self.workdir / f"logs-{key}")
        return [
            str(self._upstream),
            "-I",
            str(PEERS),
            "upstream",
            "--log-dir",
            log_dir,
            *(["--flat-out"] if key == "v5_flat" else []),
            prefix,
        ]

    def engine(self, name: str, prefixes: Sequence[str], files: int = 1) -> List[str]:
        """This engine running one no-op task per prefix, the prefixes spread evenly over ``files``
        task files, through the launcher's default (or ``--isolation``), logging to files as in
        production."""
        folder = self.workdir / f"tasks-{name}"
        folder.mkdir(exist_ok=True)
        bounds = [len(prefixes) * i // files for i in range(files + 1)]
        paths = [
            str(write_task_file(folder / f"tasks{i:02d}.py", prefixes[bounds[i] : bounds[i + 1]], bounds[i]))
            for i in range(files)
        ]
        isolation = ["--isolation", self.args.isolation] if self.args.isolation else []
        return [
            sys.executable,
            "-m",
            "epics_bridge",
            *paths,
            "--log-dir",
            str(self.workdir / f"logs-{name}"),
            *isolation,
        ]

    def responders(self, keys: Sequence[str]) -> Dict[str, Dict[str, Any]]:
        """Start the responders ``keys`` together and wait until each answers; then time their
        cycles interleaved in blocks (see :data:`BLOCK`), then each one's idle CPU."""
        results = {key: self._blank(key) for key in keys}
        with contextlib.ExitStack() as stack:
            children: Dict[str, Child] = {}
            for key in keys:
                try:
                    self.ctx.put([PREFIXES[key] + "Busy", PREFIXES[key] + "Trigger"], [0, 0])
                    child = stack.enter_context(Child(key, self.command(key), self.env, self.workdir))
                    self._until_answering(child, PREFIXES[key])
                    children[key] = child
                except Exception as exc:  # noqa: BLE001 - reported in the table; the run goes on
                    results[key]["error"] = _describe(exc)
            if "latency" in self.args.only:
                self._latency(children, results)
            if "idle" in self.args.only:
                for key, child in children.items():
                    time.sleep(1.0)  # let the last cycle's logging and puts settle
                    try:
                        results[key]["idle"] = idle_usage(child, self.args.idle_seconds)
                    except Exception as exc:  # noqa: BLE001 - reported in the table
                        results[key]["error"] = results[key]["error"] or _describe(exc)
        return results

    def _blank(self, key: str) -> Dict[str, Any]:
        slow = key == "v5_default"
        return {
            "label": RESPONDERS[key],
            "prefix": PREFIXES[key],
            "latency": None,
            "idle": None,
            "status_before_ack": None,
            "error": None,
            "note": f"{self.args.upstream_cycles} cycles only (each ~1 s)" if slow else "",
        }

    def _until_answering(self, child: Child, prefix: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.handshake.cycle(prefix, CYCLE_TIMEOUT) is None:
            child.check()
            if time.monotonic() > deadline:
                raise BenchError(f"{child.name} did not answer a trigger within {timeout:g} s")

    def _latency(self, children: Mapping[str, Child], results: Dict[str, Dict[str, Any]]) -> None:
        """Each one's warm-up cycles and order check, then the timed cycles, a block of each in turn."""
        runs: Dict[str, _Run] = {}
        for key, child in children.items():
            slow = key == "v5_default"
            try:
                self._cycles(child, PREFIXES[key], _Run(2 if slow else self.args.warmup))
                checks = [self.order.cycle(PREFIXES[key], CYCLE_TIMEOUT) for _ in range(ORDER_CHECKS)]
            except BenchError as exc:
                results[key]["error"] = _describe(exc)
                continue
            results[key]["status_before_ack"] = f"{checks.count(True)}/{len(checks)}"
            runs[key] = _Run(self.args.upstream_cycles if slow else self.args.cycles)
        while any(run.left for run in runs.values()):
            for key, run in runs.items():
                try:
                    self._cycles(children[key], PREFIXES[key], run, BLOCK)
                except BenchError as exc:
                    run.abandoned, run.left = _describe(exc), 0
        for key, run in runs.items():
            results[key]["latency"] = latency_summary(run.samples, run.timeouts)
            results[key]["error"] = run.abandoned

    def _cycles(self, child: Child, prefix: str, run: _Run, most: Optional[int] = None) -> None:
        """Time up to ``most`` of the cycles ``run`` has left (all by default); gives up (saying so
        in ``run.abandoned``) after too many timeouts in a row."""
        for _ in range(min(run.left, most or run.left)):
            run.left -= 1
            seconds = self.handshake.cycle(prefix, CYCLE_TIMEOUT)
            if seconds is not None:
                run.samples.append(seconds)
                run.in_a_row = 0
                continue
            run.timeouts, run.in_a_row = run.timeouts + 1, run.in_a_row + 1
            child.check()
            if run.in_a_row >= MAX_TIMEOUTS_IN_A_ROW:
                run.left = 0
                run.abandoned = f"{run.in_a_row} cycles in a row not acknowledged within {CYCLE_TIMEOUT:g} s"
                return

    # -- scale ----------------------------------------------------------------------------------------
    def scale_step(self, tasks: int, files: int = 1) -> Dict[str, Any]:
        """N no-op tasks spread over ``files`` task files in one service, after the same N pulses a
        second as plain puts."""
        prefixes = self.scale[:tasks]
        beats, triggers = [p + "Heartbeat" for p in prefixes], [p + "Trigger" for p in prefixes]
        step: Dict[str, Any] = {"tasks": tasks, "files": files, "heartbeat_period_s": PERIOD, "error": None}
        name = f"{tasks}-in-{files}"
        try:
            step["reference_cpu_percent"] = self._plain_puts(prefixes, beats)["cpu_percent"]
            with Child(f"ours-{name}", self.engine(name, prefixes, files), self.env, self.workdir) as child:
                first_beats = self.heartbeats.wait_all(beats, child.started_wall, 60 + tasks * 0.2, child)
                step["startup_s"] = round(first_beats - child.started_wall, 3)
                step["warmup_acks"] = len(self.batches.trigger(triggers, timeout=30.0))  # also connects
                time.sleep(SETTLE)
                step.update(self._idle_with_heartbeats(child, beats))
                step["ack"] = self._simultaneous(triggers)
                step["stop_s"] = child.stop(timeout=15.0)
        except Exception as exc:  # noqa: BLE001 - reported in the table; the run goes on
            step["error"] = _describe(exc)
        return step

    def _idle_with_heartbeats(self, child: Child, beats: Sequence[str]) -> Dict[str, Any]:
        start = time.time()
        usage = idle_usage(child, self.args.idle_seconds)
        window = (start, time.time())
        return {**usage, "heartbeat": heartbeat_summary(self.heartbeats.window(beats), PERIOD, window)}

    def _simultaneous(self, triggers: Sequence[str]) -> Dict[str, Any]:
        """``--batches`` rounds of one batch put of Trigger=1 to every task, each waited out."""
        rounds, puts, spans = [], [], []
        for _ in range(self.args.batches):
            rounds.append(self.batches.trigger(triggers, timeout=10.0 + len(triggers) * 0.05))
            puts.append(self.batches.put_seconds)
            spans.append(self.batches.ioc_span)
        return ack_summary(rounds, len(triggers), puts, spans)

    def _plain_puts(self, prefixes: Sequence[str], beats: Sequence[str]) -> Dict[str, Any]:
        cmd = [sys.executable, "-I", str(PEERS), "pulses", "--period", str(PERIOD), *prefixes]
        with Child(f"pulses-{len(prefixes)}", cmd, self.env, self.workdir) as child:
            self.heartbeats.wait_all(beats, child.started_wall, 30 + len(prefixes) * 0.1, child)
            return idle_usage(child, self.args.idle_seconds)


def _csv(kind: Callable[[str], Any], choices: Optional[Sequence[str]] = None) -> Callable[[str], List[Any]]:
    def parse(text: str) -> List[Any]:
        items = [kind(x.strip()) for x in text.split(",") if x.strip()]
        bad = [x for x in items if choices is not None and x not in choices]
        if not items or bad:
            expected = ", ".join(choices or ["values"])
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {expected}")
        return items

    return parse


def _parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--only", type=_csv(str, PARTS), default=list(PARTS), help="parts to run: latency,idle,scale")
    parser.add_argument("--cycles", type=int, default=500, help="measured cycles per responder")
    parser.add_argument("--warmup", type=int, default=20, help="cycles before measuring, not counted")
    parser.add_argument(
        "--upstream-cycles", type=int, default=20, help="measured cycles of epics-bridge 5.0.0 at its default 1 s poll"
    )
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=30.0,
        help="length of each idle CPU window (/proc counts CPU in 10 ms ticks: 0.1 %% of a 10 s window)",
    )
    parser.add_argument(
        "--scales",
        type=_csv(int),
        default=[1, 10, 100, 1000],
        help="task counts for the scale part, each in one task file",
    )
    parser.add_argument(
        "--files",
        type=int,
        default=10,
        help="also run the largest scale with its tasks spread over this many task files (1: only one file each)",
    )
    parser.add_argument(
        "--isolation",
        choices=("file", "task", "none"),
        help="passed to the launcher (default: the launcher's own default)",
    )
    parser.add_argument("--batches", type=int, default=3, help="simultaneous triggers timed per scale step")
    parser.add_argument("--no-upstream", action="store_true", help="skip epics-bridge 5.0.0")
    parser.add_argument(
        "--upstream-venv",
        type=Path,
        default=Path.home() / ".cache" / "epics-bridge-bench" / "venv-5.0.0",
        help="venv for epics-bridge 5.0.0 (made on first use)",
    )
    parser.add_argument("--json", type=Path, default=Path("bench-results.json"), help="where to write all figures")
    parser.add_argument(
        "--workdir", type=Path, help="keep task files and logs here (default: a temporary folder, removed)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the same comparisons at smaller sizes, in a few minutes (100 cycles, 10 s idle windows, "
        "scales 1 and 200, the largest also in 2 files): a change that costs idle CPU or latency shows "
        "before it lands; the targets are judged at these sizes",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.cycles, args.warmup, args.upstream_cycles, args.idle_seconds = 100, 10, 10, 10.0
        args.scales, args.files, args.batches = [1, 200], 2, 2
    if min(args.cycles, args.upstream_cycles, args.batches) < 1 or args.warmup < 0 or args.idle_seconds <= 0:
        parser.error("--cycles, --upstream-cycles, --batches must be >= 1, --warmup >= 0, --idle-seconds > 0")
    if any(n < 1 for n in args.scales) or not 1 <= args.files <= max(args.scales):
        parser.error("--scales: task counts must be >= 1; --files between 1 and the largest scale")
    return args


def _databases(args: argparse.Namespace, workdir: Path) -> List[Database]:
    """The project's standard databases (as ``--ioc`` loads them) for our tasks; bridge.db for the others."""
    standard = [db_dir() / name for name in STANDARD_DBS if (db_dir() / name).is_file()]
    ours = [PREFIXES["ours"]] + (scale_prefixes(max(args.scales)) if "scale" in args.only else [])
    others = [PREFIXES[k] for k in ("floor", "v5_default", "v5_flat")]
    upstream = workdir / "upstream-5.0.0.db"
    upstream.write_text(UPSTREAM_DB)
    return (
        [Database(path, {"P": p}) for p in ours for path in standard]
        + [Database(db_dir() / "bridge.db", {"P": p}) for p in others]
        + [Database(upstream, {"P": PREFIXES[k]}) for k in ("v5_default", "v5_flat")]
    )


def _responders(bench: Bench, args: argparse.Namespace) -> Dict[str, Any]:
    """The floor and this engine side by side, then each epics-bridge 5.0.0 alone (flat out, it
    burns most of a core, which must not weigh on the others)."""
    out: Dict[str, Any] = {}
    for keys in (["floor", "ours"], ["v5_default"], ["v5_flat"]):
        if args.no_upstream and keys[0].startswith("v5"):
            out[keys[0]] = {"label": RESPONDERS[keys[0]], "error": "skipped (--no-upstream)"}
            continue
        _log(" and ".join(RESPONDERS[key] for key in keys) + " ...")
        for key, result in bench.responders(keys).items():
            out[key] = result
            _log(f"  {json.dumps(result)}")
    return out


def _scale(bench: Bench, args: argparse.Namespace) -> List[Dict[str, Any]]:
    steps = []
    plan = [(tasks, 1) for tasks in args.scales] + ([(max(args.scales), args.files)] if args.files > 1 else [])
    for tasks, files in plan:
        _log(f"scale: {tasks} task(s) in {files} file(s) ...")
        steps.append(bench.scale_step(tasks, files))
        _log(f"  {json.dumps(steps[-1])}")
    return steps


def run(args: argparse.Namespace, workdir: Path) -> Dict[str, Any]:
    """Every part asked for, against one IOC; all figures in one dict (the JSON file)."""
    results: Dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {
            "argv": " ".join(map(shlex.quote, args.argv)),
            "only": args.only,
            "cycles": args.cycles,
            "warmup": args.warmup,
            "upstream_cycles": args.upstream_cycles,
            "idle_seconds": args.idle_seconds,
            "scales": args.scales,
            "files": args.files,
            "isolation": args.isolation,
            "batches": args.batches,
            "block": BLOCK,
            "settle_s": SETTLE,
            "databases": [name for name in STANDARD_DBS if (db_dir() / name).is_file()],
        },
        "responders": {},
        "scale": [],
    }
    _log(f"starting the soft IOC; work folder {workdir}")
    with SoftIOC(_databases(args, workdir), output=workdir / "ioc.log") as ioc:
        bench = Bench(args, workdir, ioc)
        try:
            if {"latency", "idle"} & set(args.only):
                results["responders"] = _responders(bench, args)
            if "scale" in args.only:
                results["scale"] = _scale(bench, args)
        finally:
            bench.close()
    results["machine"]["p4p_upstream_venv"] = bench.upstream_p4p
    results["targets"] = evaluate(results)
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parse(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so every child is stopped on the way out
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="epics-bridge-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        results = run(args, workdir.resolve())
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(render(results))
    _log(f"all figures in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
