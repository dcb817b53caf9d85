"""Memory housekeeping of a process that runs tasks: few malloc arenas, start-up's garbage back to the system.

Starting hundreds of tasks is a burst (handshake surveys, summaries in the log files and log PVs,
a p4p operation per PV) that runs on many threads at once. glibc keeps what those threads free in
their own malloc arenas, so a worker with 100 tasks stays ~13 MB larger than it needs to be.
As soon as every task serves, :func:`freeze` moves what exists then (modules, tasks, loops: nearly
every object the process will ever have) out of the collector's generations, so later collections
no longer walk them while every task waits for the GIL (before it, a full collection of a
thousand tasks' objects held the GIL 30-150 ms, and every pulse due meanwhile was that late).
Once the burst is over, :func:`tidy` does it again for what start-up's last lines left, and hands
the free pages back with ``malloc_trim``. It runs again now and then, for what a long run frees.

glibc also gives threads up to eight malloc arenas per core, each holding its own free memory;
with two threads per task nearly all of them get used. :func:`limit_arenas` asks for
:data:`ARENAS` instead (the process's threads mostly wait; a user's ``MALLOC_ARENA_MAX`` wins).
"""

from __future__ import annotations

import ctypes
import gc
import os
import time
from typing import Callable, Optional

__all__ = ["freeze", "limit_arenas", "tidy"]

#: The first tidy-up comes this many seconds after every task serves its prefix (their start-up
#: lines have reached the log PVs by then), or after START_LIMIT s if some never do (IOC down);
#: the others every PERIOD s.
SETTLE = 3.0
START_LIMIT = 60.0
PERIOD = 600.0
ARENAS = 2
_M_ARENA_MAX = -8  # mallopt's parameter number (glibc's malloc.h)


def _glibc(name: str) -> Optional[Callable[..., int]]:
    """A function of the C library this process already has loaded (as worker.py finds ``prctl``);
    glibc only. ctypes releases the GIL while it runs."""
    try:
        function: Callable[..., int] = getattr(ctypes.CDLL(None), name)
        return function
    except (OSError, AttributeError):
        return None


_TRIM = _glibc("malloc_trim")
_MALLOPT = _glibc("mallopt")


def limit_arenas() -> None:
    """Before the tasks' threads start: they then share :data:`ARENAS` malloc arenas."""
    if _MALLOPT is not None and "MALLOC_ARENA_MAX" not in os.environ:
        _MALLOPT(_M_ARENA_MAX, ARENAS)


def freeze() -> None:
    """Take what lives now out of the collector's reach. No collection first: a full one holds the
    GIL ~0.1 s with a thousand tasks, a pause every heartbeat would see; what is not cyclic is still
    freed by its reference count."""
    gc.freeze()


def tidy() -> float:
    """Freeze what lives now and return free pages; the seconds ``malloc_trim`` took, without the GIL."""
    freeze()
    started = time.perf_counter()
    if _TRIM is not None:
        _TRIM(0)
    return time.perf_counter() - started
