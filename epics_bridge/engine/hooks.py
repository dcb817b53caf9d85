"""Engine events for cross-cutting concerns.

Metrics, systemd notification and log PVs each subclass :class:`Hooks` and override only what they
need; the engine calls every hook in order and a failing hook is logged, never allowed to break a
cycle or a heartbeat.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, List, Optional

from loguru import logger

from ..status import TaskStatus

if TYPE_CHECKING:
    from ..task import Task


class Hooks:
    """No-op base: override the events you care about. Calls come from task threads: never block."""

    def started(self, tasks: List[Task]) -> None:
        """Every task's loop and heartbeat are running."""

    def cycle_finished(self, task: Task, status: TaskStatus, duration: float) -> None:
        """A cycle's status was written (or could not be, then status is IO_FAILURE)."""

    def heartbeat(self, task: Task, stuck: int, reason: Optional[str]) -> None:
        """One heartbeat period: ``stuck`` consecutive stuck periods so far (0 when healthy)."""

    def ready(self, task: Task, ready: bool, reason: Optional[str]) -> None:
        """Whether the task can serve now (its IOC answers every handshake PV), and if not, why."""

    def stopping(self) -> None:
        """A graceful stop began (SIGTERM/SIGINT)."""

    def fatal(self, task: Task, reason: str) -> None:
        """The watchdog is about to end the process because ``task`` stayed stuck."""

    def close(self) -> None:
        """Every task has stopped: release threads, servers and sockets."""


class HookList(Hooks):
    """Fans each event out to several hooks."""

    def __init__(self, hooks: Iterable[Hooks] = ()) -> None:
        self.hooks = list(hooks)

    def _each(self, event: str, *args: object) -> None:
        for hook in self.hooks:
            try:
                getattr(hook, event)(*args)
            except Exception:
                logger.opt(exception=True).error("hook {} failed in {}", type(hook).__name__, event)

    def started(self, tasks: List[Task]) -> None:
        self._each("started", tasks)

    def cycle_finished(self, task: Task, status: TaskStatus, duration: float) -> None:
        self._each("cycle_finished", task, status, duration)

    def heartbeat(self, task: Task, stuck: int, reason: Optional[str]) -> None:
        self._each("heartbeat", task, stuck, reason)

    def ready(self, task: Task, ready: bool, reason: Optional[str]) -> None:
        self._each("ready", task, ready, reason)

    def stopping(self) -> None:
        self._each("stopping")

    def fatal(self, task: Task, reason: str) -> None:
        self._each("fatal", task, reason)

    def close(self) -> None:
        self._each("close")
