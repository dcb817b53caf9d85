"""What both generators start from: the tasks of some task files, loaded and refused exactly as the
launcher loads and refuses them, and the file each task came from."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence

from ..cli import load_or_fail
from ..observe.logpvs import KINDS, LEVEL_PV
from ..task import Task

__all__ = ["HEARTBEAT_AGE", "INFO_LOG", "LOG_LEVEL", "LOG_PVS", "by_file", "load_or_fail", "shown_path"]

#: The log PVs of ``db/bridge-logs.db``, most urgent first, and the level filter beside them.
LOG_PVS = tuple(reversed(KINDS))
LOG_LEVEL = LEVEL_PV
INFO_LOG = KINDS[0]
#: Standard records of ``db/bridge.db`` that are not handshake fields of a task's interface.
HEARTBEAT_AGE = "HeartbeatAge"


def by_file(tasks: Sequence[Task]) -> Dict[Path, List[Task]]:
    """Tasks grouped by their file, files in path order, tasks in the order the file declares them."""
    groups: Dict[Path, List[Task]] = {}
    for task in tasks:
        groups.setdefault(task.source.path, []).append(task)
    return dict(sorted(groups.items()))


def shown_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it: what a person typed."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
