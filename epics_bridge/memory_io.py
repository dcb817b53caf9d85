"""An in-memory stand-in for :class:`~epics_bridge.io.BridgeIO`, for unit tests of pure logic.

Its PVs are entries of a dict in this process: no p4p context, no IOC, no network, so the loop's
trigger handling, timers, heartbeat counting and cycle-end fallbacks can be tested in milliseconds.
It inherits BridgeIO's public methods (``get``/``put``, ``aget``/``aput``, ``pvget``/``pvput``,
``unreachable``) and replaces only the round trip under them, so the error types and the batch
semantics are the real ones. It never replaces the integration tests on the real soft IOC, which exercise PVA itself.

    io = MemoryIO({"T:Trigger": 0, "T:Busy": 0})
    io.fail["T:Busy"] = TimeoutError()                      # every operation on T:Busy times out
    io.set("T:Trigger", 1)                                   # another client writes; monitors see it
    assert io.writes[-1] == {"T:Busy": 0}                    # every put batch, in order
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from p4p.client.thread import Disconnected

from .defaults import DEFAULTS
from .io import BridgeIO, Names, Sent
from .values import to_python

__all__ = ["MemoryIO", "MemoryMonitor"]


class MemoryMonitor:
    """A subscription to one in-memory PV: the same ``pop``/``close`` as :class:`~epics_bridge.io.Monitor`."""

    def __init__(self, pv: str, wake: Callable[[], None]) -> None:
        self.pv = pv
        self._wake = wake
        self._updates: List[Any] = []
        self._lock = threading.Lock()
        self.closed = False

    def post(self, update: Any) -> None:
        """Queue a value (or an exception such as Disconnected) and wake the consumer."""
        with self._lock:
            if self.closed:
                return
            self._updates.append(update)
        self._wake()

    def pop(self) -> List[Any]:
        """Every update waiting, oldest first."""
        with self._lock:
            updates, self._updates = self._updates, []
        return updates

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self._updates.clear()


class MemoryIO(BridgeIO):
    """PVs held in :attr:`values`; a PV absent from it does not answer (a timeout, at once).

    ``fail`` maps a PV to the exception each operation on it ends with (``TimeoutError``,
    ``Disconnected``, ``RemoteError``...), until removed; ``reject`` does the same for writes only
    (a PV that reads but refuses puts). ``writes`` records every put batch this IO made, in order,
    so a test can assert what was written and in which order.
    """

    def __init__(self, values: Optional[Mapping[str, Any]] = None, timeout: float = DEFAULTS.timeout) -> None:
        self.ctx = None
        self.timeout = timeout
        self.values: Dict[str, Any] = dict(values or {})
        self.fail: Dict[str, BaseException] = {}
        self.reject: Dict[str, BaseException] = {}
        self.writes: List[Dict[str, Any]] = []
        self.monitors: Dict[str, List[MemoryMonitor]] = {}
        self._lock = threading.Lock()

    # -- what another client (or the IOC) does -------------------------------------------------------
    def set(self, pv: str, value: Any) -> None:
        """Store ``value`` as another client's write would, and post it to the PV's monitors."""
        with self._lock:
            self.values[pv] = value
            monitors = list(self.monitors.get(pv, ()))
        for monitor in monitors:
            monitor.post(value)

    def disconnect(self, pv: str) -> None:
        """Tell the PV's monitors that its server went away (the value stays)."""
        for monitor in list(self.monitors.get(pv, ())):
            monitor.post(Disconnected())

    # -- BridgeIO's interface --------------------------------------------------------------------------
    def monitor(self, pv: str, wake: Callable[[], None]) -> MemoryMonitor:  # type: ignore[override]
        """Subscribe; like PVA, the first update is the current value when the PV exists."""
        monitor = MemoryMonitor(pv, wake)
        with self._lock:
            self.monitors.setdefault(pv, []).append(monitor)
            present, value = pv in self.values, self.values.get(pv)
        if present:
            monitor.post(value)
        return monitor

    watch = monitor  # type: ignore[assignment]  # every update wakes, as where the compiled part is not built

    def close(self) -> None:
        for monitors in self.monitors.values():
            for monitor in monitors:
                monitor.close()

    def _get(
        self, names: Names, timeout: Optional[float], convert: bool = True, settle: Any = None
    ) -> Tuple[bool, List[str], List[Any], Dict[str, BaseException]]:
        single = isinstance(names, str)
        name_list = [names] if isinstance(names, str) else list(names)
        with self._lock:
            results = [self._outcome(name, timeout) for name in name_list]
        failures = {n: r for n, r in zip(name_list, results) if isinstance(r, BaseException)}
        if convert:
            results = [r if isinstance(r, BaseException) else to_python(r) for r in results]
        return single, name_list, results, failures

    def send(self, name: str, value: Any) -> Sent:
        sent = Sent(name)
        sent.complete(self._put({name: value}, None).get(name, None))
        return sent

    def _put(self, data: Mapping[str, Any], timeout: Optional[float]) -> Dict[str, BaseException]:
        failures: Dict[str, BaseException] = {}
        with self._lock:
            self.writes.append(dict(data))
            for name in data:
                outcome = self.reject.get(name) or self._outcome(name, timeout)
                if isinstance(outcome, BaseException):
                    failures[name] = outcome
        for name, value in data.items():
            if name not in failures:
                self.set(name, value)
        return failures

    async def _aget(
        self, names: Names, timeout: Optional[float]
    ) -> Tuple[bool, List[str], List[Any], Dict[str, BaseException]]:
        await _round_trip()
        return self._get(names, timeout)

    async def _aput(self, data: Mapping[str, Any], timeout: Optional[float]) -> Dict[str, BaseException]:
        await _round_trip()
        return self._put(data, timeout)

    def _outcome(self, name: str, timeout: Optional[float]) -> Any:
        if name in self.fail:
            return self.fail[name]
        if name not in self.values:
            return TimeoutError(f"no answer within {self._timeout(timeout):g} s")
        return self.values[name]


async def _round_trip() -> None:
    """An awaited operation yields to the event loop once, as one on the network does: the other
    coroutines of a ``gather`` start before it completes."""
    import asyncio  # only where an async def task runs: ~3 MB a process

    await asyncio.sleep(0)
