"""What both generators start from: the tasks of some task files, loaded and refused exactly as the
launcher loads and refuses them, and the file each task came from."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Sequence

from ..observe.logpvs import KINDS, LEVEL_PV
from ..registry import ConfigError, Task
from ..service.launcher import fail, load

__all__ = ["HEARTBEAT_AGE", "INFO_LOG", "LOG_LEVEL", "LOG_PVS", "by_file", "load_or_fail", "shown_path", "source_file"]

#: The log PVs of ``db/bridge-logs.db``, most urgent first, and the level filter beside them.
LOG_PVS = tuple(reversed(KINDS))
LOG_LEVEL = LEVEL_PV
INFO_LOG = KINDS[0]
#: Standard records of ``db/bridge.db`` that are not handshake fields of a task's interface.
HEARTBEAT_AGE = "HeartbeatAge"


def load_or_fail(paths: Sequence[str], only: Sequence[str] = ()) -> List[Task]:
    """The tasks under ``paths``; a bad file ends the command with exit 2, every problem listed."""
    try:
        return load(paths, only=only)
    except ConfigError as exc:
        fail(str(exc))


def source_file(task: Task) -> Path:
    """The task file that registered ``task`` (its source is ``file:line``)."""
    return Path(re.sub(r":\d+$", "", task.source))


def by_file(tasks: Sequence[Task]) -> Dict[Path, List[Task]]:
    """Tasks grouped by their file, files in path order, tasks in the order the file declares them."""
    groups: Dict[Path, List[Task]] = {}
    for task in tasks:
        groups.setdefault(source_file(task), []).append(task)
    return dict(sorted(groups.items()))


def shown_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it: what a person typed."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
