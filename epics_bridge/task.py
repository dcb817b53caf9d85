"""The task model: a validated, immutable :class:`Task`, where it was declared, and the error for
a configuration that cannot run.

A leaf: everything above it (the registry that builds tasks, the engine that runs them, the
service that loads and supervises them) shares these types without importing each other.
"""

from __future__ import annotations

import inspect
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Dict, Optional, Tuple

from .base_pv_interface import STANDARD_FIELDS, BasePVInterface
from .defaults import DEFAULTS

__all__ = ["ConfigError", "Source", "Task"]

_PACKAGE = os.path.join(os.path.dirname(__file__), "")  # as co_filename spells this package


class ConfigError(ValueError):
    """A task's configuration is wrong; the message names where and what."""


@dataclass(frozen=True)
class Source:
    """Where a task was declared: the file the service loads it from (and groups workers by), and
    the line that messages point at."""

    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"

    @classmethod
    def of(cls, func: object) -> Source:
        """The first line of ``func``'s code; for an object without code (a number decorated by
        mistake), the first caller outside this package, so an error still names the user's file."""
        code = getattr(func, "__code__", None)
        if code is not None:
            return cls(Path(code.co_filename), code.co_firstlineno)
        frame: Optional[FrameType] = sys._getframe(1)
        while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
            frame = frame.f_back
        return cls(Path(frame.f_code.co_filename), frame.f_lineno) if frame is not None else UNKNOWN


UNKNOWN = Source(Path("?"), 0)


@dataclass(frozen=True)
class Task:
    """A registered task: its function and validated settings. Immutable once registered."""

    func: Callable[[Any], object]
    name: str
    prefix: str
    pvs: BasePVInterface
    period: Optional[float] = None
    heartbeat_period: float = DEFAULTS.heartbeat_period
    stall_timeout: float = DEFAULTS.stall_timeout
    max_stuck_cycles: int = DEFAULTS.max_stuck_cycles
    timeout: float = DEFAULTS.timeout
    #: Seconds a cycle may run before it is interrupted in its thread (None: no limit).
    time_limit: Optional[float] = None
    #: Databases for ``--ioc``, resolved to absolute paths with their macros.
    db: Tuple[Tuple[Path, Dict[str, str]], ...] = ()
    #: Called every ``poll_period`` s instead of watching Trigger (a class-API daemon's overridden trigger()).
    poll: Optional[Callable[[], object]] = None
    poll_period: float = DEFAULTS.poll_period
    source: Source = field(default=UNKNOWN, compare=False)

    @property
    def mode(self) -> str:
        if self.poll is not None:
            return f"poll every {self.poll_period:g} s"
        if self.period is not None:
            return f"timer every {self.period:g} s"
        return "trigger"

    @property
    def is_async(self) -> bool:
        """The function is an ``async def`` (or an object whose ``__call__`` is): its cycles run
        on an event loop of the task's own, and ``t.get``/``t.put`` are awaited."""
        func = self.func
        return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(type(func).__call__)

    @property
    def standard_handshake(self) -> bool:
        """True when the handshake PVs are the records of ``db/bridge.db`` under ``prefix``."""
        return all(
            getattr(self.pvs, attr) == template.format(main=self.prefix) for attr, template in STANDARD_FIELDS.items()
        )
