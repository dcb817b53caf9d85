"""The benchmark's generated task file, loaded by the launcher as the benchmark runs it."""
import subprocess
import sys

from epics_bridge.bench.suite import write_task_file


def test_generated_task_file_has_one_task_per_prefix(tmp_path):
    path = write_task_file(tmp_path / "tasks.py", ["B:A:", "B:B:", "B:C:"])
    listing = subprocess.run([sys.executable, "-m", "epics_bridge", str(path), "--list"],
                             capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr
    for i, prefix in enumerate(["B:A:", "B:B:", "B:C:"]):
        assert f"noop{i:03d}  [trigger]  prefix {prefix}" in listing.stdout
