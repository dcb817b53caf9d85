"""The class API of epics-bridge 1.0.1: subclass :class:`BridgeDaemon`, implement ``run_task``, call ``start()``.

It is a thin front on the same engine as ``@bridge.task`` (same cycle, heartbeat and watchdog);
code written against 1.0.1 keeps working unchanged.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import replace
from typing import Any, Optional, Sequence

from .base_pv_interface import BasePVInterface
from .cli.common import fail
from .cli.run import script_service, serve_or_fail
from .defaults import DEFAULTS
from .io import BridgeIO
from .registry import Registry
from .service.interface import Service
from .status import TaskStatus
from .task import ConfigError, Source, Task
from .task_context import TaskContext

__all__ = ["BridgeDaemon", "TaskStatus"]


class BridgeDaemon(ABC):
    """One task as a class. Settings are attributes, read when :meth:`start` is called.

    A subclass that overrides :meth:`trigger` is polled every :meth:`get_poll_rate` seconds, as in
    epics-bridge 1.0.1; otherwise Trigger is watched with a PVA monitor and a cycle starts within a
    millisecond of the request.

    During :meth:`run_task`, :attr:`context` is the cycle's task context (the ``t`` of a decorated
    task): ``self.context.get("position")`` reads by the interface's logical names, a typed
    ``PV(...)`` field as its declared type, ``self.context.get(tag="readback")`` a tagged group.
    """

    def __init__(self, interface: BasePVInterface, name: Optional[str] = None) -> None:
        self.interface = interface
        self._io: Optional[BridgeIO] = None
        self.name = name or type(self).__name__
        self.max_stall_limit = DEFAULTS.stall_timeout
        self.max_stuck_cycles = DEFAULTS.max_stuck_cycles
        self.heartbeat_period = DEFAULTS.heartbeat_period
        self.timeout = DEFAULTS.timeout
        #: Seconds a cycle may run before it is interrupted (None: no limit); below max_stall_limit.
        self.time_limit: Optional[float] = None
        self._service: Optional[Service] = None
        #: The running cycle's task context (None before the first cycle).
        self.context: Optional[TaskContext] = None

    @property
    def io(self) -> BridgeIO:
        """The daemon's own PV access, made on first use: by then ``start()`` has read ``--ioc`` and
        pointed EPICS_PVA_* at the embedded IOC, which a context made in ``__init__`` would miss."""
        if self._io is None:
            self._io = BridgeIO()
        return self._io

    @io.setter
    def io(self, value: BridgeIO) -> None:
        self._io = value

    def get_poll_rate(self) -> float:
        """Seconds between two calls of an overridden :meth:`trigger`."""
        return DEFAULTS.poll_period

    def trigger(self) -> Any:
        """Truthy when a cycle should run (only called if a subclass overrides it)."""
        return self.io.pvget(self.interface.trigger, timeout=1.0)

    @abstractmethod
    def run_task(self, inputs: Any = None) -> TaskStatus:
        """One cycle of the daemon's logic; return a TaskStatus (None/True/False also work)."""

    def as_task(self) -> Task:
        """This daemon as a :class:`Task`, e.g. to run several daemons in one process."""
        prefix = self.interface.prefixes.get("main")
        if not prefix:
            raise ConfigError(f"{type(self).__name__}: interface.prefixes needs a 'main' prefix")
        polled = type(self).trigger is not BridgeDaemon.trigger
        task = Registry.make(
            self._cycle,
            name=self.name,
            prefix=prefix,
            pvs=self.interface,
            heartbeat_period=self.heartbeat_period,
            stall_timeout=self.max_stall_limit,
            max_stuck_cycles=self.max_stuck_cycles,
            timeout=self.timeout,
            time_limit=self.time_limit,
            poll=self.trigger if polled else None,
            poll_period=self.get_poll_rate(),
        )
        # Where the user's code is: the start-up line, --list and the worker grouping name it.
        return replace(task, source=Source.of(type(self).run_task))

    def start(self, argv: Optional[Sequence[str]] = None, **options: Any) -> None:
        """Run in this process until SIGTERM/SIGINT (or :meth:`stop`); the watchdog may end the
        process instead.

        The launcher's options come from ``argv`` (default: the script's command line, so
        ``python motor_daemon.py --ioc`` gives the same first run on an embedded IOC as a task
        file); ``options`` are their defaults by the launcher's names (``log_dir``, ``metrics_port``
        ...). A setting or option it refuses ends the process as the launcher does: the problem on
        stderr, exit status 2, nothing started.
        """
        try:
            task = self.as_task()
        except ConfigError as exc:
            fail(str(exc))
        self._service = script_service(Registry([task]), argv, **options)
        if self._service is not None:
            serve_or_fail(self._service)

    def stop(self) -> None:
        """Ask a running :meth:`start` to return after the current cycle."""
        if self._service is not None:
            self._service.stop()

    def _cycle(self, t: TaskContext) -> object:
        self.context = t
        return self.run_task()
