"""Which record serves each of a task's PVs, so a screen can give a setpoint an entry field (a
spinner within its drive limits), a choice a combo box and a waveform a plot without asking an IOC.

The records come from the task's own ``db=`` files and, for each typed PV those do not define, from
its declaration: the record ``--ioc`` would make for it. A PV known neither way (it lives on a
facility IOC) gets a read-only widget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from .. import records
from ..task import Task

__all__ = ["Record", "records_of"]


@dataclass(frozen=True)
class Record:
    """A record as a widget sees it."""

    type: str
    ftvl: Optional[str] = None
    #: DRVL/DRVH, when the record has a drive range (low below high: EPICS ignores it otherwise).
    drive: Optional[Tuple[float, float]] = None

    @classmethod
    def of(cls, record: records.Record) -> Record:
        return cls(record.kind, record.field("FTVL"), _drive(record))

    @property
    def writable(self) -> bool:
        return self.type in {"ao", "longout", "int64out", "stringout", "lso", "mbbo", "bo"}

    @property
    def choice(self) -> bool:
        return self.type in {"bo", "mbbo"}

    @property
    def numeric_array(self) -> bool:
        return self.type in {"waveform", "aai", "aao", "subArray"} and self.ftvl not in (
            None,
            "CHAR",
            "UCHAR",
            "STRING",
        )


def _drive(record: records.Record) -> Optional[Tuple[float, float]]:
    try:
        low, high = float(record.field("DRVL") or "nan"), float(record.field("DRVH") or "nan")
    except ValueError:  # a macro left unexpanded, a typo: no range the screen can rely on
        return None
    return (low, high) if math.isfinite(low) and math.isfinite(high) and low < high else None


def records_of(task: Task) -> Dict[str, Record]:
    """PV name -> record, for every record of the task's own databases (unreadable files are skipped:
    the launcher already checked that they exist, and a screen is no place to refuse them) and
    every typed PV they do not define."""
    found: Dict[str, Record] = {}
    for path, macros in task.db:
        try:
            found.update({name: Record.of(record) for name, record in records.parse_db(path, macros).items()})
        except OSError:
            continue
    for logical, pv in task.pvs.declarations.items():
        if pv.typed and pv.name not in found:
            found[pv.name] = Record.of(records.record_for(pv, pv.name, logical))
    return found
