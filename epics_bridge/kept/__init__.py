"""The PVs the engine writes again and again (Busy, the CycleEnd group, Heartbeat), each through one
kept pvxs operation.

A p4p put is a new channel-put each time: an INIT round trip for the PV's type, the EXEC with the
value, and two hops to pvxs's network thread to close it. A kept operation is re-executed: one
round trip and nothing to close, about half the cost (``python -m benchmarks.reexec_put``). p4p
does not expose that, so ``_pvxs`` (``_pvxs.cpp`` beside this file, built at install against the pvxs
that p4p loads) does. It is optional: where it was not built, or the pvxs loaded is not the one it
was built for, :meth:`KeptPuts.writer` answers None and :class:`~epics_bridge.io.BridgeIO` writes
through p4p as before.

A write is kept only if its PV was named with :meth:`KeptPuts.keep` (the engine names each task's
Busy, CycleEnd and Heartbeat) and it is a number, or fields set to numbers (a group PV), for one PV.
Everything else (a task's own writes, strings, arrays, batches) goes through p4p.
"""

from __future__ import annotations

import threading
from numbers import Integral, Real
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple

import numpy as np
from p4p.client.thread import Context, Disconnected, RemoteError  # also loads the pvxs that _pvxs links to

try:
    from . import _pvxs as _kept
except ImportError:  # not built here (no C++ compiler at install)
    _kept = None  # type: ignore[assignment]

__all__ = ["KeptPuts", "Writer", "fields_of", "outcome_error"]

Fields = List[Tuple[str, Any]]
#: One write's handle (``_pvxs.Write``), opaque.
Write = Any


def available() -> bool:
    """The compiled part is here and was built for the pvxs this process loaded."""
    return _kept is not None and _kept.usable()


def fields_of(value: Any) -> Optional[Fields]:
    """``value`` as the fields a kept write sets (``""``: the PV's value), or None if it is not a
    number or a mapping of field names to numbers."""
    if isinstance(value, Mapping):
        fields = [(name, _number(v)) for name, v in value.items()]
        return None if any(not isinstance(name, str) or v is None for name, v in fields) else fields
    number = _number(value)
    return None if number is None else [("", number)]


def _number(value: Any) -> Any:
    if isinstance(value, np.generic) and not isinstance(value, (np.complexfloating, np.str_, np.bytes_)):
        value = value.item()
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        return float(value)
    return None


def outcome_error(code: int, message: str) -> Optional[BaseException]:
    """A kept write's outcome as the exception a p4p put would have given (None: acknowledged)."""
    if code == _kept.OK:
        return None
    error: BaseException
    if code in (_kept.TIMEOUT, _kept.PENDING):
        error = TimeoutError("no answer in time")
    elif code == _kept.DISCONNECTED:
        error = Disconnected()
    elif code == _kept.UNFIT:
        error = ValueError(message)
    else:
        error = RemoteError(message)
    return error


class Writer:
    """One PV's kept operation. A write of it already on its way makes :meth:`start` answer None, and
    the caller writes through p4p instead (two threads may write one PV)."""

    __slots__ = ("name", "_op")

    def __init__(self, client: Any, name: str) -> None:
        self.name = name
        self._op = _kept.Writer(client, name)

    def start(self, fields: Fields) -> Optional[Write]:
        """Send: the write's handle, or None when another is in flight (or this was closed meanwhile)."""
        try:
            return self._op.start(fields)
        except RuntimeError:  # its client closed under it: p4p's path gives the error
            return None

    def wait(self, write: Write, timeout: float) -> Optional[BaseException]:
        """Wait for ``write``: None once acknowledged, else why not (one unanswered is cancelled)."""
        return outcome_error(*self._op.wait(write, timeout))

    def pending(self, write: Write) -> bool:
        return self._op.outcome(write)[0] == _kept.PENDING

    def outcome(self, write: Write) -> Optional[BaseException]:
        """``write``'s outcome as it stands (a timeout while it is still on its way); cancels nothing."""
        return outcome_error(*self._op.outcome(write))

    def abandon(self, write: Write) -> Optional[BaseException]:
        """``write``'s outcome now; one still on its way is cancelled and counts as a timeout."""
        return outcome_error(*self._op.abandon(write))

    @property
    def inits(self) -> int:
        """INITs answered so far (one per operation made or reconnected): what keeping saves."""
        return self._op.inits()

    def close(self) -> None:
        self._op.close()


class KeptPuts:
    """The kept operations of one p4p context's writes, on a pvxs client context of their own with the
    same configuration (made on the first write, so a process that never writes pays nothing).

    Only the PVs named with :meth:`keep` are kept: an operation holds its PV's type for its life
    (9-24 kB), so a task's own writes, which may go to any number of PVs, go through p4p.
    """

    def __init__(self, context: Context) -> None:
        self._conf: Dict[str, str] = {str(k): str(v) for k, v in context.conf().items()}
        self._client: Any = None
        self._names: Set[str] = set()
        self._writers: Dict[str, Writer] = {}
        self._lock = threading.Lock()
        self._closed = not available()

    def keep(self, *names: str) -> None:
        """Write these PVs through kept operations from now on."""
        with self._lock:
            self._names.update(names)

    def writer(self, name: str) -> Optional[Writer]:
        """``name``'s writer; None when it is not kept, kept writes are not available here, or this
        is closed."""
        writer = self._writers.get(name)
        if writer is not None or self._closed or name not in self._names:
            return writer
        with self._lock:
            if self._closed:
                return None
            if self._client is None:
                self._client = _kept.Client(self._conf)
            return self._writers.setdefault(name, Writer(self._client, name))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            writers, self._writers = self._writers, {}
            client, self._client = self._client, None
        for writer in writers.values():
            writer.close()
        if client is not None:
            client.close()
