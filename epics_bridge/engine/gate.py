"""How many of a process's loops Trigger updates wake at once.

Every wake-up a thread needs the GIL for. A batch trigger of a thousand tasks in one process would
wake a thousand loop threads within a few milliseconds, all then waiting for the GIL together; a
thread waiting for it wakes every switch interval to ask, so a thousand of them keep the GIL's
mutex and the scheduler busy with nothing else (measured: batches of 5-13 s where 1-2 s was usual,
most of the CPU in futex calls and context switches). The gate lets ``width`` loops be awake on an
update at a time and queues the others' wake-ups, in order. Only a loop asleep waiting takes a
place (one that is up anyway finds its drain when it next waits), and it gives the place back as
soon as it has read its updates, before anything that may wait for an IOC and at the latest when
a cycle starts: neither a cycle's duration nor a slow IOC ever holds a place. Nothing is dropped:
the updates wait in the task's subscription, and the drain a wake-up brings reads them all.
"""

from __future__ import annotations

import collections
import threading
from typing import Callable, Deque, Tuple

__all__ = ["WIDTH", "Gate"]

#: Loops awake on an update at once in one process.
WIDTH = 8


#: What a wake-up brings the loop: a drain of its Trigger updates.
Drain = Callable[[], None]
#: How the gate hands a place and its drain to a loop.
Deliver = Callable[[Drain], None]


class Gate:
    """The places of one process's loops; the wake-ups waiting for one, oldest first."""

    def __init__(self, width: int = WIDTH) -> None:
        self.width = width
        self._lock = threading.Lock()
        self._awake = 0
        self._waiting: Deque[Tuple[Deliver, Drain]] = collections.deque()

    def wake(self, deliver: Deliver, drain: Drain) -> None:
        """``deliver(drain)`` now if a place is free, else once one is; the loop it delivers to
        holds the place until it calls :meth:`leave`. Called on pvxs's network thread: never waits."""
        with self._lock:
            if self._awake >= self.width:
                self._waiting.append((deliver, drain))
                return
            self._awake += 1
        deliver(drain)

    def leave(self) -> None:
        """A place given back: the next wake-up waiting takes it."""
        with self._lock:
            if not self._waiting:
                self._awake -= 1
                return
            deliver, drain = self._waiting.popleft()
        deliver(drain)
