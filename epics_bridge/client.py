"""The client side of the Trigger handshake, as an operator's client does it: put Trigger=1, wait
on a monitor for this cycle's Trigger=0, then read TaskStatus. For tests, scripts and tools that
drive tasks::

    from p4p.client.thread import Context

from .io import BridgeIO
    from epics_bridge.client import Trigger

    ctx = Context("pva", nt=False)          # raw values: the client reads their IOC timestamps
    trigger = Trigger(ctx, "IOC:MOTOR:01:")
    status = trigger.cycle(timeout=10.0)    # the TaskStatus of this cycle, as an int
    trigger.close()

One implementation for the test suite and the repository's benchmark. Monitor callbacks only
record (PV, value, IOC timestamp, arrival time) and hand over through a queue or an append; waiting
happens in the caller's thread, always under a deadline. An acknowledge counts only if its IOC
timestamp is not older than the put, so a late update of an earlier cycle, or a monitor's initial
value, is never taken for one. So the IOC's clock must agree with ``time.time()`` to well within a
cycle, as it does for an IOC on the same host.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, NamedTuple, Optional, Sequence, Union

from p4p.client.thread import Context

from .io import BridgeIO
from .kept import Feed, KeptPuts

__all__ = ["Handshake", "Monitors", "Recorder", "Trigger", "Update", "plain", "stamp"]


def stamp(value: Any) -> float:
    """The IOC timestamp of a raw (``nt=False``) value, as POSIX seconds."""
    return float(value["timeStamp.secondsPastEpoch"] + value["timeStamp.nanoseconds"] * 1e-9)


def plain(value: Any) -> Any:
    """The value of a raw value (an enum's index)."""
    return value["value.index"] if "value.index" in value else value["value"]


class Update(NamedTuple):
    name: str
    value: Any
    stamp: float  # the IOC's timestamp (POSIX epoch, the same clock as time.time() on this host)
    arrival: float  # time.perf_counter() when the client got it


class Monitors:
    """A client's subscriptions, their callbacks run in order on one thread of its own.

    p4p drops a wakeup that comes before ``Context.monitor()`` has returned ("Lost Subscription
    update") and then never wakes that subscription again; it happens under load, when the first
    update is quick. One extra wakeup queued as soon as the subscription exists drains what waits.
    """

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.push = self.push_wait = self._queue.put  # the work-queue interface p4p calls
        self._subs: List[Any] = []
        self._thread = threading.Thread(target=self._run, name="client-monitors", daemon=True)
        self._thread.start()

    def subscribe(self, name: str, callback: Callable[[Any], None]) -> None:
        sub = self.ctx.monitor(name, callback, queue=self)
        self._subs.append(sub)
        self._queue.put(sub._handle)

    def _run(self) -> None:
        while True:
            work = self._queue.get()
            if work is None:
                return
            work()

    def close(self) -> None:
        for sub in self._subs:
            sub.close()
        self._queue.put(None)
        self._thread.join(timeout=5.0)


class _Fed:
    """A :class:`~epics_bridge.kept.Feed`'s updates as the queue of :class:`Update` that
    :class:`Handshake` reads (one reader thread)."""

    def __init__(self, feed: Feed, names: Sequence[str]) -> None:
        self._feed, self._names = feed, list(names)
        self._ready: Deque[Update] = deque()

    def get(self, timeout: Optional[float] = None) -> Update:
        if not self._ready:
            for index, value, ioc_stamp, arrival in self._feed.take(1e9 if timeout is None else timeout):
                self._ready.append(Update(self._names[index], value, ioc_stamp, arrival))
        if not self._ready:
            raise queue.Empty
        return self._ready.popleft()

    def get_nowait(self) -> Update:
        return self.get(0.0)

    def close(self) -> None:
        self._feed.close()

    def empty(self) -> bool:
        try:
            self._ready.appendleft(self.get(0.0))
        except queue.Empty:
            return True
        return False


class Handshake:
    """Triggers tasks like a client does: put Trigger=1, wait on a monitor for Trigger=0.

    ``recorded``: the Trigger updates are read in C++ and handed over in bulk (kept/), where that is
    available, rather than through a p4p subscription each: for batches of many tasks, whose client
    would otherwise spend a third of a shared host's CPU on the acknowledges it waits for. The
    closed-loop cycle of one task keeps p4p's path, as every responder it is compared with was
    measured through it.
    """

    def __init__(self, monitors: Monitors, prefixes: Sequence[str], recorded: bool = False) -> None:
        self.ctx = monitors.ctx
        names = [p + "Trigger" for p in prefixes]
        #: IOC timestamp of each Trigger's latest acknowledge seen by trigger()
        self.ack_stamps: Dict[str, float] = {}
        #: seconds the latest trigger() took to write Trigger=1 (all of them acknowledged by the IOC)
        self.put_seconds: Optional[float] = None
        #: of the latest trigger() that every task acknowledged: seconds from the earliest Trigger=1
        #: to the latest acknowledge, both as the IOC stamped them (the client's own delays left out)
        self.ioc_span: Optional[float] = None
        # A batch's writes leave from C++ at once (kept operations, see kept/): the client's own
        # Python would otherwise spread 1000 requests over as many GIL hand-offs, and a client on
        # the same host as the service then measures its own share of the cores.
        self._kept = KeptPuts(self.ctx)
        self._kept.keep(*names)
        self._batch = BridgeIO(self.ctx, kept=self._kept)
        feed = self._kept.feed(names) if recorded else None
        self.updates: Union[queue.SimpleQueue[Update], _Fed]
        if feed is not None:
            self.updates = _Fed(feed, names)
            return
        updates: queue.SimpleQueue[Update] = queue.SimpleQueue()
        self.updates = updates
        for name in names:
            monitors.subscribe(name, self._recorder(name, updates.put))

    @staticmethod
    def _recorder(name: str, put: Callable[[Update], None]) -> Callable[[Any], None]:
        def record(value: Any) -> None:
            if not isinstance(value, Exception):
                put(Update(name, plain(value), stamp(value), time.perf_counter()))

        return record

    def trigger(self, names: Sequence[str], timeout: float) -> Dict[str, float]:
        """One batch put of Trigger=1 to ``names``; seconds until each was back to 0 (absent: not in time)."""
        while not self.updates.empty():
            self.updates.get_nowait()
        self.put_seconds = self.ioc_span = None
        wall, started = time.time(), time.perf_counter()
        try:
            if len(names) == 1:
                self.ctx.put(names[0], 1, timeout=timeout)
            else:  # all at once under one deadline, with no read before each write (p4p's list put reads first)
                self._batch.put(dict.fromkeys(names, 1), timeout=timeout)
        except Exception:  # not even written in time: nothing to wait for
            return {}
        self.put_seconds = time.perf_counter() - started
        return self.acknowledges(names, wall, started, timeout)

    def acknowledges(
        self, names: Sequence[str], since: float, started: Optional[float] = None, timeout: float = 10.0
    ) -> Dict[str, float]:
        """Wait for Trigger=0 stamped at or after ``since`` (``time.time()``) on each of ``names``;
        seconds from ``started`` (``time.perf_counter()``, default now) to each (absent: not in time)."""
        started = time.perf_counter() if started is None else started
        deadline = started + timeout
        waiting, acks = set(names), {}
        requested, acknowledged = float("inf"), float("-inf")
        while waiting:
            try:
                u = self.updates.get(timeout=max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                break
            if u.name in waiting and u.stamp >= since:
                if u.value:
                    requested = min(requested, u.stamp)
                    continue
                acks[u.name] = u.arrival - started
                self.ack_stamps[u.name] = u.stamp
                acknowledged = max(acknowledged, u.stamp)
                waiting.discard(u.name)
        if not waiting and requested <= acknowledged:
            self.ioc_span = acknowledged - requested
        return acks

    def close(self) -> None:
        """Close the batch writes' operations and recorded subscriptions (p4p's are the Monitors')."""
        if isinstance(self.updates, _Fed):
            self.updates.close()
        self._kept.close()

    def cycle(self, prefix: str, timeout: float) -> Optional[float]:
        """One closed-loop cycle: seconds from the put to the acknowledge, None if not in time."""
        name = prefix + "Trigger"
        return self.trigger([name], timeout).get(name)


class Trigger:
    """One task's closed-loop client, for tests and scripts: :meth:`cycle` triggers one cycle and
    returns the TaskStatus the IOC held when it was acknowledged."""

    def __init__(self, ctx: Context, prefix: str) -> None:
        self.ctx, self.prefix, self.pv = ctx, prefix, prefix + "Trigger"
        self._monitors = Monitors(ctx)
        self.handshake = Handshake(self._monitors, [prefix])

    def cycle(self, timeout: float = 10.0) -> int:
        if self.handshake.cycle(self.prefix, timeout) is None:
            raise TimeoutError(f"{self.pv}: no acknowledge (Trigger=0) within {timeout:g} s")
        return int(plain(self.ctx.get(self.prefix + "TaskStatus", timeout=timeout)))

    def wait_acknowledge(self, since: float, timeout: float = 10.0) -> None:
        """Wait for the acknowledge of a cycle that someone else triggered after ``since`` (time.time())."""
        if not self.handshake.acknowledges([self.pv], since, timeout=timeout):
            raise TimeoutError(f"{self.pv}: no acknowledge (Trigger=0) within {timeout:g} s")

    def close(self) -> None:
        self.handshake.close()
        self._monitors.close()


class Recorder:
    """Every update of some PVs, per PV in arrival order, with IOC timestamps: what a client saw."""

    def __init__(self, ctx: Context, names: Sequence[str]) -> None:
        self.of: Dict[str, List[Update]] = {name: [] for name in names}
        self._monitors = Monitors(ctx)
        for name in names:
            self._monitors.subscribe(name, self._recorder(name))

    def _recorder(self, name: str) -> Callable[[Any], None]:
        record = self.of[name].append

        def on_update(value: Any) -> None:
            if not isinstance(value, Exception):
                record(Update(name, plain(value), stamp(value), time.perf_counter()))

        return on_update

    def close(self) -> None:
        self._monitors.close()
