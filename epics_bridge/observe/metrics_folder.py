"""Where a supervised service's workers meet with their metrics (prometheus_client's multiprocess
mode): a fresh private folder per launcher, removed when it exits.

A launcher killed outright (SIGKILL: systemd's stop after ``TimeoutStopSec``, the out-of-memory
killer) cannot remove its folder, and a service that systemd restarts after each such kill would
leave one behind every time. So each folder holds a lock its launcher keeps for life, which the
kernel lets go with the process, and every launcher first removes the folders whose lock nobody
holds. A folder with no lock file (made by an older release, or being made right now) is left
alone; so are other users' (private to them, they cannot be opened).
"""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from loguru import logger

__all__ = ["PREFIX", "make", "sweep"]

PREFIX = "epics-bridge-metrics-"
#: The file whose lock says that the folder's launcher is alive.
LOCK = ".launcher"


def make() -> str:
    """A new folder for this launcher's workers, after removing those of launchers that were killed."""
    sweep()
    folder = tempfile.mkdtemp(prefix=PREFIX)
    lock = _hold(folder)
    atexit.register(_remove, folder, lock)
    return folder


def sweep(where: Optional[str] = None) -> int:
    """Remove the folders of launchers that are gone; how many."""
    removed = 0
    for folder in Path(where or tempfile.gettempdir()).glob(PREFIX + "*"):
        try:
            lock = os.open(folder / LOCK, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # its launcher is alive
            continue
        else:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
            logger.debug("removed {}, the metrics folder of a launcher that was killed", folder)
        finally:
            os.close(lock)
    return removed


def _hold(folder: str) -> int:
    """Lock the folder for this process's life. The lock is taken before the file gets its name,
    so a sweep never finds it unlocked."""
    unnamed = os.path.join(folder, LOCK + ".new")
    lock = os.open(unnamed, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    os.rename(unnamed, os.path.join(folder, LOCK))
    return lock


def _remove(folder: str, lock: int) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    os.close(lock)
