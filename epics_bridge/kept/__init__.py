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
Everything else (a task's own writes, strings, arrays) goes through p4p.

The same client context also serves two kinds of subscription read in C++ on pvxs's thread (see
``_pvxs.cpp``): :class:`Watch`, a task's Trigger, which wakes the task's loop only for an update
it must act on, and :class:`Feed`, many PVs' updates handed to a client in bulk.
"""

from __future__ import annotations

import threading
from numbers import Integral, Real
from typing import Any, Callable, Dict, List, Mapping, Optional, Set, Tuple

import numpy as np
from p4p.client.thread import Context, Disconnected, RemoteError  # also loads the pvxs that _pvxs links to

try:
    from . import _pvxs as _kept
except ImportError:  # not built here (no C++ compiler at install)
    _kept = None  # type: ignore[assignment]

__all__ = ["Feed", "KeptPuts", "Watch", "Writer", "fields_of", "outcome_error"]

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


class Watch:
    """A number PV's subscription read on pvxs's thread: ``wake`` (called there, with the GIL; it
    must only hand over) rings for a non-zero value, a value that is not a number, a dropped link
    and the first value after one; a zero on a live link just waits for :meth:`pop`."""

    __slots__ = ("_watch",)

    def __init__(self, client: Any, name: str, wake: Callable[[], None]) -> None:
        self._watch = _kept.Watch(client, name, wake)

    def pop(self) -> List[Any]:
        """Every update since the last pop, oldest first: a number; for a value that is not one, its
        kind (``"string"``, ``"array"``, ``"structure"``); for a dropped link, ``Disconnected``."""
        return [_reading(tag, item) for tag, item in self._watch.take()]

    def close(self) -> None:
        self._watch.close()


def _reading(tag: int, item: Any) -> Any:
    if tag == _kept.DROPPED:
        return Disconnected(item)
    return item


class Feed:
    """Updates of many number PVs, with their IOC timestamps, read in C++ and handed over in bulk:
    a client that waits on a thousand acknowledges costs the host a fraction of what as many p4p
    subscriptions do (see ``_pvxs.cpp``)."""

    __slots__ = ("_feed",)

    def __init__(self, client: Any, names: List[str]) -> None:
        self._feed = _kept.Feed(client, names)

    def take(self, timeout: float) -> List[Tuple[int, Any, float, float]]:
        """Every number since the last take, oldest first, as (the PV's index in ``names``, the
        number, its IOC timestamp as POSIX seconds, its arrival in ``time.perf_counter()`` seconds);
        waits up to ``timeout`` s for the first."""
        return self._feed.take(timeout)

    def close(self) -> None:
        self._feed.close()


class KeptPuts:
    """The kept operations of one p4p context's writes (and the subscriptions read in C++), on a pvxs
    client context of their own with the same configuration (made on first use, so a process that
    never writes pays nothing).

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
            client = self._open()
            return None if client is None else self._writers.setdefault(name, Writer(client, name))

    def watch(self, name: str, wake: Callable[[], None]) -> Optional[Watch]:
        """Subscribe to ``name`` on this client context (the connection the kept writes take);
        None when that is not available here, or this is closed."""
        with self._lock:
            client = self._open()
            return None if client is None else Watch(client, name, wake)

    def feed(self, names: List[str]) -> Optional[Feed]:
        """Subscribe to every one of ``names`` on this client context, for a client that waits on
        their updates; None when that is not available here, or this is closed."""
        with self._lock:
            client = self._open()
            return None if client is None else Feed(client, names)

    def _open(self) -> Any:
        """The client context, made on first use; None once closed (lock held)."""
        if self._closed:
            return None
        if self._client is None:
            self._client = _kept.Client(self._conf)
        return self._client

    def close(self) -> None:
        with self._lock:
            self._closed = True
            writers, self._writers = self._writers, {}
            client, self._client = self._client, None
        for writer in writers.values():
            writer.close()
        if client is not None:
            client.close()
