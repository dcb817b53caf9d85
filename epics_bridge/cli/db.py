"""``epics-bridge db PATH... -o FILE.db``: the records of the tasks' typed PVs, for the IOC that serves them.

The tasks are loaded as the launcher loads them; every ``PV(...)`` declared with a type becomes a
record (see :mod:`epics_bridge.records`). The standard records of each task (Trigger, Busy ...)
are not written: they come from ``bridge.db``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn, Sequence

from ..exits import EXIT_OK
from ..records import database
from ..task import ConfigError
from . import load_or_fail
from .common import fail

__all__ = ["main"]


def main(argv: Sequence[str]) -> NoReturn:
    parser = argparse.ArgumentParser(
        prog="epics-bridge db",
        description="Write the records of every typed PV (PV(name, float, units=..., limits=...)) of the tasks "
        "under PATH to one database file: ai/ao, longin/longout, bi/bo, mbbi/mbbo, stringin/stringout or "
        "waveform, with their units, precision, limits, alarm levels and labels. Names use the prefix "
        "macros ($(P=<prefix>)), so the file loads as it is or, for one task, under another prefix.",
        epilog="Exit status: 0 written, 2 the task files are invalid, have no typed PV, or a name cannot "
        "be written with a prefix macro.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="task file, or folder of task files")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="FILE.db", help="the database to write")
    parser.add_argument("--only", nargs="+", default=[], metavar="NAME", help="these tasks only")
    args = parser.parse_args(argv)
    tasks = load_or_fail(args.paths, only=args.only)
    try:
        text = database(tasks)
    except ConfigError as exc:
        fail(f"epics-bridge db: {exc}")
    if not text:
        fail(
            f"epics-bridge db: the {len(tasks)} task(s) found declare no typed PV: give pvs= values such as "
            "PV('Press:RBV', float, units='mbar') (plain strings are untyped)"
        )
    try:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    except OSError as exc:
        fail(f"epics-bridge db: cannot write {args.output}: {exc.strerror or exc}")
    count = text.count("\nrecord(")
    print(f"wrote {args.output}: {count} record(s) for {len(tasks)} task(s)")
    sys.exit(EXIT_OK)
