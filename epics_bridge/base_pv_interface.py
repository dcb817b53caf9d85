"""PV templates: logical names -> full PV names, resolved once and checked before anything connects.

A typo in a prefix key or a stray space in a PV name otherwise surfaces as a timeout minutes later,
on one PV among hundreds; here it is an error at start-up that names the field.
"""

from __future__ import annotations

import copy
import re
import string
import warnings
from dataclasses import dataclass, field, fields, replace
from typing import Any, Dict, List, Mapping, Sequence, Tuple, Union

from .pv import PV

__all__ = [
    "BasePVInterface",
    "DuplicatePVWarning",
    "ReadOnlyError",
    "read_only",
    "relative",
    "resolve_templates",
    "STANDARD_FIELDS",
]

#: Characters of an EPICS record name (App Dev Guide) plus '.' for fields, '$' for long strings and
#: '/', '#' that PVA-only servers use. Spaces, quotes, braces and control characters are refused.
_PV_NAME = re.compile(r"[A-Za-z0-9_\-+:\[\]<>;./$#]+")

#: The handshake PVs every task has, with the record names of ``db/bridge.db``.
STANDARD_FIELDS: Dict[str, str] = {
    "trigger": "{main}Trigger",
    "heartbeat": "{main}Heartbeat",
    "busy": "{main}Busy",
    "task_status": "{main}TaskStatus",
    "task_duration": "{main}TaskDuration",
}


class DuplicatePVWarning(UserWarning):
    """Two logical names resolve to one PV: legal, but usually a copy-paste slip."""


def _template_keys(template: str) -> List[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


def _check_template(attr: str, template: object, prefixes: Mapping[str, str]) -> Tuple[str, List[str]]:
    """Return the resolved name, or '' and the problems with this field."""
    if not isinstance(template, str):
        return "", [f"field '{attr}': a PV template must be a string, not {type(template).__name__}"]
    try:
        keys = _template_keys(template)
    except ValueError as exc:
        return "", [f"field '{attr}': malformed template {template!r} ({exc})"]
    missing = [k for k in keys if k not in prefixes]
    if missing:
        return "", [f"field '{attr}' requires prefix key '{k}' (template {template!r})" for k in missing]
    try:
        name = template.format_map(prefixes)
    except (KeyError, IndexError, AttributeError, ValueError) as exc:
        return "", [f"field '{attr}': cannot format template {template!r} ({exc!r})"]
    if not _PV_NAME.fullmatch(name):
        reason = "is empty" if not name else "has characters not allowed in a PV name"
        return "", [f"field '{attr}': PV name {name!r} {reason}"]
    return name, []


def relative(declaration: Union[str, PV]) -> Union[str, PV]:
    """A name with no ``{key}`` is relative to the task's prefix: ``"Press:RBV"`` is
    ``"{main}Press:RBV"``, for a plain template and a :class:`PV` alike."""
    if not isinstance(declaration, PV):
        return _relative(declaration)
    if not isinstance(declaration.name, str):  # refused when resolved, naming its field
        return declaration
    return replace(declaration, name=_relative(declaration.name))


def _relative(template: str) -> str:
    return template if "{" in template else "{main}" + template


def resolve_templates(
    templates: Mapping[str, object], prefixes: Mapping[str, str], problems: Sequence[str] = ()
) -> Dict[str, str]:
    """Format every template with ``prefixes``; raise one ValueError listing every problem (those
    found here and ``problems``, found by the caller).

    Collecting all problems first means a user fixes a whole interface in one edit, not one
    error per run.
    """
    resolved: Dict[str, str] = {}
    problems = list(problems)
    for attr, template in templates.items():
        name, errors = _check_template(attr, template, prefixes)
        resolved[attr] = name
        problems += errors
    if problems:
        available = ", ".join(sorted(prefixes)) or "none"
        raise ValueError(
            f"Configuration error in the PV declarations (prefix keys given: {available}):\n  " + "\n  ".join(problems)
        )
    _warn_duplicates(resolved)
    return resolved


def _warn_duplicates(resolved: Mapping[str, str]) -> None:
    seen: Dict[str, str] = {}
    for attr, name in resolved.items():
        if name in seen:
            warnings.warn(
                f"fields '{seen[name]}' and '{attr}' both resolve to PV {name!r}",
                DuplicatePVWarning,
                stacklevel=4,
            )
        else:
            seen[name] = attr


class ReadOnlyError(AttributeError):
    """A task assigned to something its context hands out. The engine reads the task's PV names on
    every cycle, so a task that could rename ``t.pvs.busy`` could write another task's records."""


def read_only(pvs: BasePVInterface) -> BasePVInterface:
    """A copy of ``pvs`` (still of the task's own class) that refuses assignment."""
    frozen = copy.deepcopy(pvs)
    object.__setattr__(frozen, "_read_only", True)
    return frozen


@dataclass
class BasePVInterface:
    """The PV interface of epics-bridge 1.0.1: subclass it, add ``str`` fields holding ``{key}`` templates,
    or :class:`~epics_bridge.pv.PV` declarations whose name is such a template.

    ``prefixes`` supplies the keys; ``{main}`` is the task's own prefix. After ``__init__`` every
    PV field holds the full PV name (a ``str``), and :attr:`declarations` the ``PV`` declarations
    with their names resolved.
    """

    prefixes: Dict[str, str] = field(default_factory=dict)

    trigger: str = STANDARD_FIELDS["trigger"]
    heartbeat: str = STANDARD_FIELDS["heartbeat"]
    busy: str = STANDARD_FIELDS["busy"]
    task_status: str = STANDARD_FIELDS["task_status"]
    task_duration: str = STANDARD_FIELDS["task_duration"]

    def __post_init__(self) -> None:
        # Fields that are neither strings nor PV declarations are settings, not PVs, as in 1.0.1.
        declared: Dict[str, Union[str, PV]] = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name != "prefixes" and isinstance(getattr(self, f.name), (str, PV))
        }
        templates = {attr: d.name if isinstance(d, PV) else d for attr, d in declared.items()}
        problems = [f"field '{a}': {p}" for a, d in declared.items() if isinstance(d, PV) for p in d.problems()]
        resolved = resolve_templates(templates, self.prefixes, problems)
        self._templates = {attr: str(template) for attr, template in templates.items()}
        self._declarations = {a: replace(d, name=resolved[a]) for a, d in declared.items() if isinstance(d, PV)}
        for attr, name in resolved.items():
            setattr(self, attr, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if self.__dict__.get("_read_only"):
            raise ReadOnlyError(f"t.pvs.{name} is read-only: a task's PV names are fixed when it is declared")
        super().__setattr__(name, value)

    def __delattr__(self, name: str) -> None:
        if self.__dict__.get("_read_only"):
            raise ReadOnlyError(f"t.pvs.{name} is read-only: a task's PV names are fixed when it is declared")
        super().__delattr__(name)

    @property
    def declarations(self) -> Dict[str, PV]:
        """Logical name -> its :class:`PV` declaration, name resolved (fields given as plain strings
        have none: they are untyped)."""
        return dict(self._declarations)

    @property
    def templates(self) -> Dict[str, str]:
        """Logical name -> the name template as declared, before the prefixes were substituted."""
        return dict(self._templates)

    def filter_pvs(self, tag: str) -> Dict[str, PV]:
        """The declarations carrying ``tag``, by logical name (epics-bridge 5.0.0's tag filter)."""
        return {attr: pv for attr, pv in self._declarations.items() if tag in pv.tags}

    @property
    def as_dict(self) -> Dict[str, str]:
        """Logical name -> PV name for every PV field (not ``prefixes`` or other settings)."""
        return {k: v for k, v in vars(self).items() if k != "prefixes" and not k.startswith("_") and isinstance(v, str)}

    @property
    def pv_to_attr(self) -> Dict[str, str]:
        """PV name -> logical name, to label what a batch read returns."""
        return {pv: attr for attr, pv in self.as_dict.items()}
