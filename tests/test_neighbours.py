"""A stuck task's neighbours finish first: when a worker must go because one of its tasks is stuck,
its other tasks take no new trigger, finish the cycles they are running and acknowledge them; the
triggers put meanwhile are served once after the restart."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Dict, List

from helpers import client_for, daemon, read, ready_trigger, wait_for, wait_value, write_tasks

from epics_bridge import TaskStatus

PERIOD, STALL, STUCK = 0.5, 2.0, 4
HEALTHY = [f"NB:{n}:" for n in range(4)]
HANG = "NB:HANG:"
SOURCE = """
import time
from epics_bridge import bridge

OPTIONS = dict(heartbeat_period={period}, stall_timeout={stall}, max_stuck_cycles={stuck}, timeout=2.0)


def slow(prefix):
    @bridge.task(prefix=prefix, name=prefix.replace(":", "_").strip("_"), **OPTIONS)
    def cycle(t):
        time.sleep(0.3)
        with open(t.name + ".calls", "a") as f:
            f.write("1\\n")


for prefix in {healthy!r}:
    slow(prefix)


@bridge.task(prefix="{hang}", **OPTIONS)
def hang(t):
    time.sleep(3600)  # blocked in C: only the watchdog and a worker restart end this
"""


def calls(workdir: Path, prefix: str) -> int:
    path = workdir / (prefix.replace(":", "_").strip("_") + ".calls")
    return len(path.read_text().splitlines()) if path.exists() else 0


class Client(threading.Thread):
    """Triggers one task again and again, keeping the status of each acknowledged cycle."""

    def __init__(self, env: Dict[str, str], prefix: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.env, self.prefix, self.stop = env, prefix, stop
        self.statuses: List[int] = []
        self.lost = 0

    def run(self) -> None:
        ctx = client_for(self.env)
        trigger = ready_trigger(ctx, self.prefix, timeout=30)
        try:
            while not self.stop.is_set():
                try:
                    self.statuses.append(trigger.cycle(timeout=30.0))
                except TimeoutError:
                    self.lost += 1
        finally:
            trigger.close()
            ctx.close()


def test_the_other_tasks_of_a_stuck_tasks_worker_finish_their_cycles_first(make_ioc, tmp_path):
    ioc = make_ioc(*HEALTHY, HANG)
    source = SOURCE.format(period=PERIOD, stall=STALL, stuck=STUCK, healthy=HEALTHY, hang=HANG)
    task_file = write_tasks(tmp_path / "tasks", source, "shared.py")
    with daemon([task_file], ioc.client_env, tmp_path) as d:
        ctx = client_for(ioc.client_env)
        ready_trigger(ctx, HANG, timeout=60).close()
        stop = threading.Event()
        clients = [Client(ioc.client_env, prefix, stop) for prefix in HEALTHY]
        for client in clients:
            client.start()
        wait_for(lambda: all(len(c.statuses) >= 3 for c in clients), timeout=30, what="healthy cycles under way")
        ctx.put(HANG + "Trigger", 1)
        wait_value(ctx, HANG + "Busy", 1)
        wait_for(
            lambda: read(ctx, HANG + "Busy") == 0 and read(ctx, HANG + "Trigger") == 0,
            timeout=60,
            what="the worker back, the hung cycle reported",
        )
        after = [len(c.statuses) for c in clients]
        wait_for(
            lambda: all(len(c.statuses) >= n + 3 for c, n in zip(clients, after)),
            timeout=30,
            what="healthy cycles after the restart",
        )
        stop.set()
        for client in clients:
            client.join(timeout=40)
        ctx.close()
        assert d.proc.poll() is None
    log = d.log("epics-bridge") + d.stderr
    statuses = Counter(s for c in clients for s in c.statuses)
    print(f"\nhealthy cycles by status: {dict(statuses)}; lost {sum(c.lost for c in clients)}")
    assert "running cycle(s) finish first" in log
    assert statuses[TaskStatus.EXCEPTION] == 0, "a healthy cycle was cut off by the restart"
    assert set(statuses) == {TaskStatus.SUCCESS}
    for client in clients:
        assert client.lost == 0, f"{client.prefix}: a trigger was lost"
        assert calls(tmp_path, client.prefix) == len(client.statuses), "each trigger ran exactly once"
