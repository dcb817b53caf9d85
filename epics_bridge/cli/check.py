"""``python -m epics_bridge check PATH...``: read every PV of every task once and print a table: whether
it answered and, for a typed PV, whether its record gives the declared type."""

from __future__ import annotations

import argparse
import sys
from typing import Dict, NoReturn, Sequence

from ..casting import mismatch
from ..engine.handshake import handshake_pvs, refused
from ..exits import EXIT_OK
from ..io import BridgeIO
from ..service.options import argparse_type, positive_seconds
from ..task import Task
from . import load_or_fail

__all__ = ["check", "main"]

#: Some PV did not answer, or a typed PV's record cannot give its declared type.
EXIT_UNREACHABLE = 1


def check(tasks: Sequence[Task], timeout: float) -> bool:
    """Read every PV of every task in one parallel round; print task / PV / ok-or-reason.

    True when every PV answered, each handshake PV with a kind the daemon accepts and each typed
    one with a value of its declared kind. A read, not
    just a search: it proves the PV is served and readable by this user, which is what the daemon
    will need; a typed PV served by a record of another kind (a string for a float, a scalar for an
    array) would fail every read of it.
    """

    rows = [(t, logical, pv) for t in tasks for logical, pv in t.pvs.as_dict.items()]
    io = BridgeIO(timeout=timeout)
    try:
        values, failures = io.survey(list(dict.fromkeys(pv for _, _, pv in rows)))
    finally:
        io.close()
    refusals = {(t.name, logical): why for t in tasks for logical, why in refused(handshake_pvs(t), values).items()}
    wrong: Dict[str, str] = {}  # PV -> the first declaration its record cannot serve

    def result(task: Task, logical: str, pv: str) -> str:
        if pv in failures:
            return f"FAIL: {failures[pv]}"
        refusal = refusals.get((task.name, logical))
        if refusal:
            return f"REFUSED: {refusal}"
        declared = task.pvs.declarations.get(logical)
        problem = mismatch(values[pv], declared) if declared is not None else None
        if problem is None:
            return "ok"
        wrong.setdefault(pv, problem)
        return f"WRONG TYPE: {problem}"

    header = ("TASK", "LOGICAL", "PV", "RESULT")
    table = [(task.name, logical, pv, result(task, logical, pv)) for task, logical, pv in rows]
    widths = [max(len(row[i]) for row in [header, *table]) for i in range(3)]
    for row in [header, *table]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3])
    total = len({pv for _, _, pv in rows})
    if failures:
        print(f"{len(failures)} of {total} PVs unreachable: {', '.join(failures)}")
    if refusals:
        print(f"{len(refusals)} handshake PV(s) of a kind the daemon refuses (its tasks would not serve)")
    if wrong:
        print(f"{len(wrong)} of {total} PVs served by a record of another type than declared: {', '.join(wrong)}")
    if not failures and not refusals and not wrong:
        print(f"all {total} PVs of {len(tasks)} task(s) answered")
    return not failures and not refusals and not wrong


def main(argv: Sequence[str]) -> NoReturn:
    parser = argparse.ArgumentParser(
        prog="python -m epics_bridge check",
        description="Load the tasks like the launcher, read every PV of every task (the standard five "
        "included) and print task / PV / ok-or-reason. Run it before enabling a service.",
        epilog="Exit status: 0 every PV answered, 1 some did not, a handshake record is of a kind the daemon "
        "refuses or a typed PV's record of another type than declared, 2 the task files are invalid.",
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
