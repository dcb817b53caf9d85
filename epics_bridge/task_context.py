"""The ``t`` a task function receives: its PV names, strict IO by logical name, and its logger."""

from __future__ import annotations

import difflib
from typing import Any, Dict, Mapping, NoReturn, Optional, Sequence, Union

from loguru import logger

from .base_pv_interface import BasePVInterface, ReadOnlyError, read_only
from .io import BridgeIO
from .task import ConfigError

__all__ = ["ReadOnlyError", "TaskContext", "UnknownNameError", "read_only"]


class UnknownNameError(ConfigError, KeyError):
    """``t.get``/``t.put`` got a bare name that is no logical name of the task.

    A full PV name has a ``:`` (or is a template); a bare identifier is a logical name, so one the
    task does not declare is a typo, reported now rather than as a PV timeout seconds later.
    """

    def __init__(self, task: str, name: str, known: Sequence[str]) -> None:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        super().__init__(f"task '{task}': {name!r} is not one of its logical names ({', '.join(sorted(known))}){hint}")

    def __str__(self) -> str:  # KeyError would show the message quoted
        return str(self.args[0])


class TaskContext:
    """Passed to the task function on every cycle.

    ``get`` and ``put`` take logical names from ``pvs`` (or full PV names) and are strict: a
    timeout, a disconnect or a refused write raises :class:`~epics_bridge.io.PVError`, which ends
    the cycle as IO_FAILURE unless the task catches it. A bare identifier that is not a logical
    name raises :class:`UnknownNameError` at once. Its attributes are read-only
    (:class:`ReadOnlyError`): they are the engine's as much as the task's.
    """

    __slots__ = ("name", "pvs", "io", "log", "_names")
    name: str
    pvs: BasePVInterface
    io: BridgeIO
    log: Any
    _names: Dict[str, str]

    def __init__(self, name: str, pvs: BasePVInterface, io: BridgeIO) -> None:
        for attr, value in (("name", name), ("pvs", read_only(pvs)), ("io", io), ("log", logger.bind(task=name))):
            object.__setattr__(self, attr, value)
        object.__setattr__(self, "_names", pvs.as_dict)

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise ReadOnlyError(f"t.{name} is read-only: the task context belongs to the engine")

    def __delattr__(self, name: str) -> NoReturn:
        raise ReadOnlyError(f"t.{name} is read-only: the task context belongs to the engine")

    def pv(self, logical_or_pv: str) -> str:
        """The full PV name for a logical name; a name with ``:`` (or any non-identifier) is taken as
        a PV name already."""
        pv = self._names.get(logical_or_pv)
        if pv is not None:
            return pv
        if logical_or_pv.isidentifier():
            raise UnknownNameError(self.name, logical_or_pv, list(self._names))
        return logical_or_pv

    def get(self, names: Union[str, Sequence[str]], timeout: Optional[float] = None) -> Any:
        """Read one PV (its value) or several in one batch (``{name as given: value}``)."""
        if isinstance(names, str):
            return self.io.get(self.pv(names), timeout)
        names = list(names)
        values = self.io.get([self.pv(n) for n in names], timeout)
        return {n: values[self.pv(n)] for n in names}

    def put(self, values: Optional[Mapping[str, Any]] = None, /, **logical_values: Any) -> None:
        """Write all values in one batch and wait until the IOC acknowledged each.

        ``t.put({"valve": 0})`` and ``t.put(valve=0)`` are the same write.
        """
        merged: Dict[str, Any] = {**(values or {}), **logical_values}
        self.io.put({self.pv(n): v for n, v in merged.items()})

    def __repr__(self) -> str:
        return f"TaskContext(name={self.name!r})"
