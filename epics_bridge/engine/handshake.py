"""What a task makes sure of before it serves: its IOC answers the whole handshake, and no other
daemon serves its prefix.

One round reads every handshake PV at once (Trigger, Busy, Heartbeat, TaskStatus, TaskDuration),
with the optional records of ``db/bridge.db`` (the CycleEnd group, Owner, HeartbeatAge) and the
task's own PVs. Each outcome gets its own words, because each needs a different person:

- nothing answers: the IOC is unreachable (a network or an IOC down); asked again every second;
- some answer and some do not, or one is the wrong kind of record: the IOC runs without the
  standard records (a db not loaded, an old template, a typo in a macro). One ERROR names each
  missing PV and what to load; the task re-checks every few seconds, quietly unless the answer
  changes;
- another daemon's live claim in ``$(P)Owner``: one ERROR naming both daemons (see ownership.py);
- everything there: a PV of the task's own that did not answer is a warning (its cycles will
  fail with IO_FAILURE, naming it), and a typed PV served by a record of another kind (a string
  for a float, a scalar for an array) one ERROR naming the kind found; neither is a reason to stay
  down.

Until the task serves, its heartbeat does not pulse (``HeartbeatAge`` shows it down), except while
the IOC is unreachable, when the pulse keeps trying so that the watchdog counts the outage as
before.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from ..base_pv_interface import STANDARD_FIELDS
from ..casting import mismatch
from ..io import BridgeIO, PVError
from ..task import Task
from ..values import kind_of, to_python
from .ownership import Ownership, owner_label

__all__ = ["Handshake", "group_pv", "handshake_pvs", "kind_of", "refused"]

#: Nothing answers: ask again this often (s).
UNREACHABLE_RETRY = 1.0
#: Part of the handshake is not served, which takes an operator to fix: ask again this often (s).
INCOMPLETE_RETRY = 5.0
#: Once the handshake PVs have answered, the optional and the task's own PVs get this long more (s).
GRACE = 1.0

_BINARY = "a binary or integer record (bo/bi, longout/longin)"
#: What each handshake PV must be, as (accepted kinds, words for a message).
NEEDS: Dict[str, Tuple[Tuple[str, ...], str]] = {
    "trigger": (("enum", "integer"), _BINARY),
    "busy": (("enum", "integer"), _BINARY),
    "heartbeat": (("enum", "integer"), _BINARY),
    "task_status": (("enum", "integer"), "an mbbi or integer record"),
    "task_duration": (("integer", "float"), "a number (ai)"),
}
#: The record names the standard handshake PVs have in db/bridge.db, for messages.
RECORDS = {logical: template.replace("{main}", "") for logical, template in STANDARD_FIELDS.items()}


def handshake_pvs(task: Task) -> Dict[str, str]:
    """The handshake PVs ``task`` needs, by logical name (timer mode never touches Trigger)."""
    uses_trigger = task.period is None
    return {logical: getattr(task.pvs, logical) for logical in STANDARD_FIELDS if logical != "trigger" or uses_trigger}


def group_pv(task: Task) -> Optional[str]:
    """The task's CycleEnd group PV (db/bridge.db's); None for a task whose PVs are not bridge.db's."""
    return task.prefix + "CycleEnd" if task.standard_handshake else None


def refused(standard: Mapping[str, str], values: Mapping[str, Any]) -> Dict[str, str]:
    """The handshake PVs among ``values`` whose record is of a kind the daemon refuses, each with
    why: the one judgement the daemon and ``check`` share."""
    return {
        logical: f"{pv} is {_article(kind_of(values[pv]))}, needs {NEEDS[logical][1]}"
        for logical, pv in standard.items()
        if pv in values and kind_of(values[pv]) not in NEEDS[logical][0]
    }


class Handshake:
    """Waits, on the loop thread, until the task may serve; reports why not while it may not."""

    def __init__(self, task: Task, io: BridgeIO, log: Any, ownership: Ownership) -> None:
        self.task, self.io, self.log, self.ownership = task, io, log, ownership
        self.standard = handshake_pvs(task)
        self.group = group_pv(task)
        self.own = {logical: pv for logical, pv in task.pvs.as_dict.items() if logical not in STANDARD_FIELDS}
        self._said: Optional[str] = None  # the last problem logged, so a repeat stays quiet
        self._own_checked = False
        self._holder: Optional[str] = None

    def wait(self, idle: Callable[[float], bool], waiting: Callable[[str, bool], None]) -> Optional[Tuple[Any, Any]]:
        """Block until the task may serve: then (the CycleEnd group's value, None if it did not
        answer; Busy's value).

        None when asked to stop. ``idle(s)`` sleeps on the loop's queue (False on stop);
        ``waiting(reason, pulse)`` is told why the task may not serve yet and whether its heartbeat
        should keep trying to pulse.
        """
        while True:
            optional = [
                *([self.group] if self.group else []),
                *self.ownership.names,
                *([] if self._own_checked else self.own.values()),
            ]
            values, failures = self.io.survey([*self.standard.values(), *optional], settle=(len(self.standard), GRACE))
            outcome = self._judge(values, failures)
            if outcome is not None:
                reason, pulse, retry = outcome
                waiting(reason, pulse)
                if not idle(retry):
                    return None
                continue
            try:
                heartbeat = self.task.pvs.heartbeat
                winner, busy = self.ownership.claim(self.task.pvs.busy, {heartbeat: to_python(values[heartbeat])})
            except PVError as exc:
                waiting(self._say("WARNING", f"could not claim prefix {self.task.prefix}: {exc}"), False)
                winner = ""
            if winner is None:
                if self._said is not None:
                    self.log.info("handshake complete: serving prefix {}", self.task.prefix)
                self._said, self._holder = None, None
                return values.get(self.group) if self.group is not None else None, busy
            # the IOC refused the claim, or another daemon claimed in the same instant: the next round says who
            if not idle(self._owner_retry()):
                return None

    def _judge(self, values: Dict[str, Any], failures: Dict[str, str]) -> Optional[Tuple[str, bool, float]]:
        """Why the task may not serve after this round, as (reason, pulse, retry in s); None if it may."""
        answered = [pv for pv in self.standard.values() if pv in values]
        if not answered:
            first = next(iter(failures.items()))
            message = (
                f"waiting for the IOC: none of the {len(self.standard)} handshake PVs answers (IOC "
                f"unreachable or not running): {first[0]}: {first[1]}; retrying every {UNREACHABLE_RETRY:g} s"
            )
            self._say("WARNING", message)
            return "IOC unreachable", self._holder is None, UNREACHABLE_RETRY
        missing = {logical: failures[pv] for logical, pv in self.standard.items() if pv in failures}
        wrong = refused(self.standard, values)
        if missing or wrong:
            self._say("ERROR", self._incomplete(missing, wrong))
            names = ", ".join(RECORDS[logical] for logical in [*missing, *wrong])
            return f"handshake incomplete: {names}", False, INCOMPLETE_RETRY
        if not self._own_checked:
            self._own_checked = True
            self._report_own(values, failures)
        holder = self.ownership.verdict(values)
        if holder is None:
            return None
        self._holder = holder
        message = (
            f"another daemon serves prefix {self.task.prefix}: {self.ownership.pv} names {holder} and its "
            f"heartbeat is alive; this daemon ({self.ownership.token}) does not serve it twice and waits "
            f"until that one stops (a graceful stop clears the record) or its heartbeat has been silent for "
            f"{self.ownership.stale_after:g} s"
        )
        self._say("ERROR", message)
        return (
            f"prefix served by {owner_label(holder)} (this is {owner_label(self.ownership.token)})",
            False,
            self._owner_retry(),
        )

    def _incomplete(self, missing: Dict[str, str], wrong: Dict[str, str]) -> str:
        pvs = self.standard
        parts = []
        if missing:
            parts.append(
                "missing: "
                + ", ".join(f"{RECORDS[logical]} ({pvs[logical]}{_unserved(why)})" for logical, why in missing.items())
            )
        if wrong:
            parts.append("wrong kind: " + ", ".join(f"{RECORDS[logical]} ({why})" for logical, why in wrong.items()))
        if self.task.standard_handshake:
            load = f'load the standard records on that IOC: dbLoadRecords("db/bridge.db", "P={self.task.prefix}")'
        else:
            load = "serve these records on that IOC (db/bridge.db has them under a prefix)"
        return (
            f"the IOC answers only part of the handshake of task '{self.task.name}': {'; '.join(parts)}. To fix, "
            f"{load}. The task does not serve until then (not ready) and checks again every "
            f"{INCOMPLETE_RETRY:g} s"
        )

    def _report_own(self, values: Dict[str, Any], failures: Dict[str, str]) -> None:
        declared = self.task.pvs.declarations
        wrong = []
        for logical, pv in self.own.items():
            problem = mismatch(values[pv], declared[logical]) if pv in values and logical in declared else None
            if problem:
                wrong.append(f"{logical} ({pv}: {problem})")
        if wrong:
            self.log.error(
                "{} typed PV(s) of the task are served by a record of another type; every read of them "
                "fails (PVValueError, IO_FAILURE) until the record or the declaration changes: {}",
                len(wrong),
                ", ".join(wrong),
            )
        silent = [f"{logical} ({pv}: {failures[pv]})" for logical, pv in self.own.items() if pv in failures]
        if silent:
            self.log.warning(
                "{} of the task's {} own PV(s) did not answer at start-up; cycles that use them will "
                "fail with IO_FAILURE: {}",
                len(silent),
                len(self.own),
                ", ".join(silent),
            )

    def _owner_retry(self) -> float:
        return max(1.0, self.task.heartbeat_period)

    def _say(self, level: str, message: str) -> str:
        """Log ``message`` once: a repeat of the last one goes to DEBUG."""
        self.log.log(level if message != self._said else "DEBUG", message)
        self._said = message
        return message


def _article(kind: str) -> str:
    return ("an " if kind[0] in "aeiou" else "a ") + kind


def _unserved(why: str) -> str:
    """How a missing handshake PV is named: a timeout means the IOC does not serve it."""
    return " is not served" if why.startswith("timeout") else ": " + why
