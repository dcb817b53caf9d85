"""PV Access reads and writes over one p4p context.

Two flavours over the same code: epics-bridge 1.0.1's forgiving ``pvget``/``pvput`` (``None``/``False`` on
failure, logged) and the strict ``get``/``put`` that raise a :class:`PVError` naming each PV and
why, which the engine turns into an IO_FAILURE cycle. A batch is always one round of parallel
requests sharing one timeout, so ten PVs cost one round trip, not ten. ``aget``/``aput`` are the
strict pair for an ``async def`` task: the same batch, completed by the same p4p callbacks, which
wake the awaiting event loop instead of a waiting thread.
"""

from __future__ import annotations

import threading
import time
from numbers import Number
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Type, Union

import numpy as np
from loguru import logger
from p4p.client import raw
from p4p.client.thread import Cancelled, Context, Disconnected, RemoteError

from .defaults import DEFAULTS
from .kept import KeptPuts, Watch, Write, Writer, fields_of
from .values import to_python

if TYPE_CHECKING:  # asyncio costs ~3 MB a process: imported only where an async def task runs
    import asyncio

__all__ = [
    "Sent",
    "BridgeIO",
    "Monitor",
    "PVError",
    "PVTimeoutError",
    "PVDisconnectedError",
    "PVRejectedError",
    "PVValueError",
]

Names = Union[str, Sequence[str]]

# Ask the IOC to finish processing before it answers, so a completed put means the record holds
# the value (also for asynchronous records).
_WAIT = Context.makeRequest("field()record[block=true]")


class PVError(Exception):
    """One or more PV operations failed. ``failures`` maps each PV name to its cause."""

    def __init__(self, operation: str, failures: Mapping[str, BaseException]) -> None:
        self.operation = operation
        self.failures = dict(failures)
        causes = "; ".join(f"{pv}: {_describe(exc)}" for pv, exc in self.failures.items())
        super().__init__(f"{operation} failed for {causes}")

    @property
    def pv(self) -> str:
        """The first PV that failed."""
        return next(iter(self.failures))


class PVTimeoutError(PVError, TimeoutError):
    """No answer in time: the PV is not served, or its IOC is unreachable or frozen."""


class PVDisconnectedError(PVError, ConnectionError):
    """The connection to the IOC dropped while the operation was under way."""


class PVRejectedError(PVError):
    """The server refused the request, or the value does not fit the PV's type."""


class PVValueError(PVError, ValueError):
    """A value does not fit its PV's declaration (type, choices, length, limits): a read that came
    back as something else, or a write refused before anything of its batch was sent."""

    def __init__(self, operation: str, failures: Mapping[str, BaseException]) -> None:
        super().__init__(operation, failures)
        causes = "; ".join(f"{pv}: {exc}" for pv, exc in self.failures.items())
        untouched = " (nothing of the batch was written)" if operation == "put" else ""
        self.args = (f"{operation} refused for {causes}{untouched}",)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout (no answer; PV not served or IOC unreachable)"
    if isinstance(exc, Disconnected):
        return "disconnected"
    text = str(exc) or type(exc).__name__
    return f"rejected by server: {text}" if isinstance(exc, RemoteError) else f"{type(exc).__name__}: {text}"


def _error_class(exc: BaseException) -> Type[PVError]:
    if isinstance(exc, TimeoutError):
        return PVTimeoutError
    if isinstance(exc, Disconnected):
        return PVDisconnectedError
    return PVRejectedError


def _raise(operation: str, failures: Mapping[str, BaseException]) -> None:
    first = next(iter(failures.values()))
    raise _error_class(first)(operation, failures)


def _assign_number(value: Any) -> Callable[[Any], None]:
    """Builder for a number or array: fills the PV's own type without fetching it first."""

    def build(V: Any) -> None:
        V["value.index" if "value.index" in V else "value"] = value

    return build


def _builder(value: Any) -> Any:
    if isinstance(value, (Number, np.ndarray, np.generic)) and not isinstance(value, complex):
        return _assign_number(value)
    return value  # str, dict of fields, Value: p4p's own builder


_PENDING = object()


class _Flag:
    """A one-shot event for one waiter: a lock held until set. ``threading.Event`` builds a
    Condition, and a waiter lock per wait, for every batch; this is one lock (two batches a cycle)."""

    __slots__ = ("_lock",)

    def __init__(self, is_set: bool) -> None:
        self._lock = threading.Lock()
        if not is_set:
            self._lock.acquire()

    def set(self) -> None:
        self._lock.release()

    def is_set(self) -> bool:
        return not self._lock.locked()

    def wait(self, timeout: float) -> bool:
        if self._lock.acquire(timeout=max(0.0, timeout)):
            self._lock.release()
            return True
        return False


class _Pending:
    """Collects the completions of one batch; called from p4p's network thread, so never blocks.

    ``wake`` is called (on that thread, outside the lock) once every operation has completed.
    """

    def __init__(self, count: int, first: int = 0, wake: Optional[Callable[[], None]] = None) -> None:
        self.results: List[Any] = [_PENDING] * count
        self._left = count
        self._first, self._first_left = first, first
        self._lock = threading.Lock()
        self._wake = wake
        self.done = _Flag(not count)
        self.first_done = _Flag(not first)  # the first ``first`` operations have completed

    def callback(self, index: int) -> Callable[[Any], None]:
        def complete(value: Any) -> None:
            if isinstance(value, Cancelled):  # our own close() after a timeout
                return
            with self._lock:
                if self.results[index] is not _PENDING:
                    return
                self.results[index] = value
                self._left -= 1
                last = not self._left
                if last:
                    self.done.set()
                if index < self._first:
                    self._first_left -= 1
                    if not self._first_left:
                        self.first_done.set()
            if last and self._wake is not None:
                self._wake()

        return complete

    def outcomes(self, timeout: float) -> List[Any]:
        """Each operation's result or exception; a TimeoutError for one that has not answered."""
        return [TimeoutError(f"no answer within {timeout:g} s") if r is _PENDING else r for r in self.results]


def _issue(names: List[str], start: Callable[[str, Callable[[Any], None]], Any], pending: _Pending) -> List[Any]:
    """Start one operation per name; one that cannot even be issued (a bad name, a closed
    context) completes at once with its exception."""
    ops = []
    for i, name in enumerate(names):
        try:
            ops.append(start(name, pending.callback(i)))
        except Exception as exc:
            pending.callback(i)(exc)
    return ops


def _settle(ops: List[Any], pending: _Pending, finished: Optional[List[Any]]) -> None:
    """Hand a batch's operations to ``finished`` when all answered, else cancel them now."""
    if finished is not None and pending.done.is_set():
        finished.extend(ops)
    else:
        _close_all(ops)


def _batch(
    names: List[str],
    timeout: float,
    start: Callable[[str, Callable[[Any], None]], Any],
    settle: Optional[Tuple[int, float]] = None,
    finished: Optional[List[Any]] = None,
) -> List[Any]:
    """Start one operation per name at once and wait for all of them, under one deadline.

    Each name gets its own outcome: its result, its own exception, or a TimeoutError if it had
    not answered when the deadline passed (p4p's batch helpers mark every PV of a batch as timed
    out when one does, and restart the timeout for each answer). ``settle=(n, grace)``: once the
    first ``n`` names have answered, the others get at most ``grace`` s more, so optional PVs that
    are not served cost a short grace rather than the whole timeout.

    Closing an operation waits for pvxs's network thread (~0.1 ms). Operations that all answered
    are put in ``finished`` and closed by the next batch once its own requests are on their way,
    so that wait overlaps the next round trip instead of delaying the caller (a cycle's Busy=1
    put is followed by the user's function); unanswered ones are cancelled at once.
    """
    pending = _Pending(len(names), settle[0] if settle else 0)
    ops: List[Any] = []
    try:
        ops = _issue(names, start, pending)
        if finished:
            _close_all(finished)
        deadline = time.monotonic() + timeout
        if settle is not None and pending.first_done.wait(timeout):
            deadline = min(deadline, time.monotonic() + settle[1])
        pending.done.wait(max(0.0, deadline - time.monotonic()))
    finally:
        _settle(ops, pending, finished)
    return pending.outcomes(timeout)


async def _abatch(
    names: List[str],
    timeout: float,
    start: Callable[[str, Callable[[Any], None]], Any],
    finished: Optional[List[Any]] = None,
) -> List[Any]:
    """:func:`_batch` for a coroutine on a running event loop: the same operations, deadline and
    outcomes. The last completion (on p4p's thread) wakes the loop with ``call_soon_threadsafe``;
    the deadline is a timer of the loop. No thread waits and nothing polls. Cancelled (a time
    limit, a stop), it cancels the operations still under way."""
    import asyncio

    loop = asyncio.get_running_loop()
    answered: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        try:
            loop.call_soon_threadsafe(_resolve, answered)
        except RuntimeError:  # the loop was closed (its task stopped) while the answer travelled
            pass

    pending = _Pending(len(names), wake=wake)
    ops: List[Any] = []
    expiry: Optional[asyncio.TimerHandle] = None
    try:
        ops = _issue(names, start, pending)
        if finished:
            _close_all(finished)
        if not pending.done.is_set():
            expiry = loop.call_later(timeout, _resolve, answered)
            await answered
    finally:
        if expiry is not None:
            expiry.cancel()
        _settle(ops, pending, finished)
    return pending.outcomes(timeout)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _close_all(ops: List[Any]) -> None:
    while ops:  # list.pop is atomic: a task's own threads may share its IO
        try:
            ops.pop().close()
        except IndexError:
            return


class Sent:
    """A write on its way whose acknowledgement nobody waits for; :meth:`failure` asks later.

    The heartbeat sends its pulse and asks one period later: sending never waits for the IOC, so
    the pulses that fall due in one instant leave together (pvxs coalesces them into a few TCP
    segments) and no heartbeat thread sleeps and wakes on a lock for every pulse.
    """

    __slots__ = ("name", "_op", "_result")

    def __init__(self, name: str) -> None:
        self.name = name
        self._op: Any = None
        self._result: Any = _PENDING

    def complete(self, value: Any) -> None:
        """The operation's callback (p4p's network thread): one assignment, never blocks."""
        if not isinstance(value, Cancelled):
            self._result = value

    def failure(self) -> Optional[str]:
        """None once the IOC has acknowledged the write; else why not (its error, or no answer yet)."""
        result = self._result
        if result is _PENDING:
            return f"put failed for {self.name}: timeout (no answer within a heartbeat period)"
        return f"put failed for {self.name}: {_describe(result)}" if isinstance(result, BaseException) else None

    def close(self) -> None:
        """Cancel the write if it is still on its way; release it."""
        if self._op is not None:
            self._op.close()
            self._op = None


class _KeptSent(Sent):
    """:class:`Sent` through a kept operation (see kept.py)."""

    __slots__ = ("_writer", "_write")

    def __init__(self, name: str, writer: Writer, write: Write) -> None:
        super().__init__(name)
        self._writer, self._write = writer, write

    def failure(self) -> Optional[str]:
        if self._writer.pending(self._write):
            return super().failure()
        exc = self._writer.outcome(self._write)
        return None if exc is None else f"put failed for {self.name}: {_describe(exc)}"

    def close(self) -> None:
        self._writer.abandon(self._write)


#: One batch read: a single name?, the names, each value or exception, the failures by name.
_Read = Tuple[bool, List[str], List[Any], Dict[str, BaseException]]


def _listed(names: Names) -> Tuple[bool, List[str]]:
    return (True, [names]) if isinstance(names, str) else (False, list(names))


def _read_outcomes(names: List[str], results: List[Any], convert: bool) -> Tuple[List[Any], Dict[str, BaseException]]:
    failures = {n: r for n, r in zip(names, results) if isinstance(r, BaseException)}
    if convert:
        results = [r if isinstance(r, BaseException) else to_python(r) for r in results]
    return results, failures


def _write_failures(data: Mapping[str, Any], results: List[Any]) -> Dict[str, BaseException]:
    return {n: r for n, r in zip(data, results) if isinstance(r, BaseException)}


def _strict_read(single: bool, names: List[str], values: List[Any], failures: Dict[str, BaseException]) -> Any:
    if failures:
        _raise("get", failures)
    return values[0] if single else dict(zip(names, values))


def _strict_write(failures: Dict[str, BaseException]) -> None:
    if failures:
        _raise("put", failures)


class Monitor:
    """A PVA subscription whose updates the consumer pops on its own thread.

    p4p calls ``wake`` on its network thread whenever updates are waiting; ``wake`` must only hand
    over (set an event, queue a call), never block. The consumer then calls :meth:`pop`. Unlike
    p4p's threaded ``Context.monitor``, no update runs on p4p's shared callback workers, and a
    wakeup that arrives before the subscription is stored cannot be lost.
    """

    def __init__(self, context: Context, pv: str, wake: Callable[[], None]) -> None:
        self.pv = pv
        self._subscription = raw.Context.monitor(context, pv, wake)

    def pop(self) -> List[Any]:
        """Every update waiting, oldest first: Values, or exceptions such as Disconnected."""
        updates = []
        while self._subscription is not None:
            update = self._subscription.pop()
            if update is None:
                break
            updates.append(update)
        return updates

    def close(self) -> None:
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None


class BridgeIO:
    """Blocking PV IO for one task (or one class-API daemon).

    ``context`` lets many tasks share one p4p context (one TCP connection per IOC); by default a
    private ``Context("pva")`` is made, configured from the EPICS_PVA_* environment. ``kept``: the
    kept operations (kept.py) that the context's users share; with them a :meth:`put` of one number
    (or of numbers to a group's fields) and every :meth:`send` re-execute one operation per PV.
    """

    def __init__(
        self, context: Optional[Context] = None, timeout: float = DEFAULTS.timeout, kept: Optional[KeptPuts] = None
    ) -> None:
        self.ctx = context if context is not None else Context("pva", nt=False)
        self.timeout = timeout
        self.kept = kept
        #: Answered operations not closed yet (see :func:`_batch`).
        self._finished: List[Any] = []

    # -- strict ---------------------------------------------------------------------------
    def get(self, names: Names, timeout: Optional[float] = None) -> Any:
        """Read one PV (its value) or a list (``{name: value}``); raise PVError on any failure."""
        return _strict_read(*self._get(names, timeout))

    def put(self, values: Mapping[str, Any], timeout: Optional[float] = None) -> None:
        """Write every ``{name: value}`` and wait for the server's acknowledgement of each."""
        _strict_write(self._put(values, timeout))

    # -- strict, awaited (an async def task's event loop) ---------------------------------------
    async def aget(self, names: Names, timeout: Optional[float] = None) -> Any:
        """:meth:`get` for a coroutine: the event loop runs other coroutines while the batch is out."""
        return _strict_read(*await self._aget(names, timeout))

    async def aput(self, values: Mapping[str, Any], timeout: Optional[float] = None) -> None:
        """:meth:`put` for a coroutine."""
        _strict_write(await self._aput(values, timeout))

    # -- as in epics-bridge 1.0.1 ---------------------------------------------------------------
    def pvget(self, pv_names: Names, timeout: float = DEFAULTS.timeout, raw: bool = False) -> Any:
        """Like :meth:`get`, but a failed PV reads as ``None`` (logged) instead of raising."""
        single, names, values, failures = self._get(pv_names, timeout, convert=not raw)
        if failures:
            logger.warning("{}", PVError("get", failures))
        values = [None if isinstance(v, BaseException) else v for v in values]
        return values[0] if single else dict(zip(names, values))

    def pvput(self, data: Mapping[str, Any], timeout: float = DEFAULTS.timeout) -> bool:
        """Like :meth:`put`, but returns ``False`` (logged) instead of raising."""
        if not data:
            return False
        failures = self._put(data, timeout)
        if failures:
            logger.error("{}", PVError("put", failures))
        return not failures

    def send(self, name: str, value: Any) -> Sent:
        """Start writing ``value`` to ``name`` and return at once; the outcome is read later."""
        kept = self._kept_start(name, value)
        if kept is not None:
            return _KeptSent(name, *kept)
        sent = Sent(name)
        try:
            sent._op = raw.Context.put(self.ctx, name, sent.complete, builder=_builder(value), request=_WAIT, get=False)
        except Exception as exc:  # could not even be issued (bad name, closed context)
            sent.complete(exc)
        return sent

    def unreachable(self, names: Sequence[str], timeout: Optional[float] = None) -> Dict[str, str]:
        """Read all ``names`` at once; map each PV that did not answer to the reason."""
        return self.survey(names, timeout)[1]

    def survey(
        self, names: Sequence[str], timeout: Optional[float] = None, settle: Optional[Tuple[int, float]] = None
    ) -> Tuple[Dict[str, Any], Dict[str, str]]:
        """Read all ``names`` in one round and never raise: the raw Values of the PVs that answered,
        and why each other one did not. ``settle``: see :func:`_batch`."""
        _, name_list, results, failures = self._get(list(names), timeout, convert=False, settle=settle)
        values = {n: r for n, r in zip(name_list, results) if n not in failures}
        return values, {pv: _describe(exc) for pv, exc in failures.items()}

    def monitor(self, pv: str, wake: Callable[[], None]) -> Monitor:
        """Subscribe to ``pv``; ``wake`` is called (on p4p's network thread) when updates wait."""
        return Monitor(self.ctx, pv, wake)

    def watch(self, pv: str, wake: Callable[[], None]) -> Union[Monitor, Watch]:
        """Subscribe to a number PV (a Trigger) whose loop acts on requests: a :class:`Watch`, read
        on the kept writes' connection, which calls ``wake`` for a non-zero value, a dropped link
        or a value of another kind only; where there is none, a :meth:`monitor` (every update wakes)."""
        watch = None if self.kept is None else self.kept.watch(pv, wake)
        return self.monitor(pv, wake) if watch is None else watch

    def close(self) -> None:
        _close_all(self._finished)
        self.ctx.close()

    # -- one round of parallel requests -------------------------------------------------------
    def _get(
        self,
        names: Names,
        timeout: Optional[float],
        convert: bool = True,
        settle: Optional[Tuple[int, float]] = None,
    ) -> _Read:
        single, name_list = _listed(names)
        results = _batch(name_list, self._timeout(timeout), self._start_get, settle, self._finished)
        return (single, name_list, *_read_outcomes(name_list, results, convert))

    def _put(self, data: Mapping[str, Any], timeout: Optional[float]) -> Dict[str, BaseException]:
        """Kept writes first (they leave at once, from C++), then the rest through p4p, all under
        one deadline; the failures in the order given."""
        timeout = self._timeout(timeout)
        deadline = time.monotonic() + timeout
        kept, rest = {}, {}
        for name, value in data.items():
            started = self._kept_start(name, value)
            if started is None:
                rest[name] = value
            else:
                kept[name] = started
        failures = {}
        if rest:
            results = _batch(list(rest), timeout, self._start_put(rest), finished=self._finished)
            failures = _write_failures(rest, results)
        for name, (writer, write) in kept.items():
            exc = writer.wait(write, max(0.0, deadline - time.monotonic()))
            if exc is not None:
                failures[name] = exc
        return {n: failures[n] for n in data if n in failures}

    async def _aget(self, names: Names, timeout: Optional[float]) -> _Read:
        single, name_list = _listed(names)
        results = await _abatch(name_list, self._timeout(timeout), self._start_get, self._finished)
        return (single, name_list, *_read_outcomes(name_list, results, True))

    async def _aput(self, data: Mapping[str, Any], timeout: Optional[float]) -> Dict[str, BaseException]:
        results = await _abatch(list(data), self._timeout(timeout), self._start_put(data), self._finished)
        return _write_failures(data, results)

    def _start_get(self, name: str, callback: Callable[[Any], None]) -> Any:
        return raw.Context.get(self.ctx, name, callback)

    def _start_put(self, data: Mapping[str, Any]) -> Callable[[str, Callable[[Any], None]], Any]:
        # Fetch the PV before writing only when a string may name an enum choice.
        fetch = any(isinstance(v, (str, bytes)) for v in data.values())

        def start(name: str, callback: Callable[[Any], None]) -> Any:
            return raw.Context.put(self.ctx, name, callback, builder=_builder(data[name]), request=_WAIT, get=fetch)

        return start

    def _kept_start(self, name: str, value: Any) -> Optional[Tuple[Writer, Write]]:
        """Send ``value`` through ``name``'s kept operation: (its writer, the write); None when it
        goes through p4p (not numbers, ``name`` not kept, one already in flight)."""
        fields = None if self.kept is None else fields_of(value)
        if fields is None or self.kept is None:
            return None
        writer = self.kept.writer(name)
        write = None if writer is None else writer.start(fields)
        return None if writer is None or write is None else (writer, write)

    def _timeout(self, timeout: Optional[float]) -> float:
        return self.timeout if timeout is None else timeout
