"""``@bridge.task``: register a function as a task, and check its configuration while registering.

Every check that can be done without the network is done here, so that the launcher can refuse a
bad file before any task starts, with a message naming the file, the task and the field.
"""

from __future__ import annotations

import functools
import inspect
import keyword
import math
import re
from dataclasses import field, make_dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Type, Union

from .base_pv_interface import BasePVInterface, relative
from .defaults import DEFAULTS
from .pv import PV
from .task import ConfigError, Source, Task

__all__ = ["DbSpec", "PVs", "Registry"]

_NAME = re.compile(r"[A-Za-z0-9_.-]+")
#: A macro reference in a database: $(NAME), ${NAME}, $(NAME=default).
_MACRO = re.compile(r"\$[({](\w+)")
#: What ``@bridge.task`` decorates: a function of the task context.
TaskFunction = Callable[[Any], object]
PVs = Union[Mapping[str, Union[str, PV]], Type[BasePVInterface], BasePVInterface, None]
#: A task's own database for the embedded IOC: a path, or (path, {macro: value}).
DbSpec = Union[str, Path, Tuple[Union[str, Path], Mapping[str, str]]]


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
        templates.append((logical, relative(template) if isinstance(template, (str, PV)) else template))
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
    return make_dataclass(
        "PVs", [(n, Union[str, PV], field(default=t)) for n, t in templates], bases=(BasePVInterface,)
    )


def _databases(
    db: Union[DbSpec, Sequence[DbSpec], None], func: TaskFunction, prefix: str, prefixes: Optional[Mapping[str, str]]
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
        #: True while the launcher imports task files into this registry (a ``bridge.run()`` at a
        #: file's top level then does nothing: the launcher runs the tasks).
        self.loading = False
        for task in tasks:
            self.add(task)

    @property
    def tasks(self) -> List[Task]:
        return list(self._tasks.values())

    def task(
        self,
        func: Optional[TaskFunction] = None,
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
    ) -> Any:
        """Register ``func`` as a task; returns it unchanged, so it stays callable in unit tests."""

        def register(fn: TaskFunction) -> TaskFunction:
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
    def make(func: TaskFunction, *, unknown: Optional[Mapping[str, object]] = None, **options: Any) -> Task:
        """Validate everything about one task and build it; raise ConfigError naming the task."""
        label = getattr(func, "__name__", repr(func))
        where = Source.of(func)
        try:
            if unknown:
                raise ConfigError(f"unknown argument(s) to bridge.task: {', '.join(sorted(unknown))}")
            return Registry._build(func, **options)
        except ConfigError as exc:
            raise ConfigError(f"{where}: task '{options.get('name') or label}': {exc}") from None

    @staticmethod
    def _build(
        func: TaskFunction,
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
        poll: Optional[Callable[[], object]] = None,
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
            source=Source.of(func),
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
