"""``python -m epics_bridge check PATH...``: read every PV of every task once and print a table."""

from __future__ import annotations

import argparse
import sys
from typing import Dict, NoReturn, Optional, Sequence

from ..engine.handshake import handshake_pvs, refused
from ..exits import EXIT_OK
from ..io import BridgeIO
from ..service.options import argparse_type, positive_seconds
from ..task import Task
from . import load_or_fail

__all__ = ["check", "main"]

#: Some PV did not answer.
EXIT_UNREACHABLE = 1


def check(tasks: Sequence[Task], timeout: float) -> bool:
    """Read every PV of every task in one parallel round; print task / PV / ok-or-reason.

    True when every PV answered. A read, not just a search: it proves the PV is served and
    readable by this user, which is what the daemon will need.
    """

    rows = [(t.name, logical, pv) for t in tasks for logical, pv in t.pvs.as_dict.items()]
    io = BridgeIO(timeout=timeout)
    try:
        values, failures = io.survey(list(dict.fromkeys(pv for _, _, pv in rows)))
    finally:
        io.close()
    refusals = {(t.name, logical): why for t in tasks for logical, why in refused(handshake_pvs(t), values).items()}
    header = ("TASK", "LOGICAL", "PV", "RESULT")
    table = [(name, logical, pv, _result(pv, failures, refusals.get((name, logical)))) for name, logical, pv in rows]
    widths = [max(len(row[i]) for row in [header, *table]) for i in range(3)]
    for row in [header, *table]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3])
    total = len({pv for _, _, pv in rows})
    if failures:
        print(f"{len(failures)} of {total} PVs unreachable: {', '.join(failures)}")
    if refusals:
        print(f"{len(refusals)} handshake PV(s) of a kind the daemon refuses (its tasks would not serve)")
    if not failures and not refusals:
        print(f"all {total} PVs of {len(tasks)} task(s) answered")
    return not failures and not refusals


def _result(pv: str, failures: Dict[str, str], refusal: Optional[str]) -> str:
    if pv in failures:
        return f"FAIL: {failures[pv]}"
    return f"REFUSED: {refusal}" if refusal else "ok"


def main(argv: Sequence[str]) -> NoReturn:
    parser = argparse.ArgumentParser(
        prog="python -m epics_bridge check",
        description="Load the tasks like the launcher, read every PV of every task (the standard five "
        "included) and print task / PV / ok-or-reason. Run it before enabling a service.",
        epilog="Exit status: 0 every PV answered, 1 some did not or a handshake record is of a kind the "
        "daemon refuses, 2 the task files are invalid.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="task file, or folder of task files")
    parser.add_argument("--only", nargs="+", default=[], metavar="NAME", help="check only these tasks")
    parser.add_argument(
        "--timeout",
        type=argparse_type(positive_seconds, "timeout"),
        default=2.0,
        help="seconds to wait for all PVs (default 2)",
    )
    args = parser.parse_args(argv)
    tasks = load_or_fail(args.paths, only=args.only)
    sys.exit(EXIT_OK if check(tasks, args.timeout) else EXIT_UNREACHABLE)
