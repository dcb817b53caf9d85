"""``time_limit=``: interrupt a runaway cycle inside its own thread, so the loop goes on.

One watcher thread per process keeps the deadlines of the cycles that have a limit. When one
passes, it raises :class:`TimeLimitExceeded` in the task's loop thread with
``PyThreadState_SetAsyncExc`` (the mechanism of Dramatiq's TimeLimit middleware). That exception
is delivered only when the thread next runs Python bytecode: a cycle blocked in C (``time.sleep``,
a lock, a socket, a p4p wait) is not interrupted until that call returns, so the stall watchdog
and the worker restart stay the guarantee and the limit is best effort.

It derives from BaseException so that ``except Exception:`` in task code does not swallow it, and
a limit armed for one cycle is disarmed (and a pending exception withdrawn) under the same lock the
watcher fires under, so it can never land after the cycle it was meant for.
"""

from __future__ import annotations

import ctypes
import heapq
import itertools
import threading
import time
from contextlib import contextmanager, nullcontext
from typing import ContextManager, Dict, Iterator, List, Optional, Set, Tuple

__all__ = ["TimeLimitExceeded", "TimeLimits"]


#: Every cycle without a limit shares this one (a generator context manager per cycle cost ~20 us).
_NO_LIMIT: ContextManager[None] = nullcontext()


class TimeLimitExceeded(BaseException):
    """Raised inside a cycle that ran past its task's ``time_limit``."""


class TimeLimits:
    """The deadlines of one runner's running cycles, and the thread (started on first use) that
    enforces them."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._deadlines: List[Tuple[float, int, int]] = []  # (deadline, token, thread id)
        self._armed: Dict[int, int] = {}  # token -> thread id, while its cycle runs
        self._fired: Set[int] = set()
        self._tokens = itertools.count()
        self._thread: Optional[threading.Thread] = None

    def limit(self, seconds: Optional[float]) -> ContextManager[None]:
        """Run the block under a limit of ``seconds`` (None: no limit) in the calling thread."""
        return _NO_LIMIT if seconds is None else self._limited(seconds)

    @contextmanager
    def _limited(self, seconds: float) -> Iterator[None]:
        token = self._arm(seconds, threading.get_ident())
        try:
            yield
        finally:
            self._disarm(token)

    def _arm(self, seconds: float, thread_id: int) -> int:
        with self._lock:
            token = next(self._tokens)
            self._armed[token] = thread_id
            heapq.heappush(self._deadlines, (time.monotonic() + seconds, token, thread_id))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="time-limits", daemon=True)
                self._thread.start()
            self._lock.notify()
            return token

    def _disarm(self, token: int) -> None:
        """End a cycle's limit; if it fired and the exception is still pending, withdraw it."""
        with self._lock:
            thread_id = self._armed.pop(token, None)
            fired = token in self._fired
            self._fired.discard(token)
            if fired and thread_id is not None:
                _async_raise(thread_id, None)

    def _run(self) -> None:
        with self._lock:
            while True:
                now = time.monotonic()
                while self._deadlines and (self._deadlines[0][0] <= now or self._deadlines[0][1] not in self._armed):
                    _, token, thread_id = heapq.heappop(self._deadlines)
                    if token in self._armed:
                        self._fired.add(token)
                        _async_raise(thread_id, TimeLimitExceeded)
                self._lock.wait(self._deadlines[0][0] - now if self._deadlines else None)


def _async_raise(thread_id: int, exc: Optional[type]) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc else None)
