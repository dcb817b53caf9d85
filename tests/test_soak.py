"""Soak: 200 counting tasks in one service under a continuous closed-loop trigger load.

The tasks are spread over ``FILES`` task files and run by the launcher's default, so the service is
a supervisor and its worker processes; memory, threads and file descriptors are summed over that
process tree.

``SOAK_SECONDS`` (default 600) sets how long the load runs; ``SOAK_REPORT`` names a JSON file for the
figures, which are also printed (``pytest -s -m slow tests/test_soak.py``). Pass criteria:

- no lost or doubled cycle: each task's Count PV equals the triggers it was sent, and every trigger
  was acknowledged (Trigger back to 0) within 10 s;
- no missed heartbeat period: for each of the 200 Heartbeat PVs, every interval between consecutive
  updates (IOC timestamps) while the load ran is shorter than 2 x heartbeat_period (and longer than
  0), and each PV pulsed within 2 periods of the start and of the end of the load;
- memory flat: after the warm-up (the first 10% of the run, at least 20 s) every RSS and every PSS
  sample of the whole service is within 10% of the first one after the warm-up;
- no thread or file-descriptor growth: after the warm-up no sample has more than the first one;
- the service logged no stuck heartbeat period and exits 0 on SIGTERM at the end.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

from benchmarks.measure import tree_figures
from benchmarks.report import heartbeat_summary
from benchmarks.stress import Load, Rig, drive, tally

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "600"))
TASKS = 200
#: Task files the tasks are spread over: a worker process each under the default launcher.
FILES = 4
PERIOD = 1.0
#: Concurrent closed-loop clients, each triggering random tasks of its own 50.
LANES = 4
SAMPLE_EVERY = 5.0
WARM_UP = max(20.0, 0.1 * SOAK_SECONDS)


def sample(pid: int, t: float) -> Dict[str, float]:
    """Figures of the service's whole process tree (supervisor and workers) at ``t`` s."""
    tree = tree_figures(pid)
    return {
        "t": round(t, 1),
        "rss_mb": round(tree["rss_mb"], 2),
        "pss_mb": round(tree["pss_mb"], 2),
        "threads": tree["threads"],
        "fds": tree["fds"],
        "processes": tree["processes"],
    }


def steadiness(samples: List[Dict[str, float]], key: str) -> Dict[str, Any]:
    """The first value after the warm-up (the reference), and the range and growth after it."""
    after = [s[key] for s in samples if s["t"] >= WARM_UP]
    reference = after[0]
    return {
        "start": samples[0][key],
        "reference": reference,
        "min": min(after),
        "max": max(after),
        "end": after[-1],
        "growth_percent": round(100.0 * (max(after) - reference) / reference, 2),
        "drop_percent": round(100.0 * (reference - min(after)) / reference, 2),
    }


def test_tally_counts_lost_and_doubled_cycles_per_task():
    """The accounting the soak and the stress run rely on: per task, never netted across tasks."""
    load = Load(sent={"A:": 3, "B:": 2}, latencies=[0.001] * 5, seconds=1.0)
    report = tally(load, {"A:": 2, "B:": 3})
    assert (report["lost"], report["doubled"], report["ok"]) == (1, 1, False)
    assert tally(load, {"A:": 3, "B:": 2})["ok"] is True


@pytest.mark.slow
@pytest.mark.timeout(SOAK_SECONDS + 300)
def test_soak_200_tasks_under_trigger_load(tmp_path: Path):
    with Rig(TASKS, tmp_path, heartbeat_period=PERIOD, files=FILES) as rig:
        pid = rig.daemon.pid
        result: Dict[str, Load] = {}
        driver = threading.Thread(
            target=lambda: result.update(
                load=drive(rig.monitors, rig.prefixes, triggers=None, max_seconds=SOAK_SECONDS, lanes=LANES)
            )
        )
        window_start, started = time.time(), time.monotonic()
        driver.start()
        samples = []
        while driver.is_alive():
            samples.append(sample(pid, time.monotonic() - started))
            driver.join(SAMPLE_EVERY)
        samples.append(sample(pid, time.monotonic() - started))
        window = (window_start, time.time())
        rig.daemon.check()
        counts = rig.counts()
        stamps = rig.heartbeats.window([p + "Heartbeat" for p in rig.prefixes])
    beats = heartbeat_summary(stamps, PERIOD, window)
    exit_status = rig.daemon.proc.returncode
    logs = (tmp_path / "logs").glob("*.log")
    stuck_lines = sum(log.read_text().count("stuck heartbeat period") for log in logs)

    report = {
        "tasks": TASKS,
        "files": FILES,
        "lanes": LANES,
        "soak_seconds": SOAK_SECONDS,
        "heartbeat_period": PERIOD,
        "warm_up_seconds": WARM_UP,
        "load": tally(result["load"], counts),
        "heartbeats": beats,
        "rss_mb": steadiness(samples, "rss_mb"),
        "pss_mb": steadiness(samples, "pss_mb"),
        "threads": steadiness(samples, "threads"),
        "processes": steadiness(samples, "processes"),
        "fds": steadiness(samples, "fds"),
        "stuck_heartbeat_log_lines": stuck_lines,
        "exit_status_on_sigterm": exit_status,
        "stop_seconds": rig.stop_seconds,
        "samples": samples,
    }
    print("\nsoak:", json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=1))
    if os.environ.get("SOAK_REPORT"):
        Path(os.environ["SOAK_REPORT"]).write_text(json.dumps(report, indent=1))

    load = report["load"]
    assert load["triggers"] > 0 and (load["lost"], load["doubled"], load["unacknowledged"]) == (0, 0, 0)
    assert beats["within_period"], beats
    for memory in ("rss_mb", "pss_mb"):
        assert report[memory]["growth_percent"] <= 10 and report[memory]["drop_percent"] <= 10, report[memory]
    assert report["processes"]["min"] == report["processes"]["max"] >= FILES + 1  # a worker per file, none lost
    assert report["threads"]["max"] <= report["threads"]["reference"]
    assert report["fds"]["max"] <= report["fds"]["reference"]
    assert stuck_lines == 0
    assert exit_status == 0 and rig.stop_seconds is not None


def _stress(tmp_path: Path, triggers: int, tasks: int, max_seconds: float) -> Dict[str, Any]:
    """The stress run through the default launcher (a supervisor and its worker), in-process driver."""
    from benchmarks.stress import _parse, run

    args = _parse(["--triggers", str(triggers), "--tasks", str(tasks), "--max-seconds", str(max_seconds)])
    return run(args, tmp_path)


def test_1000_triggers_through_the_supervisor_each_run_exactly_once(tmp_path: Path):
    report = _stress(tmp_path, 1000, 2, 120)
    assert (report["lost"], report["doubled"], report["unacknowledged"]) == (0, 0, 0), report
    assert report["ok"], report


STRESS_SECONDS = 1800


@pytest.mark.slow
@pytest.mark.timeout(STRESS_SECONDS + 120)  # its own bound; the suite's 300 s is ~3 ms a trigger here
def test_100000_triggers_through_the_supervisor_each_run_exactly_once(tmp_path: Path):
    report = _stress(tmp_path, 100_000, 1, STRESS_SECONDS)
    print(json.dumps(report, indent=2))
    assert (report["lost"], report["doubled"], report["unacknowledged"]) == (0, 0, 0), report
    assert report["ok"], report
