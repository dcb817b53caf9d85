"""Prometheus metrics per task, served over HTTP (``--metrics-port``; off by default).

The engine's hooks update them from task threads, so each update is one O(1) operation on a child
metric resolved once at start-up; the scrape (prometheus_client's own server thread) does the rest.
The registry is private to the runner, so several runners in one process (tests) never meet.
"""

from __future__ import annotations

import math
import time
from typing import Any, Dict, Optional, Sequence, Tuple
from wsgiref.simple_server import WSGIServer

from loguru import logger
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from ..engine.hooks import Hooks
from ..status import TaskStatus
from ..task import ConfigError, Task

__all__ = ["Metrics"]

#: Cycles take milliseconds to minutes: finer than prometheus_client's default buckets at the low end.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, math.inf)


class _TaskMetrics:
    """One task's children of every metric, so a hook call does no label lookup."""

    def __init__(self, metrics: Metrics, name: str) -> None:
        self.cycles = {status: metrics.cycles.labels(name, status.name) for status in TaskStatus}
        self.duration = metrics.duration.labels(name)
        self.last_cycle = metrics.last_cycle.labels(name)
        self.stuck = metrics.stuck.labels(name)
        self.heartbeat_ok = metrics.heartbeat_ok.labels(name)
        self.ready = metrics.task_ready.labels(name)


class Metrics(Hooks):
    """The metrics of ``tasks``; :meth:`serve` publishes them, :meth:`close` stops serving."""

    def __init__(self, tasks: Sequence[Task]) -> None:
        self.registry = CollectorRegistry()
        self.cycles = Counter(
            "epics_bridge_cycles", "Cycles run, by final TaskStatus", ["task", "status"], registry=self.registry
        )
        self.duration = self._per_task(
            Histogram, "epics_bridge_cycle_duration_seconds", "Duration of the task function per cycle", buckets=BUCKETS
        )
        self.last_cycle = self._per_task(
            Gauge,
            "epics_bridge_last_cycle_timestamp_seconds",
            "Unix time at which the last cycle ended",
            multiprocess_mode="max",
        )
        self.stuck = self._per_task(
            Gauge, "epics_bridge_stuck_periods", "Consecutive stuck heartbeat periods now (0 when healthy)"
        )
        self.heartbeat_ok = self._per_task(
            Gauge, "epics_bridge_heartbeat_ok", "1 if the last heartbeat period pulsed, else 0"
        )
        self.task_ready = self._per_task(
            Gauge,
            "epics_bridge_task_ready",
            "1 while the task serves its prefix (whole handshake answered, prefix held, Trigger connected), else 0",
        )
        self._tasks: Dict[str, _TaskMetrics] = {task.name: _TaskMetrics(self, task.name) for task in tasks}
        self._server: Optional[WSGIServer] = None
        self.address: Optional[Tuple[str, int]] = None

    def _per_task(self, kind: Any, name: str, documentation: str, **options: Any) -> Any:
        if kind is Gauge:  # under worker processes: the one live process that runs the task
            options.setdefault("multiprocess_mode", "livesum")
        return kind(name, documentation, ["task"], registry=self.registry, **options)

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        """Listen on ``addr:port`` (port 0: any free one, see :attr:`address`).

        ConfigError if it cannot: a port that cannot be bound is a configuration mistake, and the
        process should say so before it starts any task.
        """
        try:
            server, _ = start_http_server(port, addr, registry=self.registry)
        except (OSError, OverflowError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise ConfigError(f"--metrics-port {port} --metrics-addr {addr}: cannot listen there: {reason}") from None
        self._server = server
        self.address = (str(server.server_address[0]), server.server_address[1])
        logger.info("Prometheus metrics on http://{}:{}/metrics", *self.address)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- hooks (task threads) --------------------------------------------------------------------
    def cycle_finished(self, task: Task, status: TaskStatus, duration: float) -> None:
        metrics = self._tasks[task.name]
        metrics.cycles[status].inc()
        if math.isfinite(duration):
            metrics.duration.observe(duration)
        metrics.last_cycle.set(time.time())

    def heartbeat(self, task: Task, stuck: int, reason: Optional[str]) -> None:
        metrics = self._tasks[task.name]
        metrics.stuck.set(stuck)
        metrics.heartbeat_ok.set(0 if reason else 1)

    def ready(self, task: Task, ready: bool, reason: Optional[str]) -> None:
        self._tasks[task.name].ready.set(1 if ready else 0)


class ServiceMetrics:
    """The supervisor's metrics in prometheus_client's multiprocess mode: worker restarts per task,
    and one scrape over the files of every process, dead workers' counters included (so totals
    never go backwards). ``PROMETHEUS_MULTIPROC_DIR`` must be set before prometheus_client is
    first imported; the launcher does that."""

    def __init__(self, tasks: Sequence[Task]) -> None:
        self.restarts = Counter(
            "epics_bridge_worker_restarts", "Restarts of the worker process running a task", ["task"], registry=None
        )
        for task in tasks:
            self.restarts.labels(task.name)  # present at 0 from the start

    def restarted(self, task_names: Sequence[str]) -> None:
        for name in task_names:
            self.restarts.labels(name).inc()

    def process_dead(self, pid: int) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]

    def render(self) -> bytes:
        from prometheus_client import generate_latest, multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
