"""Values against their :class:`~epics_bridge.pv.PV` declaration: what a read becomes, whether a
write may go.

A read comes back as the declared type (``float``, ``int``, ``bool``, ``str``, an IntEnum member or
a choice label, a numpy array), so a task computes with what it declared whatever record serves
it. A write is checked before it leaves: records clip a setpoint to DRVL/DRVH without a word (and
not at all when DRVH <= DRVL), so a value outside ``limits`` is refused here, saying what it must
be, instead of being changed or refused by the IOC after the batch is half written.

Both raise :class:`CastError` with a phrase that names the declared type and the value; the task
context wraps it in a PVError naming the PV.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any, Optional, Sequence

import numpy as np

from .pv import PV
from .values import EnumValue, kind_of

#: The kinds of served value (:func:`~epics_bridge.values.kind_of`) each declared kind reads without
#: fail: an integer record for a float, an enum's index for a bool, its label for a str.
_SERVED = {
    "float": ("float", "integer"),
    "int": ("integer",),
    "bool": ("enum", "integer"),
    "enum": ("enum", "integer"),
    "str": ("string", "enum"),
    "float[]": ("array",),
    "int[]": ("array",),
}

__all__ = ["CastError", "from_ioc", "mismatch", "to_ioc"]


class CastError(ValueError):
    """A value does not fit its declaration; the message says what it must be."""


def _number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _integral(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _shown(value: Any) -> str:
    text = repr(value.tolist() if isinstance(value, np.ndarray) else value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def mismatch(served: Any, pv: PV) -> Optional[str]:
    """Why the record that sent ``served`` (a raw p4p Value, or a converted value) cannot give
    ``pv`` its declared type, in words naming both; None when it can (or ``pv`` is untyped)."""
    kind = pv.kind
    if kind is None:
        return None
    found = kind_of(served)
    if found in _SERVED[kind]:
        return None
    article = "an" if found[0] in "aeiou" else "a"
    return f"declared {pv.type_name()}, the IOC serves {article} {found}"


# -- reads ---------------------------------------------------------------------------------------
def from_ioc(value: Any, pv: PV) -> Any:
    """``value`` (as :func:`~epics_bridge.values.to_python` made it) as ``pv`` declares it; an
    untyped PV's value unchanged. CastError when it cannot be that type."""
    kind = pv.kind
    if kind is None:
        return value
    try:
        if pv.is_array:
            return _array_from_ioc(value, pv)
        if kind == "enum":
            return _enum_from_ioc(value, pv)
        return _SCALAR_READS[kind](value)
    except (TypeError, ValueError, OverflowError):
        raise CastError(f"declared {pv.type_name()}, the IOC sent {_shown(value)}") from None


def _float_read(value: Any) -> float:
    if not isinstance(value, Real):
        raise TypeError
    return float(value)


def _int_read(value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, Integral):
        raise TypeError
    return int(value)


def _bool_read(value: Any) -> bool:
    if not isinstance(value, Real) or value not in (0, 1):
        raise ValueError
    return bool(value)


def _str_read(value: Any) -> str:
    if isinstance(value, EnumValue):
        return value.label
    if not isinstance(value, str):
        raise TypeError
    return value


_SCALAR_READS = {"float": _float_read, "int": _int_read, "bool": _bool_read, "str": _str_read}


def _enum_from_ioc(value: Any, pv: PV) -> Any:
    labels = pv.labels or ()
    if isinstance(value, str):
        index = labels.index(value)  # ValueError: not a declared choice
    elif _integral(value) and 0 <= int(value) < len(labels) and labels[int(value)]:
        index = int(value)
    else:
        raise ValueError
    enum = pv.enum_class
    if enum is not None:
        return enum(index)
    return index if pv.cast_type is int else labels[index]


def _array_from_ioc(value: Any, pv: PV) -> np.ndarray:
    if isinstance(value, (str, bytes)) or not isinstance(value, (np.ndarray, list, tuple)):
        raise TypeError
    array = np.asarray(value)
    length = pv.length or 0
    if array.ndim != 1 or array.size > length or array.dtype.kind not in "iuf":
        raise ValueError
    if pv.cast_type is int:
        if array.dtype.kind == "f" and not np.all(np.mod(array, 1) == 0):
            raise ValueError
        return array.astype(np.int64)
    return array.astype(np.float64)


# -- writes --------------------------------------------------------------------------------------
def to_ioc(value: Any, pv: PV) -> Any:
    """What to write for ``value`` to ``pv``: the value itself for an untyped PV, an enum's index
    for a label or member, a numpy array for an array. CastError saying what the value must be when
    it does not fit the type, ``choices``, ``length`` or ``limits``."""
    kind = pv.kind
    if kind is None:
        return value
    if pv.is_array:
        return _array_to_ioc(value, pv)
    if kind == "enum":
        return _enum_to_ioc(value, pv)
    if kind == "str":
        if not isinstance(value, str):
            raise CastError(f"{_shown(value)} must be a str")
        return value
    if kind == "bool":
        if not isinstance(value, (bool, np.bool_)) and not (_integral(value) and value in (0, 1)):
            raise CastError(f"{_shown(value)} must be a bool (True/False, or 1/0)")
        return int(value)
    if kind == "int" and not _integral(value):
        raise CastError(f"{_shown(value)} must be an int{_range(pv)}")
    if kind == "float" and not _number(value):
        raise CastError(f"{_shown(value)} must be a number (float){_range(pv)}")
    number = int(value) if kind == "int" else float(value)
    if pv.limits is not None and not pv.limits[0] <= number <= pv.limits[1]:
        raise CastError(f"{_shown(value)} must be{_range(pv)}")
    return number


def _range(pv: PV) -> str:
    return f" within [{pv.limits[0]:g}, {pv.limits[1]:g}] (limits)" if pv.limits is not None else ""


def _enum_to_ioc(value: Any, pv: PV) -> int:
    labels: Sequence[str] = pv.labels or ()
    enum = pv.enum_class
    index: Optional[int] = None
    if enum is not None and isinstance(value, enum):
        index = int(value)
    elif isinstance(value, str) and value in labels and value:
        index = labels.index(value)
    elif _integral(value) and 0 <= int(value) < len(labels) and labels[int(value)]:
        index = int(value)
    if index is None:
        valid = [f"{i}" for i, label in enumerate(labels) if label]
        what = f"a {enum.__name__} member, " if enum is not None else ""
        raise CastError(
            f"{_shown(value)} must be {what}one of {', '.join(repr(label) for label in labels if label)} "
            f"or its index ({', '.join(valid)})"
        )
    return index


def _array_to_ioc(value: Any, pv: PV) -> np.ndarray:
    element = "int" if pv.cast_type is int else "float"
    wanted = f"must be a sequence of at most {pv.length} {element} values{_range(pv)}"
    if isinstance(value, (str, bytes)) or not isinstance(value, (np.ndarray, list, tuple)):
        raise CastError(f"{_shown(value)} {wanted}")
    try:
        array = np.asarray(value)
    except ValueError:  # ragged nesting
        raise CastError(f"{_shown(value)} {wanted}") from None
    fits = array.dtype.kind in "iu" or (array.dtype.kind == "f" and element == "float")
    if array.ndim != 1 or array.size > (pv.length or 0) or not fits:
        raise CastError(f"{_shown(value)} {wanted}")
    if pv.limits is not None and array.size and not (pv.limits[0] <= array.min() and array.max() <= pv.limits[1]):
        raise CastError(f"{_shown(value)} {wanted}")
    return array.astype(np.int64 if element == "int" else np.float64)
