"""The other processes the benchmark measures beside ours, as one standalone script.

Run by path with ``python -I`` (never imported): isolated mode keeps both this folder and the
current directory off ``sys.path``, so ``floor`` and ``pulses`` load nothing but p4p, and
``upstream``, run by the python of a throw-away venv, imports *that* venv's epics-bridge 5.0.0
(same import name as this package) and not this tree.

    python -I bench_peers.py floor PREFIX
    python -I bench_peers.py pulses --period 1 PREFIX...
    VENV/bin/python -I bench_peers.py upstream [--flat-out] --log-dir DIR PREFIX

Each exits by itself after ``--lifetime`` seconds, in case nobody stops it.
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
import threading
import time
from typing import Any, List


def floor(prefix: str) -> None:
    """The minimal responder that keeps the contract's order: the floor for three round trips.

    monitor Trigger -> put Busy=1 -> put TaskStatus+TaskDuration -> put Busy=0+Trigger=0, every put
    waited for (p4p's default). The monitor callback only queues; this thread does the puts.
    """
    from p4p.client.thread import Context

    ctx = Context("pva", nt=False)
    updates: queue.SimpleQueue[Any] = queue.SimpleQueue()
    subscription = ctx.monitor(prefix + "Trigger", updates.put)
    status_pvs = [prefix + "TaskStatus", prefix + "TaskDuration"]
    ack_pvs = [prefix + "Busy", prefix + "Trigger"]
    try:
        while True:
            value = updates.get()
            if isinstance(value, Exception) or not value["value.index"]:
                continue
            started = time.perf_counter()
            ctx.put(prefix + "Busy", 1)
            ctx.put(status_pvs, [0, time.perf_counter() - started])
            ctx.put(ack_pvs, [0, 0])
    finally:
        subscription.close()


def pulses(prefixes: List[str], period: float) -> None:
    """The reference cost: one Heartbeat put per PV per ``period`` as plain p4p puts, on a fixed grid."""
    from p4p.client.thread import Context

    ctx = Context("pva", nt=False)
    names = [p + "Heartbeat" for p in prefixes]
    pulse, due = 0, time.monotonic()
    while True:
        pulse = 1 - pulse
        for name in names:
            ctx.put(name, pulse)
        due += period
        time.sleep(max(0.0, due - time.monotonic()))


def upstream(prefix: str, flat_out: bool, log_dir: str) -> None:
    """A no-op daemon for epics-bridge 5.0.0's class API, at its default poll or polling flat out."""
    from importlib.metadata import version

    import epics_bridge
    from epics_bridge import BasePVInterface, BridgeDaemon, LoggingManager, TaskStatus  # 5.0.0's, in its venv

    where = os.path.realpath(epics_bridge.__file__)
    if version("epics-bridge") != "5.0.0" or not where.startswith(os.path.realpath(sys.prefix)):
        raise SystemExit(f"expected epics-bridge 5.0.0 from {sys.prefix}, got {where}")

    class NoOp(BridgeDaemon):
        def run_task(self) -> TaskStatus:  # type: ignore[override]  # 5.0.0's signature
            return TaskStatus.SUCCESS

    class FlatOut(NoOp):
        def get_poll_rate(self) -> float:
            return 0.0

    daemon_class = FlatOut if flat_out else NoOp
    daemon_class(BasePVInterface(prefixes={"main": prefix}), LoggingManager(daemon_log_dir=log_dir)).start()


def _exit_after(seconds: float) -> None:
    timer = threading.Timer(seconds, os._exit, args=(4,))
    timer.daemon = True
    timer.start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lifetime", type=float, default=3600.0, help="exit after this many seconds")
    sub = parser.add_subparsers(dest="peer", required=True)
    sub.add_parser("floor").add_argument("prefix")
    p = sub.add_parser("pulses")
    p.add_argument("--period", type=float, default=1.0)
    p.add_argument("prefixes", nargs="+")
    u = sub.add_parser("upstream")
    u.add_argument("--flat-out", action="store_true", help="get_poll_rate() returns 0")
    u.add_argument("--log-dir", required=True)
    u.add_argument("prefix")
    args = parser.parse_args()
    _exit_after(args.lifetime)
    if args.peer == "floor":
        floor(args.prefix)
    elif args.peer == "pulses":
        pulses(args.prefixes, args.period)
    else:
        upstream(args.prefix, args.flat_out, args.log_dir)


if __name__ == "__main__":
    main()
