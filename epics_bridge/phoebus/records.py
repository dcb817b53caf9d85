"""Which record serves each of a task's PVs, read from the task's own ``db=`` files, so a screen can
give a setpoint an entry field, a choice a combo box and a waveform a plot without asking an IOC.

Only what a widget needs is read: the record type and, for arrays, the element type. A PV that no
task database defines (it lives on a facility IOC) is unknown here and gets a read-only widget.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, Optional

from ..task import Task

__all__ = ["Record", "parse_db", "records_of"]

_RECORD = re.compile(r'\b(?:g?record)\s*\(\s*"?(\w+)"?\s*,\s*"([^"]+)"\s*\)')
_FTVL = re.compile(r'field\s*\(\s*FTVL\s*,\s*"?(\w+)"?\s*\)')
_MACRO = re.compile(r"\$[({](\w+)(?:=([^)}]*))?[)}]")
_COMMENT = re.compile(r"#[^\n]*")


@dataclass(frozen=True)
class Record:
    """A record as a widget sees it."""

    type: str
    ftvl: Optional[str] = None

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


def _expand(text: str, macros: Mapping[str, str]) -> str:
    """``$(NAME)`` and ``$(NAME=default)`` as dbLoadRecords expands them (unset, no default: kept)."""

    def one(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        return macros.get(name, default if default is not None else match.group(0))

    return _MACRO.sub(one, text)


def parse_db(path: Path, macros: Mapping[str, str]) -> Dict[str, Record]:
    """PV name -> record, for every record of one database file loaded with ``macros``."""
    text = _expand(_COMMENT.sub("", path.read_text(errors="replace")), macros)
    found: Dict[str, Record] = {}
    heads = list(_RECORD.finditer(text))
    for head, following in zip(heads, heads[1:] + [None]):
        body = text[head.end() : following.start() if following else len(text)]
        ftvl = _FTVL.search(body)
        found[head.group(2)] = Record(head.group(1), ftvl.group(1) if ftvl else None)
    return found


def records_of(task: Task) -> Dict[str, Record]:
    """PV name -> record, for every record of the task's own databases (unreadable files are skipped:
    the launcher already checked that they exist, and a screen is no place to refuse them)."""
    found: Dict[str, Record] = {}
    for path, macros in task.db:
        try:
            found.update(parse_db(path, macros))
        except OSError:
            continue
    return found
