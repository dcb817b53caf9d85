"""Every task in this process (``--isolation none``, a script, and each worker process): logging
configured and the observers wired in before the engine starts.

Everything that can refuse to start is done here, before any task runs: the log folder and
file names checked, the metrics port bound. The engine knows only the hook interface; which
observers watch it (metrics, systemd, the log PVs) is decided here, from the options.
"""

from __future__ import annotations

from typing import List, Sequence

from ..engine.hooks import Hooks
from ..engine.runner import Runner
from ..observe.logpvs import LogPVs
from ..observe.logs import configure
from ..observe.systemd import from_environment
from ..task import Task
from .options import Options

__all__ = ["in_process"]


def in_process(
    tasks: Sequence[Task], options: Options, hooks: Sequence[Hooks] = (), process_log: bool = True
) -> Runner:
    """A runner for ``tasks``, ready to start. ``process_log``: this process writes the
    process-wide log file (a worker does not: its supervisor does)."""
    configure(tasks, options.log_config(process_file=process_log))
    observers: List[Hooks] = []
    if options.metrics_port is not None:
        from ..observe.metrics import Metrics  # prometheus_client brings http.client and ssl: ~3 MB

        metrics = Metrics(tasks)
        metrics.serve(options.metrics_port, options.metrics_addr)
        observers.append(metrics)
    notifier = from_environment()  # READY/STATUS/WATCHDOG, only when systemd set NOTIFY_SOCKET
    if notifier is not None:
        observers.append(notifier)
    if options.log_pvs:  # collecting lines from now on, so the start-up summary reaches the PVs
        observers.append(LogPVs(tasks))
    return Runner(tasks, hooks=[*hooks, *observers], stop_grace=options.stop_grace)
