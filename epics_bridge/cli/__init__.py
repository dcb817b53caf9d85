"""``epics-bridge`` / ``python -m epics_bridge``: the commands.

``epics-bridge PATH...`` runs task files (:mod:`.run`); the other commands (``check``, ``new``, ``db``,
``display``, ``alarms``) are imported only when used. Task files register into the default
registry (``from epics_bridge import bridge``), which the commands hand down to the loader.
"""

from __future__ import annotations

import importlib
import sys
from typing import List, NoReturn, Optional, Sequence

from ..app import bridge
from ..service.loading import load
from ..task import ConfigError, Task
from .common import COMMANDS, fail

__all__ = ["COMMANDS", "fail", "load_or_fail", "main"]


def load_or_fail(paths: Sequence[str], only: Sequence[str] = ()) -> List[Task]:
    """The tasks of the task files under ``paths``, loaded into the default registry as the
    launcher loads them; a bad file ends the command with exit 2, every problem listed."""
    try:
        return load(paths, bridge, only=only)
    except ConfigError as exc:
        fail(str(exc))


def main(argv: Optional[Sequence[str]] = None) -> NoReturn:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in COMMANDS:
        importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])
    # here, not at the top: every worker process imports this package (for :mod:`.worker`), and
    # none needs the launcher, the embedded IOC or argparse
    from . import run

    run.main(argv, bridge)
