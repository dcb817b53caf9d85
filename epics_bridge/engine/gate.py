"""How many of a process's loops Trigger updates wake at once.

Every wake-up a thread needs the GIL for. A batch trigger of a thousand tasks in one process would
wake a thousand loop threads within a few milliseconds, all then waiting for the GIL together; a
thread waiting for it wakes every switch interval to ask, so a thousand of them keep the GIL's
mutex and the scheduler busy with nothing else (measured: batches of 5-13 s where 1-2 s was usual,
most of the CPU in futex calls and context switches). The gate lets ``width`` loops be awake on an
update at a time and queues the others' wake-ups, in order; a loop gives its place back as soon as
it has read its updates, before anything that may wait for an IOC, so neither a cycle's own
duration nor a slow IOC ever holds a place. Nothing is dropped: the updates wait in the task's
subscription, and the drain that a wake-up brings reads them all.
"""

from __future__ import annotations

import collections
import threading
from typing import Callable, Deque, Tuple

__all__ = ["WIDTH", "Gate", "Placed"]

#: Loops awake on an update at once in one process.
WIDTH = 8


class Placed:
    """A wake-up that holds a place at the gate: the loop that runs it gives the place back."""

    __slots__ = ("call",)

    def __init__(self, call: Callable[[], None]) -> None:
        self.call = call


#: A wake-up waiting for a place: how to deliver it, and what.
Wake = Tuple[Callable[[Placed], None], Placed]


class Gate:
    """The places of one process's loops; the wake-ups waiting for one, oldest first."""

    def __init__(self, width: int = WIDTH) -> None:
        self.width = width
        self._lock = threading.Lock()
        self._awake = 0
        self._waiting: Deque[Wake] = collections.deque()

    def wake(self, put: Callable[[Placed], None], item: Placed) -> None:
        """Deliver ``item`` with ``put`` now if a place is free, else once one is; whoever runs it
        holds the place until :meth:`leave`. Called on p4p's network thread: never waits."""
        with self._lock:
            if self._awake >= self.width:
                self._waiting.append((put, item))
                return
            self._awake += 1
        put(item)

    def leave(self) -> None:
        """A place given back: the next wake-up waiting takes it."""
        with self._lock:
            if not self._waiting:
                self._awake -= 1
                return
            put, item = self._waiting.popleft()
        put(item)
