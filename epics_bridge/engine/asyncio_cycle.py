"""An ``async def`` task's function, run on an event loop of its own, on the task's own loop thread.

The cycle around it is the plain one (engine/cycle.py): the same thread waits for the trigger,
writes Busy=1, then hands the function's coroutine to :meth:`EventLoop.run`, which runs the task's
event loop until the coroutine ends, and writes the status and the acknowledge. The event loop is
made when the thread starts and closed when it ends: clients bound to a loop (an HTTP session, a
database pool) live across cycles, and no cycle pays for a new loop. PV operations complete from
p4p's callbacks through ``call_soon_threadsafe`` (io.py): no thread per operation, no polling.

Between cycles the event loop does not run (the thread waits for the next trigger): a background
task that a cycle starts and does not await goes on in the next cycle.

Promises that hold because the loop thread is the task's own:

- A blocking call in the coroutine (``time.sleep``, a blocking client) blocks this thread only:
  the cycle stalls, the heartbeat stops pulsing and the watchdog sees it, as for a plain task.
- ``time_limit=`` is a timer of the event loop that cancels the coroutine at its current
  ``await``; the cycle ends EXCEPTION naming the limit and the line. A coroutine that never
  reaches an ``await`` (blocked, or computing) cannot be cancelled and falls through to the
  watchdog. The thread-level limit (timelimit.py) is not armed for async tasks: an exception
  raised into the event loop's own code could leave the loop broken for the task's later cycles.
- At a graceful stop the runner cancels a coroutine still running near the end of ``--stop-grace``
  (:meth:`EventLoop.cancel`): its ``finally`` blocks run, and the cycle ends EXCEPTION.
"""

from __future__ import annotations

import asyncio
import traceback
from types import FrameType
from typing import Any, Callable, List, Optional

from ..async_context import AsyncTaskContext
from ..io import BridgeIO
from ..task import Task
from .timelimit import TimeLimitExceeded

__all__ = ["CycleCancelled", "EventLoop"]

#: Seconds a stopping task's leftover background tasks get to end once cancelled.
LEFTOVER_GRACE = 1.0
#: Coroutines awaiting one another followed at most, for the watchdog's diagnosis.
MAX_AWAIT_DEPTH = 50


class CycleCancelled(Exception):
    """The coroutine was cancelled by a graceful stop, or by code of its own."""


class EventLoop:
    """Runs one async task's cycles on its event loop. Every method but :meth:`cancel` is called on
    the task's loop thread."""

    def __init__(self, task: Task, io: BridgeIO, guard: Callable[[str], None]) -> None:
        self.task = task
        self.context = AsyncTaskContext(task.name, task.pvs, io, guard=guard)
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        #: The running cycle's coroutine, and what ends the cycle if this class cancelled it.
        self._running: Optional[asyncio.Task[Any]] = None
        self._why: Optional[BaseException] = None

    def open(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)  # for libraries that ask for the thread's loop when built

    def close(self) -> None:
        """Cancel what the cycles left running, then close the loop (as ``asyncio.run`` ends)."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        try:
            leftovers = asyncio.all_tasks(loop)
            for leftover in leftovers:
                leftover.cancel()
            if leftovers:
                loop.run_until_complete(asyncio.wait(leftovers, timeout=LEFTOVER_GRACE))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())  # asyncio.to_thread's threads
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    def run(self) -> object:
        """One call of the task function: its coroutine to the end, on this thread. Returns what it
        returned; raises what it raised, :class:`TimeLimitExceeded` when its time limit cancelled
        it, :class:`CycleCancelled` when a stop did, and
        :class:`~epics_bridge.async_context.NotAwaitedError` for an operation it never awaited."""
        loop = self._loop
        assert loop is not None, "run() between open() and close()"
        running = self._running = loop.create_task(self.task.func(self.context))  # type: ignore[arg-type]
        self._why = None
        limit = self.task.time_limit
        expiry = None
        if limit is not None:
            expiry = loop.call_later(limit, self._cancel, running, TimeLimitExceeded(f"time limit ({limit:g} s)"))
        try:
            result = loop.run_until_complete(running)
        except asyncio.CancelledError as exc:
            self.context.check_awaited(exc)
            raise self._cancelled(exc) from None
        except BaseException as exc:
            self.context.check_awaited(exc)
            raise
        finally:
            self._running = None
            if expiry is not None:
                expiry.cancel()
        if self._why is not None:  # the coroutine caught the cancellation and returned
            raise self._cancelled(None)
        self.context.check_awaited()
        return result

    def cancel(self, reason: str) -> None:
        """From any thread: cancel the coroutine running now (if any) at its current ``await``."""
        loop, running = self._loop, self._running
        if loop is None or running is None:
            return
        try:
            loop.call_soon_threadsafe(self._cancel, running, CycleCancelled(f"cancelled: {reason}"))
        except RuntimeError:  # the loop closed meanwhile: nothing runs any more
            pass

    def awaiting(self) -> traceback.StackSummary:
        """From any thread: where the running coroutine is suspended, outermost frame first (empty
        when none runs, or while it runs on the thread, whose own stack then shows it). For the
        watchdog's last words: a diagnosis read while the coroutine may move on."""
        running = self._running
        frames: List[FrameType] = []
        awaited: Any = running.get_coro() if running is not None else None
        while awaited is not None and len(frames) < MAX_AWAIT_DEPTH:
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
            if frame is None or getattr(awaited, "cr_running", False) or getattr(awaited, "gi_running", False):
                break
            frames.append(frame)
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
        return traceback.StackSummary.extract((frame, frame.f_lineno) for frame in frames)

    def _cancel(self, running: asyncio.Task[Any], why: BaseException) -> None:
        if running is self._running and not running.done() and self._why is None:
            self._why = why
            running.cancel(str(why))

    def _cancelled(self, exc: Optional[asyncio.CancelledError]) -> BaseException:
        """The exception that ends a cancelled cycle, with the traceback of the coroutine where the
        cancellation reached it (so the log names the line of its ``await``)."""
        inner = exc.__context__ if exc is not None and exc.__context__ is not None else exc
        error = self._why or CycleCancelled("the coroutine was cancelled by code of its own (not a time limit)")
        return error.with_traceback(inner.__traceback__ if inner is not None else None)
