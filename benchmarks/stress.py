"""``python -m benchmarks.stress``: every trigger runs its task exactly once, also under load.

It starts a private soft IOC (loopback, free ports) and a daemon subprocess (``python -m
epics_bridge`` on a generated task file) running ``--tasks`` counting tasks: each counts its own
calls and writes the count to its ``Count`` PV in the cycle. Then ``--lanes`` concurrent clients
drive ``--triggers`` closed-loop triggers (put Trigger=1, wait for the acknowledge Trigger=0), each
on random tasks of its own share. At the end each task's count must equal the triggers it was sent:
fewer is a lost cycle, more a doubled one. It prints a summary and one JSON line, and exits 0 only
when nothing was lost, doubled or left unacknowledged within ``--max-seconds``::

    python -m benchmarks.stress                      # 100 000 triggers on one task
    python -m benchmarks.stress --triggers 10000 --tasks 8 --lanes 4

The soak test (tests/test_soak.py) drives its 200 tasks with the same :class:`Rig` and :func:`drive`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from p4p.client.thread import Context

from epics_bridge.ioc.softioc import Database, SoftIOC, db_dir

from .measure import Child, Handshake, HeartbeatWatch, Monitors
from .report import latency_summary

__all__ = ["Rig", "Load", "drive", "tally", "main"]

#: Seconds a cycle may take before its trigger counts as unacknowledged.
CYCLE_TIMEOUT = 10.0
COUNT_DB = 'record(longout, "$(P)Count") {\n    field(DESC, "Cycles run, counted by the task")\n}\n'
TASK_HEADER = '''"""Counting tasks from benchmarks.stress: each writes how often it ran to its Count PV."""
from epics_bridge import bridge

calls = {}


def counting(t):
    calls[t.name] = calls.get(t.name, 0) + 1
    t.put(count=calls[t.name])

'''


def _log(message: str) -> None:
    print(f"[stress {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Rig:
    """A private soft IOC and a daemon subprocess running ``tasks`` counting tasks on it.

    ``with Rig(8, workdir) as rig:`` returns once every task's heartbeat has pulsed; ``rig.monitors``
    subscribes on a client of the IOC and ``rig.heartbeats`` has recorded every Heartbeat update
    since the start. The tasks are spread evenly over ``files`` task files, run by the launcher's
    default (a worker process per file, under a supervisor).
    """

    def __init__(
        self, tasks: int, workdir: Path, heartbeat_period: float = 1.0, start_timeout: float = 120.0, files: int = 1
    ) -> None:
        self.prefixes = [f"STRESS:{i:03d}:" for i in range(tasks)]
        self.files = files
        self.workdir = workdir
        self.heartbeat_period = heartbeat_period
        self.start_timeout = start_timeout
        self.ioc: Optional[SoftIOC] = None
        self.daemon: Optional[Child] = None
        self.ctx: Optional[Context] = None
        self.monitors: Optional[Monitors] = None
        self.heartbeats: Optional[HeartbeatWatch] = None
        #: Seconds the daemon took to exit on SIGTERM (None: it had to be killed or had died).
        self.stop_seconds: Optional[float] = None

    def _write_files(self) -> List[Path]:
        count_db = self.workdir / "count.db"
        count_db.write_text(COUNT_DB)
        self.databases = [Database(db_dir() / "bridge.db", {"P": p}) for p in self.prefixes]
        self.databases += [Database(count_db, {"P": p}) for p in self.prefixes]
        paths = []
        for f in range(self.files):
            lines = [TASK_HEADER]
            for i, prefix in enumerate(self.prefixes):
                if i % self.files == f:
                    lines.append(
                        f"bridge.task(counting, prefix={prefix!r}, name='count{i:03d}', "
                        f"pvs={{'count': 'Count'}}, heartbeat_period={self.heartbeat_period!r})\n"
                    )
            paths.append(self.workdir / f"stress_tasks{f:02d}.py")
            paths[-1].write_text("".join(lines))
        return paths

    def __enter__(self) -> Rig:
        task_files = self._write_files()
        try:
            self.ioc = SoftIOC(self.databases, output=self.workdir / "ioc.log")
            self.ioc.start(timeout=self.start_timeout)
            env = dict(self.ioc.client_env)
            self.ctx = Context("pva", nt=False, conf=env, useenv=False)
            self.monitors = Monitors(self.ctx)
            self.heartbeats = HeartbeatWatch(self.monitors, self.prefixes)
            since = time.time()
            cmd = [sys.executable, "-m", "epics_bridge", *map(str, task_files), "--log-dir", str(self.workdir / "logs")]
            self.daemon = Child("daemon", cmd, {**os.environ, **env}, self.workdir)
            names = [p + "Heartbeat" for p in self.prefixes]
            self.heartbeats.wait_all(names, since, self.start_timeout, child=self.daemon)
        except BaseException:
            self.__exit__()
            raise
        return self

    def counts(self) -> Dict[str, int]:
        """Each task's Count PV."""
        assert self.ctx is not None
        values = self.ctx.get([p + "Count" for p in self.prefixes], timeout=CYCLE_TIMEOUT)
        return {p: int(v["value"]) for p, v in zip(self.prefixes, values)}

    def __exit__(self, *exc: object) -> None:
        if self.daemon is not None:
            self.stop_seconds = self.daemon.stop(timeout=15.0)
        if self.heartbeats is not None:
            self.heartbeats.close()
        if self.monitors is not None:
            self.monitors.close()
        if self.ctx is not None:
            self.ctx.close()
        if self.ioc is not None:
            self.ioc.stop()


@dataclass
class Load:
    """What the clients did: triggers sent per prefix and the acknowledged cycles' latencies (s)."""

    sent: Dict[str, int]
    latencies: List[float] = field(default_factory=list)
    unacknowledged: int = 0
    seconds: float = 0.0
    #: True when ``max_seconds`` ran out before the requested number of triggers.
    timed_out: bool = False

    @property
    def triggers(self) -> int:
        return sum(self.sent.values())


class _Budget:
    """Hands out triggers to the lanes until the count or the time runs out."""

    def __init__(self, triggers: Optional[int], deadline: float) -> None:
        self.left, self.deadline = triggers, deadline
        self.expired = False
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.left is not None and self.left <= 0:
                return False
            if time.monotonic() >= self.deadline:
                self.expired = True
                return False
            if self.left is not None:
                self.left -= 1
            return True


def _lane(
    handshake: Handshake,
    prefixes: Sequence[str],
    budget: _Budget,
    seed: int,
    load: Load,
    lock: threading.Lock,
    timeout: float,
) -> None:
    """One closed-loop client: trigger a random task of its share, wait for its acknowledge, repeat."""
    rng = random.Random(seed)
    while budget.take():
        prefix = rng.choice(prefixes)
        with lock:
            load.sent[prefix] += 1
        latency = handshake.cycle(prefix, timeout)
        with lock:
            if latency is None:
                load.unacknowledged += 1
            else:
                load.latencies.append(latency)


def drive(
    monitors: Monitors,
    prefixes: Sequence[str],
    *,
    triggers: Optional[int],
    max_seconds: float,
    lanes: int = 1,
    seed: int = 0,
    timeout: float = CYCLE_TIMEOUT,
    progress: float = 0.0,
) -> Load:
    """Run ``lanes`` closed-loop clients over disjoint shares of ``prefixes``.

    They stop after ``triggers`` triggers in all (None: no limit) or ``max_seconds``, whichever
    comes first. ``progress`` > 0 logs the count every that many seconds.
    """
    lanes = max(1, min(lanes, len(prefixes)))
    load = Load(sent={p: 0 for p in prefixes})
    started = time.monotonic()
    budget = _Budget(triggers, started + max_seconds)
    lock = threading.Lock()
    shares = [prefixes[i::lanes] for i in range(lanes)]
    threads = [
        threading.Thread(
            target=_lane,
            name=f"lane{i}",
            daemon=True,
            args=(Handshake(monitors, share), share, budget, seed + i, load, lock, timeout),
        )
        for i, share in enumerate(shares)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(progress or None)
            if progress and thread.is_alive():
                _log(f"{load.triggers} triggers, {len(load.latencies)} acknowledged")
    load.seconds = time.monotonic() - started
    load.timed_out = budget.expired and triggers is not None
    return load


def tally(load: Load, counts: Mapping[str, int]) -> Dict[str, Any]:
    """Compare what each task counted with what it was sent: lost and doubled cycles."""
    lost = sum(max(0, load.sent[p] - counts[p]) for p in load.sent)
    doubled = sum(max(0, counts[p] - load.sent[p]) for p in load.sent)
    acknowledged = len(load.latencies)
    return {
        "triggers": load.triggers,
        "acknowledged": acknowledged,
        "unacknowledged": load.unacknowledged,
        "cycles_counted": sum(counts.values()),
        "lost": lost,
        "doubled": doubled,
        "seconds": round(load.seconds, 3),
        "cycles_per_second": round(acknowledged / load.seconds, 1) if load.seconds else None,
        "latency": latency_summary(load.latencies, load.unacknowledged),
        "timed_out": load.timed_out,
        "ok": lost == doubled == load.unacknowledged == 0 and not load.timed_out,
    }


def _parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.stress",
        description="Closed-loop triggers on counting tasks: lost and doubled cycles, cycles per second.",
    )
    parser.add_argument("--triggers", type=int, default=100_000, help="triggers in all (default 100000)")
    parser.add_argument("--tasks", type=int, default=1, help="counting tasks in the daemon (default 1)")
    parser.add_argument("--files", type=int, default=1, help="task files the tasks are spread over (default 1)")
    parser.add_argument(
        "--lanes",
        type=int,
        default=None,
        help="concurrent closed-loop clients, each on its own share of the tasks (default: min(tasks, 4))",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=1800.0,
        help="stop driving after this long even if triggers remain; the run then fails (default 1800)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for the random choice of tasks")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the IOC, daemon and task logs here (default: a temporary folder)",
    )
    args = parser.parse_args(argv)
    if args.triggers < 1 or args.tasks < 1 or args.max_seconds <= 0 or not 1 <= args.files <= args.tasks:
        parser.error("--triggers and --tasks must be >= 1, --files between 1 and --tasks, --max-seconds > 0")
    return args


def run(args: argparse.Namespace, workdir: Path) -> Dict[str, Any]:
    lanes = args.lanes or min(args.tasks, 4)
    _log(f"starting a soft IOC and a daemon with {args.tasks} counting task(s) in {workdir}")
    with Rig(args.tasks, workdir, files=args.files) as rig:
        _log(f"driving {args.triggers} triggers over {lanes} lane(s), at most {args.max_seconds:g} s")
        assert rig.monitors is not None  # set by entering the rig
        load = drive(
            rig.monitors,
            rig.prefixes,
            triggers=args.triggers,
            max_seconds=args.max_seconds,
            lanes=lanes,
            seed=args.seed,
            progress=10.0,
        )
        report = tally(load, rig.counts())
    report.update(tasks=args.tasks, lanes=lanes, daemon_stop_seconds=rig.stop_seconds)
    report["ok"] = report["ok"] and rig.stop_seconds is not None
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parse(argv)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        report = run(args, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="epics-bridge-stress-") as tmp:
            report = run(args, Path(tmp))
    lat = report["latency"]
    print(
        f"{report['triggers']} triggers on {report['tasks']} task(s) over {report['lanes']} lane(s) in "
        f"{report['seconds']:.1f} s: {report['cycles_per_second']} cycles/s; "
        f"cycle median {lat['median_ms']} ms, p99 {lat['p99_ms']} ms, max {lat['max_ms']} ms"
    )
    print(
        f"lost {report['lost']}, doubled {report['doubled']}, unacknowledged {report['unacknowledged']}"
        f"{', TIMED OUT' if report['timed_out'] else ''} -> {'OK' if report['ok'] else 'FAILED'}"
    )
    print(json.dumps(report, sort_keys=True))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
