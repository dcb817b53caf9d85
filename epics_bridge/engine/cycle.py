"""One task's control loop, on its own thread: wait for a trigger, then

    Busy=1 (acknowledged) -> run the function -> TaskStatus, TaskDuration -> Busy=0, Trigger=0

in that order, so a client that waits for Trigger to return to 0 reads this cycle's status.

An IOC that restarts during a cycle comes back with Busy=0 and Trigger=0, and a client may write a
new Trigger=1 at once: the cycle's acknowledge, written afterwards, would clear that new request
unserved. So an end that may follow a restart (the Trigger link dropped during the cycle, or an
earlier attempt to write it failed) is re-decided first: if Busy is no longer 1, the IOC lost the
cycle, which is reported (status and duration) without the acknowledge, and a Trigger=1 found then
is a new request, served once. Two rules keep a cycle within the one IOC lifetime its Busy=1 was
written in, so that it cannot also serve (and so run twice) a request made after the restart: a
Busy=1 written across a drop of the link is withdrawn and the request read again, and once the
link has dropped during a cycle, the task's own reads and writes fail (PVDisconnectedError).

Waiting never polls: when a Trigger update the loop must act on arrives (a request, a change of the
link; the Trigger watch of kept/ keeps the rest until the loop next reads), pvxs's network thread
only queues a drain on the loop's own queue (through the process's gate, gate.py, which lets a few
loops wake at a time), so the loop thread itself handles the updates (nothing runs on p4p's shared
callback workers) and otherwise sleeps in ``queue.get`` until an update, a timer, or stop arrives.
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple, Union

from loguru import logger
from p4p import Value
from p4p.client.thread import Disconnected, RemoteError

from ..io import BridgeIO, Monitor, PVDisconnectedError, PVError, PVRejectedError
from ..kept import Watch
from ..status import TaskStatus, status_of
from ..task import Task
from ..task_context import TaskContext
from ..values import NTENUM, to_python
from .gate import Gate
from .handshake import Handshake, group_pv, kind_of
from .hooks import Hooks
from .ownership import Ownership
from .timelimit import TimeLimitExceeded, TimeLimits

if TYPE_CHECKING:
    from .asyncio_cycle import EventLoop

__all__ = ["Loop"]

_STOP = object()
#: A cycle whose end could not be written retries every this many seconds.
RETRY_PERIOD = 1.0
#: What a task may raise that means "the PV layer failed" rather than "the code is wrong".
_IO_ERRORS = (PVError, TimeoutError, Disconnected, RemoteError)


class Loop:
    """Runs one task's cycles and tells the heartbeat whether it is alive."""

    def __init__(
        self, task: Task, io: BridgeIO, hooks: Hooks, limits: Optional[TimeLimits] = None, gate: Optional[Gate] = None
    ) -> None:
        self.task = task
        self.gate = gate
        self._places = 0  # places at the gate delivered to this loop and not yet given back
        self._ended = False  # the loop thread returned: a place handed to it goes straight back
        self._delivery = threading.Lock()  # guards the two above
        self.limits = limits or TimeLimits()
        self.io = io
        self.hooks = hooks
        self.log = logger.bind(task=task.name)
        #: An ``async def`` task's event loop (asyncio_cycle.py), None for a plain function.
        self.events: Optional[EventLoop] = _event_loop(task, io, self._same_ioc)
        self.context = (
            self.events.context if self.events else TaskContext(task.name, task.pvs, io, guard=self._same_ioc)
        )
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.source = _make_source(self)
        self.thread = threading.Thread(target=self._run, name=f"task:{task.name}", daemon=True)
        #: monotonic time since which the loop has been doing something other than waiting
        self.busy_since: Optional[float] = time.monotonic()
        self.in_cycle = False
        self._end = _CycleEnd(task, io, self.log, write_trigger=task.period is None, link_dropped=self._link_dropped)
        self._unacked: Optional[Tuple[TaskStatus, float]] = None
        self._drops_at_busy = 0  # the Trigger link's drop count when this cycle wrote Busy=1
        self._last_status: Optional[TaskStatus] = None
        self._stopping = False
        self.ownership = Ownership(task, io, self.log, lambda: self.queue.put(self.ownership.drain))
        self.handshake = Handshake(task, io, self.log, self.ownership)
        #: serving its prefix (handshake done); the heartbeat pulses only while ``pulsing``
        self.serving = self.pulsing = False
        self._readiness: Optional[Tuple[bool, Optional[str]]] = None
        self._link_down: Optional[str] = None  # why the Trigger monitor is not connected

    # -- control, from other threads -----------------------------------------------------------
    def start(self) -> None:
        self.thread.start()

    def wake(self, drain: Callable[[], None]) -> None:
        """Have the loop thread run ``drain`` (pvxs's network thread: never blocks). A loop asleep
        waiting is woken through the process's gate; one that is up anyway (in a cycle, say) only
        finds the drain when it next waits, so it takes no place."""
        if self.gate is None or self.busy_since is not None:
            self.queue.put(drain)
        else:
            self.gate.wake(self._deliver, drain)

    def _deliver(self, drain: Callable[[], None]) -> None:
        """The gate's delivery of a place and the drain it came for."""
        with self._delivery:
            if not self._ended:
                self._places += 1
                self.queue.put(drain)
                return
        assert self.gate is not None, "only a gate delivers"
        self.gate.leave()

    def stop(self) -> None:
        """Finish the current cycle, if any, then return from the thread."""
        self._stopping = True
        self.queue.put(_STOP)

    def abandon(self) -> None:
        """End a cycle that did not finish in the stop grace: like one found at start-up, it was
        interrupted (EXCEPTION, duration unknown), Busy and Trigger are cleared."""
        self.log.error("cycle still running at shutdown: abandoned, reported as EXCEPTION with Busy=0")
        try:
            self._end.write(TaskStatus.EXCEPTION, float("nan"))
        except PVError as exc:
            self.log.error("could not clear Busy for the abandoned cycle: {}", exc)
        self.pulsing = False
        self.ownership.release()

    def cancel(self, reason: str) -> None:
        """Cancel an async task's running coroutine at its current ``await`` (a stop running out of
        grace); a plain function cannot be cancelled and runs on."""
        if self.events is not None:
            self.events.cancel(reason)

    def stalled(self, now: float) -> Optional[str]:
        """Why the loop counts as stalled now, or None while it is alive."""
        if not self.thread.is_alive():
            return None if self._stopping else "its loop thread has ended"
        since = self.busy_since
        if since is not None and now - since > self.task.stall_timeout:
            where = "a cycle" if self.in_cycle else "the loop"
            return f"{where} has been running for {now - since:.1f} s (stall_timeout {self.task.stall_timeout:g} s)"
        return None

    # -- the loop thread -------------------------------------------------------------------------
    def _run(self) -> None:
        # Every line logged on this thread is the task's, also those of code that logs with the
        # plain loguru logger (a helper module, a failed pvget) rather than through t.log.
        with logger.contextualize(task=self.task.name):
            try:
                self.source.open()
                if self.events is not None:
                    self.events.open()
                while self._recover():
                    while self._wait():
                        self._cycle()
            except Exception:
                self.log.opt(exception=True).critical("task loop crashed; the watchdog will end the process")
                raise
            finally:
                self.pulsing = False
                self.ownership.release()
                self.ownership.close()
                self.source.close()
                self._end_delivery()
                if self.events is not None:
                    self.events.close()

    def _cycle(self) -> None:
        self._leave()  # a wake-up that came while the loop was deciding: the cycle holds no place
        self.in_cycle = True
        status, duration = TaskStatus.IO_FAILURE, 0.0
        try:
            self._drops_at_busy = self.source.drops  # the link as the decision to run saw it
            self.io.put({self.task.pvs.busy: 1})
        except PVError as exc:
            self.log.error("cycle not started, Busy=1 not acknowledged: {}", exc)
        else:
            if self._link_dropped():
                self._withdraw()
                self.in_cycle = False
                return
            status, duration = self._call()
        self._finish(status, duration)
        self.in_cycle = False
        self.hooks.cycle_finished(self.task, status, duration)

    def _withdraw(self) -> None:
        """Busy=1 went out across a drop of the Trigger link: it may have landed in a restarted IOC,
        where the request that was due no longer exists. Take it back; a fresh read decides again."""
        self.log.warning("the Trigger link dropped as the cycle started: Busy=1 withdrawn, the request is read again")
        try:
            self.io.put({self.task.pvs.busy: 0})
        except PVError as exc:
            self.log.error("could not withdraw Busy=1: {}", exc)
        self.source.reconsider()

    def _link_dropped(self) -> bool:
        """Whether the Trigger link dropped since this cycle wrote Busy=1 (the IOC may have restarted)."""
        self.source.refresh()
        return self.source.drops != self._drops_at_busy

    def _same_ioc(self, operation: str) -> None:
        """The task's reads and writes (a guard of its context): once the Trigger link has dropped
        during the cycle, the IOC may have restarted, and what it holds now (a request made since,
        perhaps) is no longer this cycle's to read or change."""
        if not self.in_cycle:
            return
        if self._link_dropped():
            reason = ConnectionError("the Trigger link dropped during the cycle (the IOC may have restarted)")
            raise PVDisconnectedError(operation, {self.task.pvs.trigger: reason})

    def _call(self) -> Tuple[TaskStatus, float]:
        started = time.perf_counter()
        try:
            if self.events is not None:  # its time limit is the event loop's
                result = self.events.run()
            else:
                with self.limits.limit(self.task.time_limit):
                    result = self.task.func(self.context)
            status = status_of(result)
        except TimeLimitExceeded as exc:
            status = TaskStatus.EXCEPTION
            self.log.error(
                "cycle interrupted by its time limit ({:g} s) at {}",
                self.task.time_limit,
                line_in_task(traceback.extract_tb(exc.__traceback__), self.task),
            )
        except _IO_ERRORS as exc:
            status = TaskStatus.IO_FAILURE
            self.log.error("cycle failed on PV IO: {}", exc)
        except BaseException:  # SystemExit and KeyboardInterrupt too: only the watchdog or a stop ends a loop
            status = TaskStatus.EXCEPTION
            self.log.opt(exception=True).error("cycle raised an exception")
        duration = time.perf_counter() - started
        if status != self._last_status:  # a change is news; the same status every second is not
            level = "INFO" if status in (TaskStatus.SUCCESS, TaskStatus.SKIPPED) else "WARNING"
            self.log.log(
                level,
                "cycle status {} (was {}) after {:.3f} s",
                status.name,
                getattr(self._last_status, "name", "none"),
                duration,
            )
            self._last_status = status
        return status, duration

    def _finish(self, status: TaskStatus, duration: float) -> None:
        """Write the cycle's end; if the IOC cannot take it now, keep it and retry before anything else."""
        try:
            lost = self._ioc_lost_cycle()
            if lost:
                self._end.report(status, duration)
            else:
                self._end.write(status, duration)
        except PVError as exc:
            if self._unacked is None:
                self.log.error("could not write the end of the cycle ({}); retrying every {:g} s", exc, RETRY_PERIOD)
            self._unacked = (status, duration)
            return
        if self._unacked is not None and not lost:
            self.log.info("end of the cycle written after retrying")
        self._unacked = None
        if lost:
            self.source.reconsider()
        else:
            self.source.acknowledged()

    def _ioc_lost_cycle(self) -> bool:
        """Whether the IOC restarted since this cycle wrote Busy=1, so that its records no longer
        hold the cycle (raises PVError while that cannot be told)."""
        if not self._end.write_trigger:
            return False  # timer mode: Busy=0 is all the end clears, right after a restart too
        dropped = self._link_dropped()
        if self._unacked is None and not dropped:
            return False
        if self.io.get(self.task.pvs.busy):
            return False
        status = "its status" if self._unacked is None else "the status it could not write then"
        self.log.warning(
            "the IOC restarted during the cycle (Busy is 0 again): {} is reported without the acknowledge; "
            "a Trigger=1 found now was written after the restart and is served once",
            status,
        )
        return True

    def _recover(self) -> bool:
        """Start-up, and after another daemon took the prefix: wait until this task may serve (the
        IOC answers its whole handshake and no live daemon holds the prefix, see handshake.py),
        then deal with a cycle its predecessor left. False when asked to stop.

        A Busy=1 left behind means the previous instance died mid-cycle. That cycle is reported
        (EXCEPTION), Busy and Trigger are cleared and it is never re-run: it may have
        half-happened. A Trigger=1 with Busy=0 is a request made while no daemon ran, and the
        first wait serves it.
        """
        if self._stopping:
            return False
        self.serving = self.pulsing = False
        found = self.handshake.wait(self._idle, self._not_serving)
        if found is None:
            return False
        group, busy = found
        self._end.use_group(group)
        self.serving = self.pulsing = True
        self._ready(self._link_down is None, self._link_down)
        if busy:
            self.log.error(
                "Busy=1 at start-up: the previous instance died during a cycle; reporting it as "
                "EXCEPTION and clearing Busy and Trigger (that cycle is not run again)"
            )
            self.in_cycle = True
            self._finish(TaskStatus.EXCEPTION, float("nan"))  # its duration is unknown
            self.in_cycle = False
        return True

    def _not_serving(self, reason: str, pulse: bool) -> None:
        self.pulsing = pulse
        self._ready(False, reason)

    def link(self, down: Optional[str]) -> None:
        """The Trigger monitor's connection changed (loop thread): None when connected, else why not."""
        self._link_down = down
        if self.serving:
            self._ready(down is None, down)

    def _ready(self, ready: bool, reason: Optional[str] = None) -> None:
        if (ready, reason) != self._readiness:
            self._readiness = (ready, reason)
            self.hooks.ready(self.task, ready, reason)

    def _lost(self) -> bool:
        """Another daemon took the prefix (see ownership.py): stop serving it."""
        holder = self.ownership.lost()
        if holder is None:
            return False
        self.log.error(
            "another daemon took prefix {}: {} now names {}; this daemon ({}) stops serving it and waits",
            self.task.prefix,
            self.ownership.pv,
            holder,
            self.ownership.token,
        )
        return True

    # -- waiting ----------------------------------------------------------------------------------
    def _wait(self) -> bool:
        """Block until a cycle is due. False when asked to stop, or when another daemon took the prefix.

        Asks :meth:`due` before sleeping: a Trigger update handled while the loop waited for the
        IOC at start-up is a request already, and no further update may come to wake the loop.
        """
        while True:
            if self._unacked is None and not self._stopping and self.source.due():
                return True
            timeout = self.source.timeout()
            if self._unacked is not None:
                timeout = RETRY_PERIOD if timeout is None else min(timeout, RETRY_PERIOD)
            if not self._idle(timeout) or self._lost():
                return False
            if self._unacked is not None:
                self._finish(*self._unacked)

    def _idle(self, timeout: Optional[float]) -> bool:
        """Sleep until something is queued or ``timeout``; run what was queued. False on stop."""
        self.busy_since = None
        try:
            item: Any = self.queue.get(timeout=timeout)
        except queue.Empty:
            item = None
        self.busy_since = time.monotonic()
        try:
            while item is not None:
                if item is _STOP:
                    return False
                item()  # a drain queued by TriggerMonitor: the updates are handled on this thread
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    item = None
            return True
        finally:
            self._leave()  # before anything that may wait for an IOC: a slow one holds no place

    def _end_delivery(self) -> None:
        """No more wake-ups for this thread: the places it holds go back to the gate."""
        with self._delivery:
            self._ended = True
        self._leave()

    def _leave(self) -> None:
        """Give back the places delivered to this loop (it is about to block, or to run a cycle)."""
        with self._delivery:
            places, self._places = self._places, 0
        for _ in range(places):
            assert self.gate is not None, "places are only delivered by a gate"
            self.gate.leave()


def _event_loop(task: Task, io: BridgeIO, guard: Callable[[str], None]) -> Optional[EventLoop]:
    """An event loop for an ``async def`` task; asyncio is imported only then (~3 MB a process)."""
    if not task.is_async:
        return None
    from .asyncio_cycle import EventLoop

    return EventLoop(task, io, guard)


def line_in_task(stack: traceback.StackSummary, task: Task) -> str:
    """The innermost line of the task's own file in ``stack`` (else the innermost line), as
    ``file:line in function: code``: where a cycle hangs or was interrupted."""
    # where it was declared (also when the function runs wrapped, as under bridge_ioc), or its code
    files = {str(task.source.path), getattr(getattr(task.func, "__code__", None), "co_filename", None)}
    frame = next((f for f in reversed(stack) if f.filename in files), stack[-1] if stack else None)
    return f"{frame.filename}:{frame.lineno} in {frame.name}: {frame.line}" if frame else "an unknown line"


#: The CycleEnd group's members as the previous release's bridge.db served them (whole normative
#: types), by their names in the plain group.
_NESTED = {
    "status": "status.value.index",
    "duration": "duration.value",
    "busy": "busy.value.index",
    "trigger": "trigger.value.index",
}


class _CycleEnd:
    """Writes TaskStatus and TaskDuration, then Busy=0 and Trigger=0.

    With ``db/bridge.db`` that is one put to its QSRV group ``$(P)CycleEnd``, which writes the four
    records in that order (``+putorder``) in one round trip; IOCs without the group get the same
    order as two acknowledged batches.
    """

    def __init__(
        self, task: Task, io: BridgeIO, log: Any, write_trigger: bool, link_dropped: Callable[[], bool]
    ) -> None:
        self.task, self.io, self.log = task, io, log
        self.write_trigger = write_trigger
        self.link_dropped = link_dropped  # since this cycle's Busy=1: the IOC may have restarted
        self.group: Optional[str] = None
        self._nested = False

    def use_group(self, value: Any) -> None:
        """The group's value read at the handshake (None: it did not answer). Its members are plain
        values in this release's bridge.db, whole normative types (``status.value.index``) in an IOC
        still running an earlier one."""
        name = group_pv(self.task)
        if name is not None and value is None:
            self.log.info("IOC has no {} group PV; ending cycles with ordered puts", name)
        self.group = None if value is None else name
        self._nested = value is not None and "status.value" in value

    def report(self, status: TaskStatus, duration: float) -> None:
        """TaskStatus and TaskDuration alone: the end of a cycle whose IOC has restarted since."""
        self.io.put({self.task.pvs.task_status: int(status), self.task.pvs.task_duration: duration})

    def write(self, status: TaskStatus, duration: float) -> None:
        if self.group is not None:
            try:
                self.io.put({self.group: self._group_value(status, duration)})
                return
            except PVRejectedError as exc:
                self.log.warning("{} refused the cycle end ({}); using ordered puts from now on", self.group, exc)
                self.group = None
            except PVError as exc:
                if self._ended_late(exc):
                    return
                self.log.warning(
                    "{} does not answer while the task's records do ({}): the IOC was rebooted without "
                    "it? Using ordered puts from now on",
                    self.group,
                    exc,
                )
                self.group = None
        pvs = self.task.pvs
        self.report(status, duration)
        self.io.put({pvs.busy: 0, **({pvs.trigger: 0} if self.write_trigger else {})})

    def _ended_late(self, failure: PVError) -> bool:
        """After the group's write failed: whether it landed all the same (Busy is 0 in the IOC the
        cycle began in), so that the cycle is ended. Busy still 1 means it did not, and ordered puts
        are as safe as a retry. Raises ``failure`` again while the IOC answers nothing, or when it
        may have restarted since Busy=1: the loop's retry then decides, as for any failed end."""
        try:
            busy = self.io.get(self.task.pvs.busy)
        except PVError:
            raise failure from None
        if not busy and self.link_dropped():
            raise failure
        return not busy

    def _group_value(self, status: TaskStatus, duration: float) -> Dict[str, Any]:
        value: Dict[str, Any] = {"status": int(status), "duration": duration, "busy": 0}
        if self.write_trigger:
            value["trigger"] = 0
        if self._nested:
            return {_NESTED[member]: v for member, v in value.items()}
        return value


# -- what makes a cycle due -------------------------------------------------------------------------
class _Source:
    """How a loop learns that a cycle is due."""

    #: How often the link that brings requests has dropped (a restarting IOC drops it).
    drops = 0

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def timeout(self) -> Optional[float]:
        """How long the loop may sleep before asking :meth:`due` again (None: until woken)."""
        return None

    def due(self) -> bool:
        raise NotImplementedError

    def acknowledged(self) -> None:
        """The end of a cycle (or of an interrupted one) has been written."""

    def refresh(self) -> None:
        """Take in what has arrived since the loop last waited (called on the loop thread)."""

    def reconsider(self) -> None:
        """The IOC restarted during a cycle that was reported without an acknowledge."""


def _requested(value: Any) -> Any:
    """Trigger's number. For an enum that is its index: to_python would also copy the choice
    strings, which play no part here (~15 us of every cycle)."""
    if isinstance(value, Value) and value.getID() == NTENUM:
        return value["value.index"]
    return to_python(value)


class TriggerMonitor(_Source):
    """Trigger mode: a PVA monitor of ``{main}Trigger``.

    A cycle is due when Trigger is non-zero; the loop is woken for a request, a change of the link
    and a value of another kind, and reads every update in order before it decides (with the C++
    watch of kept/, a return to zero wakes nothing: it is read then). After an acknowledge, a
    non-zero update that arrives before the IOC has reported our Trigger=0 may be stale (posted
    before the acknowledge), so it is confirmed with one fresh read; any later update is a new
    request. A reconnect delivers the current value, so a trigger set while disconnected is served.
    """

    def __init__(self, loop: Loop) -> None:
        self.loop = loop
        self.pv = loop.task.pvs.trigger
        self.value: Any = 0
        self.connected = False
        self.unconfirmed = False
        self.drops = 0
        self._wrong_kind: Optional[str] = None
        self._monitor: Optional[Union[Monitor, Watch]] = None
        self._draining = threading.Lock()

    def open(self) -> None:
        # pvxs's network thread only queues a drain; the loop thread reads the updates in order.
        self._monitor = self.loop.io.watch(self.pv, lambda: self.loop.wake(self._drain))

    def close(self) -> None:
        if self._monitor is not None:
            self._monitor.close()

    def _drain(self) -> None:
        if self._monitor is None:  # not open: nothing has arrived
            return
        with self._draining:  # a task's own threads may read PVs, and so drain, beside the loop
            for value in self._monitor.pop():
                self.update(value)

    refresh = _drain

    def update(self, value: Any) -> None:
        if isinstance(value, Exception):
            if self.connected:
                self.loop.log.warning("Trigger PV {} disconnected ({})", self.pv, value)
                self.loop.link(f"Trigger PV {self.pv} disconnected")
                self.drops += 1
            self.connected = False
            return
        if not self.connected:
            self.loop.log.debug("Trigger PV {} connected", self.pv)
            self.loop.link(None)
        self.connected = True
        self.value = self._number(value)
        if not self.value:
            self.unconfirmed = False

    def _number(self, value: Any) -> Any:
        """Trigger's request as a number; 0 for a record of the wrong kind (an array, a string),
        which the handshake names and waits on, and which must never end the loop."""
        if isinstance(value, Value) and value.getID() == NTENUM:  # bridge.db's bo: every cycle, kept cheap
            self._wrong_kind = None
            return value["value.index"]
        kind = value if isinstance(value, str) else kind_of(value)  # a Watch names the kind of a non-number
        if kind in ("enum", "integer", "float"):
            self._wrong_kind = None
            return _requested(value)
        if kind != self._wrong_kind:
            self._wrong_kind = kind
            self.loop.log.warning("Trigger PV {} holds {} value, not a number: no cycle runs on it", self.pv, kind)
        return 0

    def due(self) -> bool:
        self._drain()  # a Watch keeps a return to zero (an acknowledge) without waking the loop
        if not (self.connected and self.value):
            return False
        if self.unconfirmed:
            try:
                self.value = self._number(self.loop.io.get(self.pv))
            except PVError as exc:
                self.loop.log.warning("could not confirm a Trigger update: {}", exc)
                return False
            self.unconfirmed = not self.value
        return bool(self.value)

    def acknowledged(self) -> None:
        self.value = 0
        self.unconfirmed = True

    def reconsider(self) -> None:
        # A Trigger=1 held now may be the lost cycle's own: one fresh read decides.
        self.unconfirmed = True


class Timer(_Source):
    """Timer mode: due every ``period`` seconds on a fixed grid, so cycles never drift."""

    def __init__(self, loop: Loop, period: float) -> None:
        self.loop, self.period = loop, period
        self.next = time.monotonic()

    def timeout(self) -> float:
        return max(0.0, self.next - time.monotonic())

    def due(self) -> bool:
        now = time.monotonic()
        if now < self.next:
            return False
        missed = int((now - self.next) // self.period)
        if missed:
            self.loop.log.warning("timer overrun: skipped {} period(s) of {:g} s", missed, self.period)
        self.next += (missed + 1) * self.period
        return True


class Poll(Timer):
    """Polling as in epics-bridge 1.0.1: call the daemon's own ``trigger()`` every period; truthy means run."""

    def __init__(self, loop: Loop, poll: Callable[[], object], period: float) -> None:
        super().__init__(loop, period)
        self.poll = poll

    def due(self) -> bool:
        if not super().due():
            return False
        try:
            return bool(self.poll())
        except Exception:
            self.loop.log.opt(exception=True).error("trigger() raised; treated as no trigger")
            return False


def _make_source(loop: Loop) -> _Source:
    task = loop.task
    if task.poll is not None:
        return Poll(loop, task.poll, task.poll_period)
    if task.period is not None:
        return Timer(loop, task.period)
    return TriggerMonitor(loop)
