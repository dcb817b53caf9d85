"""Log sinks that never block the thread that logs: every console and file sink is a
:class:`QueuedSink`.

A log line is written by whatever thread logs it, and some of those are the engine's own: the
heartbeat that counts stuck periods, the loop's bookkeeping, the supervisor's loop. A sink that
blocks (a stderr pipe nobody reads, a stuck journald, a full or hung disk) must not stop them, or a
hung task is never ended. So a sink only puts the line into a bounded queue, without waiting,
and one writer thread per sink does the writing; when the queue is full the line is dropped and
counted, and the writer says once how many were lost as soon as it can write again (the stdlib's
``QueueHandler`` design; loguru's ``enqueue=True`` is no help here, its queue is a pipe that blocks
in turn).
"""

from __future__ import annotations

import queue
import threading
import time
import weakref
from typing import Callable, Optional

from loguru import logger

__all__ = ["BLOCKED", "QUEUE_SIZE", "STOP_TIMEOUT", "QueuedSink", "drain"]

#: Lines a sink holds for its writer before it drops.
QUEUE_SIZE = 10_000
#: What an orderly stop waits, at most, for a sink's pending lines to be written.
STOP_TIMEOUT = 2.0
#: A writer inside one write for longer than this is blocked: :func:`drain` does not wait for it.
BLOCKED = 0.1

_sinks: weakref.WeakSet[QueuedSink] = weakref.WeakSet()


class QueuedSink:
    """A loguru sink (it has ``write``) that hands each formatted line to ``write`` on its own thread.

    ``write`` receives loguru's message (a ``str`` that also carries its ``record``); ``close``, if
    given, is called by the writer once the sink has stopped. ``dropped`` counts every line lost,
    whether the queue was full or ``write`` raised.
    """

    def __init__(
        self,
        name: str,
        write: Callable[[str], None],
        close: Optional[Callable[[], None]] = None,
        size: int = QUEUE_SIZE,
    ) -> None:
        self.name = name
        self._write, self._close = write, close
        self._queue: queue.Queue[Optional[str]] = queue.Queue(size)
        self._lock = threading.Lock()
        self.dropped = 0
        self._unsaid = 0
        self._why = "was blocked"
        #: When the write under way began (monotonic clock), or None between writes.
        self._writing_since: Optional[float] = None
        self._thread = threading.Thread(target=self._run, name=f"log-writer:{name}", daemon=True)
        self._thread.start()
        _sinks.add(self)

    def write(self, message: str) -> None:
        """The logging thread's side: never waits."""
        try:
            self._queue.put_nowait(message)
        except queue.Full:
            self._drop("was blocked")

    def _drop(self, why: str) -> None:
        with self._lock:
            self.dropped += 1
            self._unsaid += 1
            self._why = why

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Called by loguru when the sink is removed (an orderly shutdown, a reconfiguration): write
        what is pending for up to ``timeout`` s, then let the writer go."""
        deadline = time.monotonic() + timeout
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(max(0.0, deadline - time.monotonic()))

    @property
    def blocked(self) -> bool:
        """Whether the writer has been inside one write for more than :data:`BLOCKED` s."""
        since = self._writing_since
        return since is not None and time.monotonic() - since > BLOCKED

    def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for every line queued so far to be written; True if it was."""
        with self._queue.all_tasks_done:
            return self._queue.all_tasks_done.wait_for(lambda: not self._queue.unfinished_tasks, timeout)

    def _run(self) -> None:
        said = False
        while True:
            message = self._queue.get()
            try:
                if message is None:
                    if self._close is not None:
                        self._close()
                    return
                self._writing_since = time.monotonic()
                try:
                    self._write(message)
                    wrote = True
                except Exception as exc:  # a full disk, a closed stream: this line is lost, not the writer
                    self._drop(f"failed ({exc})")
                    wrote = False
                finally:
                    self._writing_since = None
                with self._lock:
                    unsaid, self._unsaid = self._unsaid, 0
                    why = self._why
                if unsaid and not said:  # once per episode: the note itself may be lost the same way
                    logger.warning("{} log line(s) dropped: {} {}", unsaid, self.name, why)
                    said = True
                elif wrote and not unsaid:  # the episode is over
                    said = False
            finally:
                self._queue.task_done()


def drain(timeout: float) -> None:
    """Give every sink of this process that is not blocked up to ``timeout`` s in all to write what
    is queued: for an exit that must not wait for a log line (the watchdog's), so that its last
    lines still reach the files, and a blocked stderr costs it nothing."""
    deadline = time.monotonic() + timeout
    for sink in list(_sinks):
        if not sink.blocked:
            sink.drain(max(0.0, deadline - time.monotonic()))
