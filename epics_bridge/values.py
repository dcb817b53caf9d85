"""P4P values -> native Python.

Tasks compare and compute with what they read, so a read gives plain ``int``/``float``/``bool``/
``str`` (never numpy scalars that print and pickle differently), numpy arrays for waveforms and
images, and never raises: an unknown structure still reaches the task as a dict, and a string (or an
element of a string array) that is not valid UTF-8 arrives as text with replacement characters.
"""

from __future__ import annotations

import ast
import re
from typing import Any, Dict, List

import numpy as np
from p4p import Value

__all__ = ["EnumValue", "kind_of", "to_python", "unwrap_p4p_structure"]


class EnumValue(int):
    """An NTEnum read: behaves as its index, and still knows its choice strings."""

    choices: List[str]

    def __new__(cls, index: int, choices: List[str]) -> EnumValue:
        self = super().__new__(cls, index)
        self.choices = list(choices)
        return self

    @property
    def label(self) -> str:
        """The choice string for the index ('' when the index is outside the choices)."""
        return self.choices[self] if 0 <= self < len(self.choices) else ""

    def __repr__(self) -> str:
        return f"EnumValue({int(self)}, {self.label!r})"


def _scalar(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _array(value: Any) -> Any:
    return value if isinstance(value, np.ndarray) else list(value)


def _ntscalar(v: Value) -> Any:
    try:
        return _scalar(v["value"])
    except UnicodeDecodeError as exc:  # p4p decodes strictly; a device's odd bytes are still its text
        return exc.object.decode("utf-8", errors="replace")


#: A string array's line in pvxs's printout: each element quoted, escaped as C does (\xHH, \", ...).
_STRING_ARRAY = re.compile(r"^\s*string\[\] value = \{[^}]*\}\[(.*)\]$", re.MULTILINE)
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


def _ntscalararray(v: Value) -> Any:
    try:
        return _array(v["value"])
    except UnicodeDecodeError:  # p4p names only the bad element; pvxs's printout still has them all
        return _strings_with_replacement(v)


def _strings_with_replacement(v: Value) -> List[str]:
    """A string array whose bytes are not all UTF-8, each element decoded with replacement. pvxs
    prints every byte that is not printable ASCII as ``\\xHH`` and escapes quotes and backslashes,
    which is exactly a Python bytes literal's syntax."""
    line = _STRING_ARRAY.search(v.tostr())
    if line is None:
        raise ValueError("a string array with no printable value")
    elements = _QUOTED.findall(line.group(1))
    return [ast.literal_eval(f'b"{element}"').decode("utf-8", errors="replace") for element in elements]


def _ntenum(v: Value) -> EnumValue:
    return EnumValue(v["value.index"], v["value.choices"])


def _ntndarray(v: Value) -> np.ndarray:
    """The pixels shaped by ``dimension`` (slowest first). p4p's own unwrap assigns to an array's
    ``shape``, which NumPy 2.5 deprecates; a reshape is the same view without the warning."""
    pixels = v["value"]
    pixels = np.zeros((0,), dtype=np.uint8) if pixels is None else np.asarray(pixels)
    shape = [d["size"] for d in v["dimension"]][::-1]
    return pixels.reshape(shape) if shape else pixels


def _nttable(v: Value) -> Dict[str, Any]:
    columns = v["value"]
    return {name: _array(columns[name]) for name in columns.keys()}


#: The type ID of an enum (a bo, mbbo, ... record's value over PV Access).
NTENUM = "epics:nt/NTEnum:1.0"

_BY_ID = {
    "epics:nt/NTScalar:1.0": _ntscalar,
    "epics:nt/NTScalarArray:1.0": _ntscalararray,
    NTENUM: _ntenum,
    "epics:nt/NTNDArray:1.0": _ntndarray,
    "epics:nt/NTTable:1.0": _nttable,
}


def to_python(value: Any) -> Any:
    """Convert one P4P result (a raw ``Value`` or one of p4p's unwrapped NT types)."""
    if not isinstance(value, Value):
        # p4p's ntfloat/ntint/... keep the Value in .raw (never asked of a Value: for a field it lacks,
        # p4p builds an AttributeError, which cost ~0.1 ms of every cycle in a monitor's update)
        value = getattr(value, "raw", value)
        if not isinstance(value, Value):
            return _scalar(value)
    convert = _BY_ID.get(value.getID())
    if convert is not None:
        try:
            return convert(value)
        except Exception:  # a server that names a type but serves another shape
            pass
    return _todict(value)


def kind_of(value: Any) -> str:
    """'enum', 'integer', 'float', 'string', 'array' or 'structure': the kind of a PV's value."""
    if isinstance(value, Value):
        try:
            code = value.type()["value"]
        except KeyError:
            return "structure"
        if not isinstance(code, str):
            return "enum" if value.getID().startswith("epics:nt/NTEnum") else "structure"
        if code.startswith("a"):
            return "array"
        return {"s": "string", "f": "float", "d": "float"}.get(code, "integer")
    if isinstance(value, (bool, int)):
        return "integer"
    return {float: "float", str: "string"}.get(type(value), "array" if hasattr(value, "__len__") else "structure")


def _todict(value: Value) -> Any:
    try:
        return value.todict()
    except Exception:
        return {}


#: epics-bridge 1.0.1's name for :func:`to_python`, kept so code written against it still imports.
unwrap_p4p_structure = to_python
