"""EPICS records from typed PV declarations: what ``epics-bridge db`` writes and ``--ioc`` loads.

Each typed :class:`~epics_bridge.pv.PV` becomes the record a facility's IOC would hold for it, of
the kind its type and direction call for (pythonSoftIOC's builder and FastCS map their typed
attributes the same way):

=========  ==================  ===================
type       input (readback)    output (setpoint)
=========  ==================  ===================
float      ai                  ao
int        longin              longout
bool       bi                  bo
enum       mbbi                mbbo
str        stringin            stringout
array      waveform            waveform
=========  ==================  ===================

with DESC, EGU, PREC, the display range LOPR/HOPR and (outputs) the drive limits DRVL/DRVH from
``limits``, LOLO/LOW/HIGH/HIHI with MAJOR/MINOR severities from ``alarm``, the enum labels, and
NELM/FTVL for arrays.

Names are written two ways. For a file (:func:`database` with ``macros=True``) every prefix key
of a name's template is a macro whose default is its value (``{main}`` is ``$(P=VAC:PUMP:01:)``),
so the file loads as it is, or with ``P=...`` for another instance of a one-task file, like
``db/bridge.db``; a template with no key cannot be expressed with a macro and is refused. For the
embedded IOC the names are written resolved.

:func:`parse_db` reads the records a database file defines (kind, name, fields, macros expanded),
so that ``--ioc`` generates only what the tasks' own files lack and the screens know each PV's record.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import AbstractSet, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from .pv import PV
from .task import ConfigError, Task

__all__ = ["Record", "database", "parse_db", "record_for", "task_records"]

#: Characters EPICS allows in a record name (no '.': that names a field; no '$': a macro).
_RECORD_NAME = re.compile(r"[A-Za-z0-9_\-+:\[\]<>;]+")
#: Longest record name EPICS base accepts (PVNAME_STRINGSZ - 1).
MAX_NAME = 60
#: The macro of the task's own prefix, as in db/bridge.db.
PREFIX_MACRO = "P"
#: Where an enum state's label goes, state by state (ZRST for state 0 ... FFST for state 15).
STATES = ("ZR", "ON", "TW", "TH", "FR", "FV", "SX", "SV", "EI", "NI", "TE", "EL", "TV", "TT", "FT", "FF")
#: A bool PV without choices: the labels of its two states.
BOOL_LABELS = ("False", "True")
_KINDS = {
    "float": ("ai", "ao"),
    "int": ("longin", "longout"),
    "bool": ("bi", "bo"),
    "enum": ("mbbi", "mbbo"),
    "str": ("stringin", "stringout"),
    "float[]": ("waveform", "waveform"),
    "int[]": ("waveform", "waveform"),
}
_FTVL = {"float[]": "DOUBLE", "int[]": "LONG"}
#: alarm=(lolo, low, high, hihi): each level's limit field and severity field with its severity.
_ALARM_FIELDS = (
    ("LOLO", "LLSV", "MAJOR"),
    ("LOW", "LSV", "MINOR"),
    ("HIGH", "HSV", "MINOR"),
    ("HIHI", "HHSV", "MAJOR"),
)
#: record(kind, "name") and grecord(...) in a database file, and field(NAME, "value") in its body.
_RECORD = re.compile(r"\bg?record\s*\(\s*\"?([A-Za-z0-9_]+)\"?\s*,\s*\"([^\"]*)\"")
_FIELD = re.compile(r"\bfield\s*\(\s*\"?([A-Za-z0-9_]+)\"?\s*,\s*\"((?:[^\"\\]|\\.)*)\"")
_COMMENT = re.compile(r"^\s*#.*$", re.MULTILINE)
_MACRO_REF = re.compile(r"\$(?:\(([A-Za-z0-9_]+)(?:=([^)]*))?\)|\{([A-Za-z0-9_]+)(?:=([^}]*))?\})")


@dataclass(frozen=True)
class Record:
    """One record: its kind, its name as the file writes it, and its fields in order."""

    kind: str
    name: str
    fields: Tuple[Tuple[str, str], ...] = ()

    def field(self, name: str) -> Optional[str]:
        """The value the record gives field ``name`` (the last one written), or None."""
        return next((value for field, value in reversed(self.fields) if field == name), None)

    def text(self) -> str:
        lines = [f'record({self.kind}, "{self.name}") {{']
        lines += [f'    field({name}, "{_escape(value)}")' for name, value in self.fields]
        return "\n".join(lines + ["}"])


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _number(value: float, integer: bool) -> str:
    return str(int(value)) if integer else repr(float(value))


def record_for(pv: PV, name: str, logical: str) -> Record:
    """The record for a typed declaration ``pv`` (its name resolved), written under ``name``."""
    kind = pv.kind
    if kind is None:
        raise ValueError(f"{pv.name}: an untyped PV has no record kind")
    record_kind = _KINDS[kind][pv.output]
    fields: List[Tuple[str, str]] = [("DESC", (pv.description or logical)[:40])]
    integer = kind in ("int", "int[]")
    if pv.units is not None:
        fields.append(("EGU", pv.units))
    if pv.precision is not None:
        fields.append(("PREC", str(pv.precision)))
    if pv.limits is not None:
        low, high = (_number(v, integer) for v in pv.limits)
        fields += [("LOPR", low), ("HOPR", high)]
        if pv.output and not pv.is_array:
            fields += [("DRVL", low), ("DRVH", high)]
    if pv.alarm is not None:
        for level, (limit, severity, grade) in zip(pv.alarm, _ALARM_FIELDS):
            if level is not None:
                fields += [(limit, _number(level, integer)), (severity, grade)]
    if pv.is_array:
        fields += [("FTVL", _FTVL[kind]), ("NELM", str(pv.length))]
    elif kind == "bool":
        zero, one = pv.choices or BOOL_LABELS
        fields += [("ZNAM", zero), ("ONAM", one)]
    elif kind == "enum":
        fields += [(f"{state}ST", label) for state, label in zip(STATES, pv.labels or ()) if label]
    return Record(record_kind, name, tuple(fields))


def _macro_name(template: str, prefixes: Mapping[str, str]) -> Optional[str]:
    """The template with each ``{key}`` as a macro defaulting to its value; None when it has no key
    (or a conversion or format spec no macro can carry)."""
    out, keys = [], 0
    for literal, key, spec, conversion in string.Formatter().parse(template):
        out.append(literal)
        if key is None:
            continue
        if spec or conversion or key not in prefixes:
            return None
        keys += 1
        out.append(f"$({PREFIX_MACRO if key == 'main' else key}={prefixes[key]})")
    return "".join(out) if keys else None


def task_records(task: Task, macros: bool, skip: AbstractSet[str] = frozenset()) -> Dict[str, Record]:
    """PV name -> its record, for every typed PV of ``task`` but those served by a record in ``skip``
    (names, or fields of records, there); ConfigError naming the task and each PV whose name is not
    a record name (or, with ``macros``, cannot be written with a prefix macro)."""
    prefixes = task.pvs.prefixes
    templates = task.pvs.templates
    records: Dict[str, Record] = {}
    problems = []
    for logical, pv in task.pvs.declarations.items():
        if not pv.typed or pv.name.split(".")[0] in skip:
            continue
        where = f"PV '{logical}' ({pv.name})"
        if not _RECORD_NAME.fullmatch(pv.name) or len(pv.name) > MAX_NAME:
            problems.append(
                f"{where}: not a record name (at most {MAX_NAME} letters, digits and _-+:[]<>;, no '.' field)"
            )
            continue
        name = _macro_name(templates[logical], prefixes) if macros else pv.name
        if name is None:
            problems.append(
                f"{where}: its template {templates[logical]!r} uses no prefix key, so no macro can express it; "
                "write it relative to the prefix (or with a prefixes key)"
            )
            continue
        records[pv.name] = record_for(pv, name, logical)
    if problems:
        raise ConfigError(f"{task.source}: task '{task.name}': " + "; ".join(problems))
    return records


def database(tasks: Sequence[Task], macros: bool = True, skip: Iterable[str] = ()) -> str:
    """The text of one database holding a record for every typed PV of ``tasks`` (not those whose
    full name is in ``skip``); '' when there is none. A PV two tasks declare alike is written once;
    declared differently, it is a ConfigError naming both."""
    skipped = frozenset(skip)
    chosen: Dict[str, Tuple[str, Record]] = {}  # PV name -> (the task that declared it first, its record)
    problems: List[str] = []
    sections: List[Tuple[Task, List[Record]]] = []
    for task in tasks:
        try:
            records = task_records(task, macros, skipped)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        fresh = []
        for pv, record in records.items():
            owner, first = chosen.setdefault(pv, (task.name, record))
            if first is record:
                fresh.append(record)
            elif (first.kind, first.fields[1:]) != (record.kind, record.fields[1:]):
                problems.append(
                    f"{task.source}: task '{task.name}': PV {pv} is also declared by task '{owner}' "
                    f"as another record ({first.kind} against {record.kind}, or other fields): declare it alike"
                )
        if fresh:
            sections.append((task, fresh))
    if problems:
        raise ConfigError("\n".join(problems))
    if not sections:
        return ""
    return _header(macros) + "".join(_section(task, records, macros) for task, records in sections)


def _header(macros: bool) -> str:
    lines = ["# Records of the typed PVs of epics-bridge tasks, written by epics-bridge from their PV(...)"]
    if macros:
        lines += [
            "# declarations. Each name's macro defaults to the prefix it was declared with, so the file",
            '# loads as it is, dbLoadRecords("FILE.db"); a file of one task loads under another prefix',
            '# with dbLoadRecords("FILE.db", "P=OTHER:PREFIX:"). The standard records come from bridge.db.',
        ]
    else:
        lines.append("# declarations, for the embedded IOC of --ioc.")
    return "\n".join(lines) + "\n"


def _section(task: Task, records: List[Record], macros: bool) -> str:
    macro = f" (macro {PREFIX_MACRO})" if macros else ""
    head = f"\n# task '{task.name}' ({task.source}), prefix {task.prefix}{macro}\n"
    return head + "\n".join(record.text() for record in records) + "\n"


def parse_db(path: Path, macros: Mapping[str, str]) -> Dict[str, Record]:
    """Record name -> record, for every record a database file defines when loaded with ``macros``,
    expanded as dbLoadRecords expands them (a macro with neither a value nor a default is left as
    written, so it matches no real name). A record defined twice keeps the fields of both."""

    def expand(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        default = match.group(2) if match.group(1) else match.group(4)
        value = macros.get(name, default)
        return match.group(0) if value is None else value

    text = _MACRO_REF.sub(expand, _COMMENT.sub("", path.read_text(errors="replace")))
    found: Dict[str, Record] = {}
    heads = list(_RECORD.finditer(text))
    for head, following in zip(heads, heads[1:] + [None]):
        body = text[head.end() : following.start() if following else len(text)]
        kind, name = head.group(1), head.group(2)
        earlier = found.get(name, Record(kind, name)).fields
        found[name] = Record(kind, name, earlier + tuple(_FIELD.findall(body)))
    return found
