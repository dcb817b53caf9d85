"""``@bridge.task``: register a function as a task, and check its configuration while registering.

Every check that can be done without the network is done here, so that the launcher can refuse a
bad file before any task starts, with a message naming the file, the task and the field.
"""

from __future__ import annotations

import functools
import inspect
import keyword
import math
import os
import re
import sys
from dataclasses import dataclass, field, make_dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Type, Union

from .base_pv_interface import STANDARD_FIELDS, BasePVInterface
from .defaults import DEFAULTS

__all__ = ["ConfigError", "Registry", "Task", "bridge"]

_NAME = re.compile(r"[A-Za-z0-9_.-]+")
#: A macro reference in a database: $(NAME), ${NAME}, $(NAME=default).
_MACRO = re.compile(r"\$[({](\w+)")
_PACKAGE = os.path.join(os.path.dirname(__file__), "")  # as co_filename spells this package
PVs = Union[Mapping[str, str], Type[BasePVInterface], BasePVInterface, None]
#: A task's own database for the embedded IOC: a path, or (path, {macro: value}).
DbSpec = Union[str, Path, Tuple[Union[str, Path], Mapping[str, str]]]


class ConfigError(ValueError):
    """A task's configuration is wrong; the message names where and what."""


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
    source: str = field(default="", compare=False)

    @property
    def mode(self) -> str:
        if self.poll is not None:
            return f"poll every {self.poll_period:g} s"
        if self.period is not None:
            return f"timer every {self.period:g} s"
        return "trigger"

    @property
    def standard_handshake(self) -> bool:
        """True when the handshake PVs are the records of ``db/bridge.db`` under ``prefix``."""
        return all(
            getattr(self.pvs, attr) == template.format(main=self.prefix) for attr, template in STANDARD_FIELDS.items()
        )


def _where(func: object) -> str:
    code = getattr(func, "__code__", None)
    return f"{code.co_filename}:{code.co_firstlineno}" if code else _caller()


def _caller() -> str:
    """file:line of the first caller outside this package: where an object without code (say a
    number decorated by mistake) was handed to ``bridge.task``, so the error still names the file."""
    frame: Optional[FrameType] = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame = frame.f_back
    return f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame is not None else "?"


def _check_func(func: object) -> None:
    if not callable(func):
        raise ConfigError(f"@bridge.task decorates a function, not {type(func).__name__} {func!r}")
    try:
        inspect.signature(func).bind(object())
    except TypeError:
        raise ConfigError(
            "field 'function': a task function takes exactly one argument, the task context "
            f"(e.g. def {getattr(func, '__name__', 'task')}(t): ...)"
        ) from None
    except ValueError:  # builtins without a signature: let them fail at run time
        pass


def _positive(name: str, value: object, integer: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value) or value <= 0:
        what = "a positive integer" if integer else "a positive number of seconds"
        raise ConfigError(f"field '{name}' must be {what}, not {value!r}")


def _check_time_limit(time_limit: Optional[float], stall_timeout: float) -> None:
    if time_limit is None:
        return
    _positive("time_limit", time_limit)
    if time_limit >= stall_timeout:
        raise ConfigError(
            f"field 'time_limit' ({time_limit:g} s) must be below stall_timeout ({stall_timeout:g} s): a cycle "
            "running that long is already stalled, and the watchdog would restart it before the limit could "
            "interrupt it"
        )


def _interface(prefix: str, pvs: PVs, prefixes: Optional[Mapping[str, str]]) -> BasePVInterface:
    """Resolve ``pvs`` into an interface instance: templates formatted, names checked."""
    if not isinstance(prefix, str) or not prefix.strip():
        raise ConfigError(f"field 'prefix' must be a non-empty PV prefix such as 'IOC:MOTOR:01:', not {prefix!r}")
    extra = dict(prefixes or {})
    if "main" in extra:
        raise ConfigError("field 'prefixes': 'main' is the task's own prefix; set it with prefix=")
    if isinstance(pvs, BasePVInterface):  # an instance (the class API): already resolved
        return pvs
    keys = {"main": prefix, **extra}
    if isinstance(pvs, type) and issubclass(pvs, BasePVInterface):
        cls = pvs
    elif pvs is None or isinstance(pvs, Mapping):
        cls = _interface_class(pvs or {})
    else:
        raise ConfigError(f"field 'pvs' must be a mapping or a BasePVInterface subclass, not {type(pvs).__name__}")
    try:
        return cls(prefixes=keys)
    except ValueError as exc:
        raise ConfigError(f"field 'pvs': {exc}") from None


def _interface_class(pvs: Mapping[str, object]) -> Type[BasePVInterface]:
    templates: List[Tuple[str, Any]] = []
    for logical, template in pvs.items():
        if not isinstance(logical, str) or not logical.isidentifier() or keyword.iskeyword(logical):
            raise ConfigError(f"field 'pvs': logical name {logical!r} must be a Python identifier (t.pvs.<name>)")
        if logical == "prefixes":
            raise ConfigError("field 'pvs': 'prefixes' is reserved")
        if isinstance(template, str) and "{" not in template:
            template = "{main}" + template  # relative to the task's prefix
        templates.append((logical, template))
    try:
        return _shared_interface_class(tuple(templates))
    except TypeError:  # a template that is not even hashable: refused when resolved, naming its field
        return _make_interface_class(tuple(templates))


@functools.lru_cache(maxsize=1024)
def _shared_interface_class(templates: Tuple[Tuple[str, Any], ...]) -> Type[BasePVInterface]:
    """One class for every task with the same ``pvs``: a dataclass costs ~7 KB, and a service of a
    thousand tasks typically has a handful of different mappings."""
    return _make_interface_class(templates)


def _make_interface_class(templates: Tuple[Tuple[str, Any], ...]) -> Type[BasePVInterface]:
    return make_dataclass("PVs", [(n, str, field(default=t)) for n, t in templates], bases=(BasePVInterface,))


def _databases(
    db: Union[DbSpec, Sequence[DbSpec], None], func: Callable, prefix: str, prefixes: Optional[Mapping[str, str]]
) -> Tuple[Tuple[Path, Dict[str, str]], ...]:
    """Each file with its macros; ``P`` (the task's prefix) and every ``prefixes`` key are defaults
    for the macros the file uses, so a db written for the task loads without spelling them out (and
    a file shared by several tasks, using none of them, still loads once)."""
    defaults = {"P": prefix, **{str(k): str(v) for k, v in (prefixes or {}).items()}}
    if db is None:
        return ()
    specs = [db] if isinstance(db, (str, Path, tuple)) else list(db)
    base = Path(inspect.getsourcefile(func) or ".").resolve().parent
    out = []
    for spec in specs:
        path, macros = spec if isinstance(spec, tuple) else (spec, {})
        path = Path(path) if Path(path).is_absolute() else base / path
        if not path.is_file():
            raise ConfigError(f"field 'db': database file {str(path)!r} does not exist")
        used = set(_MACRO.findall(path.read_text(errors="replace")))
        given = {str(k): str(v) for k, v in dict(macros).items()}
        out.append((path, {**{k: v for k, v in defaults.items() if k in used}, **given}))
    return tuple(out)


class Registry:
    """A set of tasks that run together. ``bridge`` is the default one."""

    def __init__(self, tasks: Iterable[Task] = ()) -> None:
        self._tasks: Dict[str, Task] = {}
        for task in tasks:
            self.add(task)

    @property
    def tasks(self) -> List[Task]:
        return list(self._tasks.values())

    def task(
        self,
        func: Optional[Callable] = None,
        *,
        prefix: str,
        pvs: PVs = None,
        prefixes: Optional[Mapping[str, str]] = None,
        name: Optional[str] = None,
        period: Optional[float] = None,
        heartbeat_period: float = DEFAULTS.heartbeat_period,
        stall_timeout: float = DEFAULTS.stall_timeout,
        max_stuck_cycles: int = DEFAULTS.max_stuck_cycles,
        timeout: float = DEFAULTS.timeout,
        time_limit: Optional[float] = None,
        db: Union[DbSpec, Sequence[DbSpec], None] = None,
        **unknown: object,
    ) -> Callable:
        """Register ``func`` as a task; returns it unchanged, so it stays callable in unit tests."""

        def register(fn: Callable) -> Callable:
            self.add(
                self.make(
                    fn,
                    prefix=prefix,
                    pvs=pvs,
                    prefixes=prefixes,
                    name=name,
                    period=period,
                    heartbeat_period=heartbeat_period,
                    stall_timeout=stall_timeout,
                    max_stuck_cycles=max_stuck_cycles,
                    timeout=timeout,
                    time_limit=time_limit,
                    db=db,
                    unknown=unknown,
                )
            )
            return fn

        return register if func is None else register(func)

    @staticmethod
    def make(func: Callable, *, unknown: Optional[Mapping[str, object]] = None, **options: Any) -> Task:
        """Validate everything about one task and build it; raise ConfigError naming the task."""
        label = getattr(func, "__name__", repr(func))
        where = _where(func)
        try:
            if unknown:
                raise ConfigError(f"unknown argument(s) to bridge.task: {', '.join(sorted(unknown))}")
            return Registry._build(func, **options)
        except ConfigError as exc:
            raise ConfigError(f"{where}: task '{options.get('name') or label}': {exc}") from None

    @staticmethod
    def _build(
        func: Callable,
        *,
        prefix: str,
        pvs: PVs = None,
        prefixes: Optional[Mapping[str, str]] = None,
        name: Optional[str] = None,
        period: Optional[float] = None,
        heartbeat_period: float = DEFAULTS.heartbeat_period,
        stall_timeout: float = DEFAULTS.stall_timeout,
        max_stuck_cycles: int = DEFAULTS.max_stuck_cycles,
        timeout: float = DEFAULTS.timeout,
        time_limit: Optional[float] = None,
        db: Any = None,
        poll: Optional[Callable] = None,
        poll_period: float = DEFAULTS.poll_period,
    ) -> Task:
        _check_func(func)
        name = name if name is not None else func.__name__
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigError(
                f"field 'name' must be letters, digits, '_', '-' or '.' (it names log files), not {name!r}"
            )
        if period is not None:
            _positive("period", period)
        for option, value in (
            ("heartbeat_period", heartbeat_period),
            ("stall_timeout", stall_timeout),
            ("timeout", timeout),
            ("poll_period", poll_period),
        ):
            _positive(option, value)
        _positive("max_stuck_cycles", max_stuck_cycles, integer=True)
        _check_time_limit(time_limit, stall_timeout)
        return Task(
            func=func,
            name=name,
            prefix=prefix,
            pvs=_interface(prefix, pvs, prefixes),
            period=period,
            heartbeat_period=float(heartbeat_period),
            stall_timeout=float(stall_timeout),
            max_stuck_cycles=max_stuck_cycles,
            timeout=float(timeout),
            time_limit=None if time_limit is None else float(time_limit),
            db=_databases(db, func, prefix, prefixes),
            poll=poll,
            poll_period=float(poll_period),
            source=_where(func),
        )

    def add(self, task: Task) -> Task:
        """Register a built task; two tasks may share neither a name nor a prefix."""
        for other in self._tasks.values():
            clash = "name" if other.name == task.name else "prefix" if other.prefix == task.prefix else None
            if clash:
                raise ConfigError(
                    f"{task.source}: task '{task.name}': field '{clash}' {getattr(task, clash)!r} is already "
                    f"used by task '{other.name}' ({other.source})"
                )
        self._tasks[task.name] = task
        return task

    def select(self, names: Sequence[str]) -> List[Task]:
        """The tasks named (for ``--only``); ConfigError for a name that is not registered."""
        missing = [n for n in names if n not in self._tasks]
        if missing:
            known = ", ".join(self._tasks) or "none"
            raise ConfigError(f"--only: no task named {', '.join(map(repr, missing))} (tasks: {known})")
        return [self._tasks[n] for n in names]

    def clear(self) -> None:
        self._tasks.clear()

    def run(self, argv: Optional[Sequence[str]] = None, **options: Any) -> int:
        """Run every registered task until SIGTERM/SIGINT; returns the exit status.

        The launcher's options come from ``argv`` (default: this script's command line, so
        ``python tasks/motor.py --ioc --no-log-files`` works); ``options`` are their defaults by the
        launcher's names (``log_dir``, ``log_level``, ``metrics_port``, ``isolation`` ...). The tasks
        run in this process unless ``--isolation file|task`` asks for worker processes. A
        configuration it refuses ends the process as the launcher does: the problems on stderr,
        exit status 2, nothing started.
        """
        from .service.launcher import run_script

        return run_script(self.tasks, argv, **options)


#: The default registry: ``from epics_bridge import bridge``.
bridge = Registry()
