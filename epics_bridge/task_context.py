"""The ``t`` a task function receives: its PV names, strict IO by logical name, and its logger."""

from __future__ import annotations

import difflib
from typing import Any, Callable, Dict, List, Mapping, NoReturn, Optional, Sequence, Union

from loguru import logger

from .base_pv_interface import BasePVInterface, ReadOnlyError, read_only
from .casting import CastError, from_ioc, to_ioc
from .io import BridgeIO, PVValueError
from .pv import PV
from .task import ConfigError

__all__ = ["ReadOnlyError", "TaskContext", "UnknownNameError", "read_only"]


class UnknownNameError(ConfigError, KeyError):
    """``t.get``/``t.put`` got a bare name that is no logical name of the task.

    A full PV name has a ``:`` (or is a template); a bare identifier is a logical name, so one the
    task does not declare is a typo, reported now rather than as a PV timeout seconds later.
    """

    def __init__(self, task: str, name: str, known: Sequence[str], what: str = "logical names") -> None:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        listed = ", ".join(sorted(known)) or "none"
        super().__init__(f"task '{task}': {name!r} is not one of its {what} ({listed}){hint}")

    def __str__(self) -> str:  # KeyError would show the message quoted
        return str(self.args[0])


class TaskContext:
    """Passed to the task function on every cycle.

    ``get`` and ``put`` take logical names from ``pvs`` (or full PV names) and are strict: a
    timeout, a disconnect or a refused write raises :class:`~epics_bridge.io.PVError`, which ends
    the cycle as IO_FAILURE unless the task catches it. A bare identifier that is not a logical
    name raises :class:`UnknownNameError` at once. Its attributes are read-only
    (:class:`ReadOnlyError`): they are the engine's as much as the task's.

    A PV declared with a type (:class:`~epics_bridge.pv.PV`) reads as that type, and a batch
    written to typed PVs is checked whole before any of it is sent: a value that does not fit
    raises :class:`~epics_bridge.io.PVValueError` (a PVError) naming each PV, value and what it must be.
    """

    __slots__ = ("name", "pvs", "io", "log", "_names", "_tags", "_typed", "_guard")
    name: str
    pvs: BasePVInterface
    io: BridgeIO
    log: Any
    _names: Dict[str, str]
    _tags: Dict[str, List[str]]
    _typed: Dict[str, PV]
    _guard: Callable[[str], None]

    def __init__(
        self, name: str, pvs: BasePVInterface, io: BridgeIO, guard: Callable[[str], None] = lambda operation: None
    ) -> None:
        """``guard(operation)`` runs before and after each of the task's reads and writes, and raises
        (a PVError) when the cycle may no longer touch the IOC (see engine/cycle.py)."""
        for attr, value in (("name", name), ("pvs", read_only(pvs)), ("io", io), ("log", logger.bind(task=name))):
            object.__setattr__(self, attr, value)
        object.__setattr__(self, "_guard", guard)
        object.__setattr__(self, "_names", pvs.as_dict)
        declarations = pvs.declarations
        tags: Dict[str, List[str]] = {}
        for logical, pv in declarations.items():
            for tag in pv.tags:
                tags.setdefault(tag, []).append(logical)
        object.__setattr__(self, "_tags", tags)
        # typed declarations by full PV name: a PV is typed whether named logically or in full
        object.__setattr__(self, "_typed", {pv.name: pv for pv in declarations.values() if pv.typed})

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

    def get(
        self,
        names: Union[str, Sequence[str], None] = None,
        timeout: Optional[float] = None,
        *,
        tag: Optional[str] = None,
    ) -> Any:
        """Read one PV (its value) or several in one batch (``{name as given: value}``); with
        ``tag=``, every PV declared with that tag in one batch (``{logical name: value}``)."""
        names = self._read_names(names, tag)
        if isinstance(names, str):
            pv = self.pv(names)
            return self._typed_reads({pv: self._read(pv, timeout)})[pv]
        names = list(names)
        values = self._typed_reads(self._read([self.pv(n) for n in names], timeout))
        return {n: values[self.pv(n)] for n in names}

    def put(self, values: Optional[Mapping[str, Any]] = None, /, **logical_values: Any) -> None:
        """Write all values in one batch and wait until the IOC acknowledged each.

        ``t.put({"valve": 0})`` and ``t.put(valve=0)`` are the same write.
        """
        merged: Dict[str, Any] = {**(values or {}), **logical_values}
        data = self._typed_writes({self.pv(n): v for n, v in merged.items()})
        self._guard("put")
        self.io.put(data)
        self._guard("put")

    def fields(self, name: str, timeout: Optional[float] = None) -> Dict[str, Any]:
        """The record fields a PV's declaration lists in ``fields`` (``PV(..., fields=["EGU"])``),
        read in one batch: ``{"EGU": "mbar"}``."""
        pv = self.pv(name)
        declared = next((d for d in self.pvs.declarations.values() if d.name == pv), None)
        wanted = list(declared.fields or ()) if declared is not None else []
        if not wanted:
            raise ConfigError(f"task '{self.name}': {name!r} declares no fields to read (PV(..., fields=['EGU']))")
        values = self._read([f"{pv}.{field}" for field in wanted], timeout)
        return {field: values[f"{pv}.{field}"] for field in wanted}

    def _read(self, pvs: Union[str, List[str]], timeout: Optional[float]) -> Any:
        self._guard("get")
        values = self.io.get(pvs, timeout)
        self._guard("get")  # what came back may be a restarted IOC's
        return values

    def _read_names(self, names: Union[str, Sequence[str], None], tag: Optional[str]) -> Union[str, Sequence[str]]:
        """What a ``get`` reads: the names given, or the logical names declared with ``tag``."""
        if tag is None:
            if names is None:
                raise TypeError("t.get: give the names to read, or tag=")
            return names
        if names is not None:
            raise TypeError("t.get: give names or tag=, not both")
        logical = self._tags.get(tag)
        if logical is None:
            raise UnknownNameError(self.name, tag, list(self._tags), what="tags")
        return logical

    def _typed_reads(self, values: Dict[str, Any]) -> Dict[str, Any]:
        """Each value as its PV declares it; PVValueError naming every one that cannot be."""
        return self._cast(values, from_ioc, "get")

    def _typed_writes(self, values: Dict[str, Any]) -> Dict[str, Any]:
        """What to write for each value, every one checked before any is sent."""
        return self._cast(values, to_ioc, "put")

    def _cast(self, values: Dict[str, Any], cast: Callable[[Any, PV], Any], operation: str) -> Dict[str, Any]:
        if not self._typed:
            return values
        failures: Dict[str, BaseException] = {}
        for pv, value in values.items():
            declared: Optional[PV] = self._typed.get(pv)
            if declared is not None:
                try:
                    values[pv] = cast(value, declared)
                except CastError as exc:
                    failures[pv] = exc
        if failures:
            raise PVValueError(operation, failures)
        return values

    def __repr__(self) -> str:
        return f"TaskContext(name={self.name!r})"
