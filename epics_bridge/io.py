"""Synchronous PV Access reads and writes over one p4p context.

Two flavours over the same code: epics-bridge 1.0.1's forgiving ``pvget``/``pvput`` (``None``/``False`` on
failure, logged) and the strict ``get``/``put`` that raise a :class:`PVError` naming each PV and
why, which the engine turns into an IO_FAILURE cycle. A batch is always one round of parallel
requests sharing one timeout, so ten PVs cost one round trip, not ten.
"""

from __future__ import annotations

import threading
import time
from numbers import Number
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Type, Union

import numpy as np
from loguru import logger
from p4p.client import raw
from p4p.client.thread import Cancelled, Context, Disconnected, RemoteError

from .defaults import DEFAULTS
from .values import to_python

__all__ = [
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
    """Collects the completions of one batch; called from p4p's network thread, so never blocks."""

    def __init__(self, count: int, first: int = 0) -> None:
        self.results: List[Any] = [_PENDING] * count
        self._left = count
        self._first, self._first_left = first, first
        self._lock = threading.Lock()
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
                if not self._left:
                    self.done.set()
                if index < self._first:
                    self._first_left -= 1
                    if not self._first_left:
                        self.first_done.set()

        return complete


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
    ops = []
    try:
        for i, name in enumerate(names):
            try:
                ops.append(start(name, pending.callback(i)))
            except Exception as exc:  # could not even be issued (bad name, closed context)
                pending.callback(i)(exc)
        if finished:
            _close_all(finished)
        deadline = time.monotonic() + timeout
        if settle is not None and pending.first_done.wait(timeout):
            deadline = min(deadline, time.monotonic() + settle[1])
        pending.done.wait(max(0.0, deadline - time.monotonic()))
    finally:
        if finished is not None and pending.done.is_set():
            finished.extend(ops)
        else:
            _close_all(ops)
    return [TimeoutError(f"no answer within {timeout:g} s") if r is _PENDING else r for r in pending.results]


def _close_all(ops: List[Any]) -> None:
    while ops:  # list.pop is atomic: a task's own threads may share its IO
        try:
            ops.pop().close()
        except IndexError:
            return


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
    private ``Context("pva")`` is made, configured from the EPICS_PVA_* environment.
    """

    def __init__(self, context: Optional[Context] = None, timeout: float = DEFAULTS.timeout) -> None:
        self.ctx = context if context is not None else Context("pva", nt=False)
        self.timeout = timeout
        #: Answered operations not closed yet (see :func:`_batch`).
        self._finished: List[Any] = []

    # -- strict ---------------------------------------------------------------------------
    def get(self, names: Names, timeout: Optional[float] = None) -> Any:
        """Read one PV (its value) or a list (``{name: value}``); raise PVError on any failure."""
        single, names, values, failures = self._get(names, timeout)
        if failures:
            _raise("get", failures)
        return values[0] if single else dict(zip(names, values))

    def put(self, values: Mapping[str, Any], timeout: Optional[float] = None) -> None:
        """Write every ``{name: value}`` and wait for the server's acknowledgement of each."""
        failures = self._put(values, timeout)
        if failures:
            _raise("put", failures)

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
    ) -> Tuple[bool, List[str], List[Any], Dict[str, BaseException]]:
        single = isinstance(names, str)
        name_list: List[str] = [names] if isinstance(names, str) else list(names)
        results = _batch(
            name_list, self._timeout(timeout), lambda n, cb: raw.Context.get(self.ctx, n, cb), settle, self._finished
        )
        failures = {n: r for n, r in zip(name_list, results) if isinstance(r, BaseException)}
        if convert:
            results = [r if isinstance(r, BaseException) else to_python(r) for r in results]
        return single, name_list, results, failures

    def _put(self, data: Mapping[str, Any], timeout: Optional[float]) -> Dict[str, BaseException]:
        # Fetch the PV before writing only when a string may name an enum choice.
        fetch = any(isinstance(v, (str, bytes)) for v in data.values())

        def start(name: str, callback: Callable[[Any], None]) -> Any:
            return raw.Context.put(self.ctx, name, callback, builder=_builder(data[name]), request=_WAIT, get=fetch)

        results = _batch(list(data), self._timeout(timeout), start, finished=self._finished)
        return {n: r for n, r in zip(data, results) if isinstance(r, BaseException)}

    def _timeout(self, timeout: Optional[float]) -> float:
        return self.timeout if timeout is None else timeout
