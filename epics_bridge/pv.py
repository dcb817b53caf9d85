"""``PV``: a typed PV declaration, one value of ``pvs=`` beside plain name templates.

One declaration carries everything the rest of the project derives from it: the type a read
returns and a write must have (the task context), the record the IOC needs (``epics-bridge db``,
``--ioc``), and the units, precision, limits and alarm levels operators see. Declaring them once,
beside the name, is what keeps the task, its database and its screens from disagreeing.

A leaf: no p4p, no numpy, nothing of the project above it. :meth:`PV.problems` lists what is wrong
with a declaration; the interface that holds it turns them into one error at registration, naming
the task and the field.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import IntEnum
from functools import cached_property
from numbers import Real
from typing import Any, Iterable, List, Optional, Tuple, Type

__all__ = ["PV", "SCALAR_TYPES", "MAX_CHOICES", "MAX_LABEL", "MAX_DESCRIPTION", "MAX_UNITS"]

#: The scalar types a PV may declare (besides an IntEnum class).
SCALAR_TYPES: Tuple[type, ...] = (float, int, bool, str)
#: An mbbi/mbbo has sixteen states (ZRST .. FFST), each label at most 25 characters.
MAX_CHOICES = 16
MAX_LABEL = 25
#: DESC holds 40 characters, EGU 15: longer text would be cut by the IOC without a word.
MAX_DESCRIPTION = 40
MAX_UNITS = 15
#: A record field name: FIELDS of a record type are upper case (VAL, EGU, NELM ...).
_FIELD = re.compile(r"[A-Z][A-Z0-9_]*")
#: The suffix that marks a setpoint (an output record) when ``writable`` is not given.
SETPOINT_SUFFIX = "SP"

Limits = Tuple[float, float]
Alarm = Tuple[Optional[float], Optional[float], Optional[float], Optional[float]]


def _tuple(value: Any) -> Any:
    """Lists become tuples, so a declaration is hashable and cannot change after registration."""
    return tuple(value) if isinstance(value, (list, tuple)) else value


@dataclass(frozen=True, init=False)
class PV:
    """A PV name template with its type and metadata.

    ``PV(name, cast_type, fields, tags)`` keeps epics-bridge 5.0.0's first four parameters; the rest
    are keywords. ``writable`` decides between an output record (a setpoint: an operator or the task
    writes it) and an input record (a readback); when not given, a name ending in ``SP`` is an
    output and any other name an input.
    """

    name: str
    cast_type: Optional[type] = None
    fields: Optional[Tuple[str, ...]] = None
    tags: Tuple[str, ...] = ()
    units: Optional[str] = None
    precision: Optional[int] = None
    limits: Optional[Limits] = None
    alarm: Optional[Alarm] = None
    choices: Optional[Tuple[str, ...]] = None
    length: Optional[int] = None
    description: Optional[str] = None
    writable: Optional[bool] = None

    def __init__(
        self,
        name: str,
        cast_type: Optional[type] = None,
        fields: Optional[Iterable[str]] = None,
        tags: Optional[Iterable[str]] = None,
        *,
        units: Optional[str] = None,
        precision: Optional[int] = None,
        limits: Optional[Tuple[float, float]] = None,
        alarm: Optional[Tuple[Optional[float], Optional[float], Optional[float], Optional[float]]] = None,
        choices: Optional[Iterable[str]] = None,
        length: Optional[int] = None,
        description: Optional[str] = None,
        writable: Optional[bool] = None,
    ) -> None:
        values = dict(
            name=name,
            cast_type=cast_type,
            fields=_tuple(fields),
            tags=() if tags is None else _tuple(tags),
            units=units,
            precision=precision,
            limits=_tuple(limits),
            alarm=_tuple(alarm),
            choices=_tuple(choices),
            length=length,
            description=description,
            writable=writable,
        )
        for attr, value in values.items():
            object.__setattr__(self, attr, value)

    # -- what the declaration means (computed once: the cycle asks on every read and write) ---------
    @cached_property
    def enum_class(self) -> Optional[Type[IntEnum]]:
        """The IntEnum class of ``cast_type``, if it is one."""
        kind = self.cast_type
        return kind if isinstance(kind, type) and issubclass(kind, IntEnum) else None

    @cached_property
    def is_array(self) -> bool:
        return isinstance(self.length, int) and self.length > 1

    @cached_property
    def labels(self) -> Optional[Tuple[str, ...]]:
        """The enum state labels by index: ``choices``, or an IntEnum's member names at their values
        (a value without a member is an empty state). None for a PV that is no enum."""
        if self.choices is not None and self.cast_type is not bool:
            return self.choices
        enum = self.enum_class
        if enum is None:
            return None
        if not list(enum):
            return ()
        top = max(int(member) for member in enum)
        by_value = {int(member): member.name for member in enum}
        return tuple(by_value.get(index, "") for index in range(top + 1))

    @cached_property
    def kind(self) -> Optional[str]:
        """What the value is: 'float', 'int', 'bool', 'str', 'enum', an array of 'float' or 'int'
        ('float[]', 'int[]'), or None for an untyped PV (read and written as the IOC has it)."""
        if self.is_array:
            return f"{(self.cast_type or float).__name__}[]"
        if self.labels is not None:
            return "enum"
        if self.cast_type in SCALAR_TYPES:
            return self.cast_type.__name__
        return None

    @cached_property
    def typed(self) -> bool:
        return self.kind is not None

    @cached_property
    def output(self) -> bool:
        """An output record (written by clients): ``writable``, or inferred from the ``SP`` suffix."""
        return self.writable if self.writable is not None else self.name.endswith(SETPOINT_SUFFIX)

    def type_name(self) -> str:
        """The declared type as messages name it: 'float', 'TaskStatus', "one of 'Closed', 'Open'",
        'float[16]'."""
        if self.is_array:
            return f"{(self.cast_type or float).__name__}[{self.length}]"
        enum = self.enum_class
        if enum is not None:
            return enum.__name__
        if self.labels is not None:
            return "one of " + ", ".join(map(repr, self.labels))
        return self.kind or "untyped"

    # -- validation ------------------------------------------------------------------------------
    def problems(self) -> List[str]:
        """Everything wrong with this declaration, one phrase each (empty when it is sound)."""
        problems = self._type_problems()
        problems += _strings("fields", self.fields, _FIELD, "an upper-case record field name such as 'EGU'")
        problems += _strings("tags", self.tags, None, "a non-empty string")
        problems += _text("units", self.units, MAX_UNITS)
        problems += _text("description", self.description, MAX_DESCRIPTION)
        if self.writable is not None and not isinstance(self.writable, bool):
            problems.append(f"writable must be True, False or None, not {self.writable!r}")
        if not problems:
            problems += self._numeric_problems()
        return problems

    def _type_problems(self) -> List[str]:
        kind = self.cast_type
        if kind is not None and kind not in SCALAR_TYPES and self.enum_class is None:
            return [f"cast_type must be float, int, bool, str or an IntEnum class, not {kind!r}"]
        problems: List[str] = []
        if self.length is not None:
            if not _integer(self.length) or self.length < 1:
                problems.append(f"length must be an integer of at least 1, not {self.length!r}")
            elif self.is_array and kind not in (None, float, int):
                problems.append(f"length {self.length}: an array PV holds float or int, not {_name(kind)}")
            elif self.is_array and self.choices is not None:
                problems.append("an array PV cannot have choices")
        enum = self.enum_class
        if enum is not None:
            values = [int(member) for member in enum]
            if not values or min(values) < 0 or max(values) >= MAX_CHOICES:
                problems.append(f"cast_type {enum.__name__}: an enum PV's values must be 0..{MAX_CHOICES - 1}")
            elif any(len(member.name) > MAX_LABEL for member in enum):
                problems.append(f"cast_type {enum.__name__}: member names are labels of at most {MAX_LABEL} characters")
        if self.choices is not None:
            problems += self._choice_problems(kind, enum)
        return problems

    def _choice_problems(self, kind: Optional[type], enum: Optional[Type[IntEnum]]) -> List[str]:
        choices = self.choices
        if not isinstance(choices, tuple):
            return [f"choices must be a list of labels, not {choices!r}"]
        if enum is not None:
            return [f"choices: the labels of an IntEnum PV are its member names ({enum.__name__})"]
        if kind not in (None, str, int, bool):
            return [f"choices: an enum PV reads as its label (str) or index (int), not {_name(kind)}"]
        bad = [c for c in choices if not isinstance(c, str)]
        if bad:
            return [f"choices must all be strings, not {', '.join(repr(c) for c in bad)}"]
        problems = []
        wanted = (2, 2) if kind is bool else (1, MAX_CHOICES)
        if not wanted[0] <= len(choices) <= wanted[1]:
            need = "exactly 2 (the False and True labels)" if kind is bool else f"1 to {MAX_CHOICES}"
            problems.append(f"choices: {len(choices)} given, {need} needed")
        if len(set(choices)) != len(choices):
            problems.append(f"choices {list(choices)!r} repeat a label")
        long = [c for c in choices if len(c) > MAX_LABEL]
        if long:
            problems.append(f"choices {long!r}: a label has at most {MAX_LABEL} characters")
        return problems

    def _numeric_problems(self) -> List[str]:
        numeric = self.kind in ("float", "int", "float[]", "int[]")
        problems = []
        for attr in ("units", "precision", "limits", "alarm"):
            if getattr(self, attr) is not None and not numeric:
                problems.append(
                    f"{attr} apply to a float or int PV: give cast_type=float or int (this PV is {self.type_name()})"
                )
        if problems:
            return problems
        if self.precision is not None:
            if self.kind not in ("float", "float[]"):
                problems.append("precision applies to a float PV")
            elif not _integer(self.precision) or not 0 <= self.precision <= 17:
                problems.append(f"precision must be an integer 0..17 (decimal places), not {self.precision!r}")
        if self.limits is not None:
            if not _numbers(self.limits, 2, optional=False):
                problems.append(f"limits must be (low, high), two finite numbers, not {self.limits!r}")
            elif self.limits[0] > self.limits[1]:
                problems.append(f"limits {self.limits!r}: low is above high")
        if self.alarm is not None:
            if self.is_array:
                problems.append("alarm levels apply to a scalar PV, not an array")
            elif not _numbers(self.alarm, 4, optional=True):
                problems.append(
                    "alarm must be (lolo, low, high, hihi), four numbers or None for a level not used, "
                    f"not {self.alarm!r}"
                )
            else:
                levels = [level for level in self.alarm if level is not None]
                if levels != sorted(levels):
                    problems.append(f"alarm {self.alarm!r}: levels must rise from lolo to hihi")
        if not problems and self.kind in ("int", "int[]"):
            for attr in ("limits", "alarm"):
                bounds = getattr(self, attr) or ()
                if any(bound is not None and bound != int(bound) for bound in bounds):
                    problems.append(f"{attr} {bounds!r} of an int PV must be whole numbers (the record holds integers)")
        return problems


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _name(kind: object) -> str:
    return getattr(kind, "__name__", repr(kind))


def _numbers(values: object, count: int, optional: bool) -> bool:
    if not isinstance(values, tuple) or len(values) != count:
        return False
    return all(
        (optional and v is None) or (isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v))
        for v in values
    )


def _strings(attr: str, values: Optional[Tuple[Any, ...]], pattern: Optional[re.Pattern[str]], what: str) -> List[str]:
    if values is None:
        return []
    if not isinstance(values, tuple):
        return [f"{attr} must be a list of strings, not {values!r}"]
    bad = [v for v in values if not isinstance(v, str) or not v or (pattern is not None and not pattern.fullmatch(v))]
    return [f"{attr}: {', '.join(map(repr, bad))} is not {what}"] if bad else []


def _text(attr: str, value: Optional[str], longest: int) -> List[str]:
    if value is None:
        return []
    if not isinstance(value, str):
        return [f"{attr} must be a string, not {value!r}"]
    if len(value) > longest or '"' in value or "\n" in value:
        return [f"{attr} {value!r}: at most {longest} characters, no quotes or line breaks (the record's field)"]
    return []
