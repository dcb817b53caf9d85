"""The service tells an orchestrator the truth through an IOC outage: ``/readyz`` turns 503 naming
the tasks within seconds of the IOC going away while ``/livez`` stays 200 (the IOC's fault must not
get the service killed), both are 200 again once it is back, and the service never exits."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Tuple

from helpers import client_for, daemon, ready_trigger, wait_for, write_tasks

from epics_bridge import TaskStatus
from epics_bridge.ioc.softioc import free_port

TASKS = """
from epics_bridge import bridge


@bridge.task(prefix="{prefix}", heartbeat_period=0.5, stall_timeout=2.0, max_stuck_cycles=4, timeout=1.0)
def {name}(t):
    pass
"""


def probe(port: int, path: str) -> Tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except urllib.error.URLError as exc:  # not listening (yet): no answer at all
        return 0, str(exc.reason)


def test_probes_through_an_ioc_outage(make_ioc, tmp_path):
    ioc = make_ioc("PR:A:", "PR:B:")
    folder = tmp_path / "tasks"
    for name, prefix in (("alpha", "PR:A:"), ("beta", "PR:B:")):
        write_tasks(folder, TASKS.format(prefix=prefix, name=name), f"{name}.py")
    port = free_port()
    with daemon([folder, "--metrics-port", port], ioc.client_env, tmp_path) as d:
        wait_for(lambda: probe(port, "/readyz")[0] == 200, timeout=30, interval=0.2, what="ready")
        assert probe(port, "/livez")[0] == 200
        ioc.stop()
        # each task's Trigger link drops on its own: /readyz turns 503 with the first and names
        # every task whose link is down once each has noticed
        wait_for(
            lambda: (r := probe(port, "/readyz"))[0] == 503 and "alpha:" in r[1] and "beta:" in r[1],
            timeout=10,
            interval=0.2,
            what="/readyz 503 naming both tasks after the IOC went away",
        )
        # past every task's stuck budget, the workers' watchdogs give up and they restart with
        # backoff; /livez is sampled all along and must never fail, nor the service exit
        wait_for(
            lambda: (
                probe(port, "/livez")[0] != 200 or d.proc.poll() is not None or d.stderr.count("restarting it in") >= 2
            ),
            timeout=40,
            interval=0.3,
            what="the workers' watchdogs to give up on the IOC and be restarted",
        )
        assert probe(port, "/livez")[0] == 200 and d.proc.poll() is None, d.stderr[-2000:]
        ioc.start()
        wait_for(
            lambda: probe(port, "/readyz")[0] == 200, timeout=90, interval=0.5, what="ready again once the IOC is back"
        )
        ctx = client_for(ioc.client_env)
        trigger = ready_trigger(ctx, "PR:A:")
        assert trigger.cycle(timeout=10) == TaskStatus.SUCCESS
        trigger.close()
        ctx.close()
        metrics = probe(port, "/metrics")[1]
        assert 'epics_bridge_worker_restarts_total{task="alpha"}' in metrics
