"""The benchmark's generated task file, loaded by the launcher as the benchmark runs it, and its figures
summed over a process tree."""

import os
import shutil
import signal
import subprocess
import sys

import pytest

from benchmarks.measure import process_tree, pss_mb, tree_cpu_seconds, tree_figures
from benchmarks.suite import write_task_file


def test_generated_task_file_has_one_task_per_prefix(tmp_path):
    path = write_task_file(tmp_path / "tasks.py", ["B:A:", "B:B:", "B:C:"])
    listing = subprocess.run(
        [sys.executable, "-m", "epics_bridge", str(path), "--list"], capture_output=True, text=True, timeout=60
    )
    assert listing.returncode == 0, listing.stderr
    for i, prefix in enumerate(["B:A:", "B:B:", "B:C:"]):
        assert f"noop{i:03d}  [trigger]  prefix {prefix}" in listing.stdout


def test_figures_are_summed_over_the_process_tree(tmp_path):
    """A supervisor-like parent with a child: both counted, their memory and threads summed."""
    script = (
        "import subprocess, sys; c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        "print(c.pid, flush=True); time = __import__('time'); time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        assert set(process_tree(parent.pid)) == {parent.pid, child}
        figures = tree_figures(parent.pid)
        assert figures["processes"] == 2 and figures["threads"] >= 2
        assert figures["pss_mb"] == pytest.approx(pss_mb(parent.pid) + pss_mb(child), rel=0.2)
        assert set(figures["cpu_s"]) == {parent.pid, child}
        assert tree_cpu_seconds({parent.pid: 0.0}, figures["cpu_s"]) == pytest.approx(sum(figures["cpu_s"].values()))
    finally:
        for pid in process_tree(parent.pid)[::-1]:
            os.kill(pid, signal.SIGKILL)
        parent.wait(10)
        parent.stdout.close()


def test_generated_task_files_number_their_tasks_from_first(tmp_path):
    paths = [
        write_task_file(tmp_path / "a.py", ["B:A:", "B:B:"]),
        write_task_file(tmp_path / "b.py", ["B:C:"], first=2),
    ]
    listing = subprocess.run(
        [sys.executable, "-m", "epics_bridge", *map(str, paths), "--list"], capture_output=True, text=True, timeout=60
    )
    assert listing.returncode == 0, listing.stderr
    assert "noop002  [trigger]  prefix B:C:" in listing.stdout


@pytest.mark.skipif(shutil.which("g++") is None, reason="benchmarks.reexec_put builds its program with g++")
def test_the_reexec_put_benchmark_times_the_four_ways_on_its_own_ioc():
    """It builds against the installed pvxslibs, and each way's puts are acknowledged (a refused or
    unanswered put ends the program or the p4p round with an error instead of a row)."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.reexec_put", "--puts", "20", "--rounds", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith(("| 1 |", "| 2 |"))]
    assert len(rows) == 2, done.stdout
    for row in rows:
        figures = [float(cell.split()[0]) for cell in row.strip("|").split("|")[1:]]
        assert len(figures) == 4 and all(0 < ms < 1000 for ms in figures), row
