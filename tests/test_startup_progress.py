"""A worker that is still importing its task files is not silent while it keeps registering tasks;
one that stops making progress is ended after ``--start-timeout``, with a message that says how far
it got."""

from __future__ import annotations

from helpers import HeartbeatRecorder, client_for, daemon, wait_for, write_tasks

SLOW = [f"SP:SLOW:{n:02d}:" for n in range(12)]
STUCK = "SP:STUCK:"
START_TIMEOUT = 8.0  # room for the set-up after the import on a loaded machine

SLOW_FILE = f"""
import sys
import time
from epics_bridge import bridge

for prefix in {SLOW!r}:
    if sys.argv[0].endswith("worker.py"):  # the launcher's validation need not wait as well
        time.sleep(0.9)  # a large file: 10.8 s to register its tasks, longer than the start timeout
    bridge.task(prefix=prefix, name=prefix.replace(":", "_").strip("_"))(lambda t: None)
"""
STUCK_FILE = f"""
import sys
import time
from epics_bridge import bridge

bridge.task(prefix="{STUCK}", name="stuck")(lambda t: None)
if sys.argv[0].endswith("worker.py"):  # in its worker only (the launcher validates it first)
    time.sleep(3600)  # an import that hangs: no more tasks register
"""


def test_an_import_that_progresses_is_waited_for_and_one_that_stops_is_ended(make_ioc, tmp_path):
    ioc = make_ioc(*SLOW, STUCK)
    folder = tmp_path / "tasks"
    write_tasks(folder, SLOW_FILE, "slow.py")
    write_tasks(folder, STUCK_FILE, "stuck.py")
    with daemon([folder, "--start-timeout", START_TIMEOUT], ioc.client_env, tmp_path) as d:
        ctx = client_for(ioc.client_env)
        beats = HeartbeatRecorder(ctx, [SLOW[-1]])
        beats.wait_pulses(SLOW[-1], 2, timeout=90)  # the last task of the slow file serves
        wait_for(lambda: "while importing its task files" in d.stderr, timeout=30, what="the stuck import ended")
        beats.close()
        ctx.close()
        assert d.proc.poll() is None
    log = d.stderr
    assert "worker stuck.py" in log and "while importing its task files (1 task(s) registered, none since)" in log
    assert not [line for line in log.splitlines() if "slow.py" in line and "silent" in line], "slow.py was ended"
