"""The ``t`` a task function receives: its PV names, strict IO by logical name, and its logger."""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Union

from loguru import logger

from .base_pv_interface import BasePVInterface
from .io import BridgeIO

__all__ = ["TaskContext"]


class TaskContext:
    """Passed to the task function on every cycle.

    ``get`` and ``put`` take logical names from ``pvs`` (or full PV names) and are strict: a
    timeout, a disconnect or a refused write raises :class:`~epics_bridge.io.PVError`, which ends
    the cycle as IO_FAILURE unless the task catches it.
    """

    def __init__(self, name: str, pvs: BasePVInterface, io: BridgeIO) -> None:
        self.name = name
        self.pvs = pvs
        self.io = io
        self.log = logger.bind(task=name)
        self._names = pvs.as_dict

    def pv(self, logical_or_pv: str) -> str:
        """The full PV name for a logical name; anything else is taken as a PV name already."""
        return self._names.get(logical_or_pv, logical_or_pv)

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
