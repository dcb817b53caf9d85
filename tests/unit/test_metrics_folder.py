"""The workers' metrics folder: removed when its launcher exits, and by the next launcher when it
was killed; never while its launcher lives."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from epics_bridge.observe import metrics_folder

# A launcher's part: make the folder, say where, then wait for stdin to close (or be killed).
LAUNCHER = (
    "import sys; from epics_bridge.observe import metrics_folder as m; print(m.make(), flush=True); sys.stdin.read()"
)


def launcher(tmp_path: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    return subprocess.Popen(
        [sys.executable, "-c", LAUNCHER], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def folder_of(proc: subprocess.Popen[str], tmp_path: Path) -> Path:
    assert proc.stdout is not None
    folder = Path(proc.stdout.readline().strip())
    assert folder.parent == tmp_path and folder.name.startswith(metrics_folder.PREFIX)
    (folder / "counter_1.db").write_bytes(b"\0" * 16)  # what a worker writes there
    return folder


def test_a_launcher_that_exits_removes_its_folder(tmp_path):
    proc = launcher(tmp_path)
    folder = folder_of(proc, tmp_path)
    proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert not folder.exists()


def test_a_killed_launchers_folder_is_removed_by_the_next_sweep_and_a_live_ones_never(tmp_path):
    killed, alive = launcher(tmp_path), launcher(tmp_path)
    try:
        gone, kept = folder_of(killed, tmp_path), folder_of(alive, tmp_path)
        assert metrics_folder.sweep(str(tmp_path)) == 0  # both launchers alive: nothing touched
        assert gone.exists() and kept.exists()
        killed.kill()
        killed.wait(timeout=30)
        assert gone.exists()  # SIGKILL: no atexit
        assert metrics_folder.sweep(str(tmp_path)) == 1
        assert not gone.exists()
        assert (kept / "counter_1.db").exists()
    finally:
        for proc in (killed, alive):
            proc.kill()
            proc.communicate(timeout=30)


def test_a_folder_without_a_lock_file_is_left_alone(tmp_path):
    older = tmp_path / (metrics_folder.PREFIX + "older")  # an earlier release's, or one being made
    older.mkdir()
    assert metrics_folder.sweep(str(tmp_path)) == 0
    assert older.exists()
