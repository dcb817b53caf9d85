"""What every command shares: the table of commands, and the one way each of them refuses."""

from __future__ import annotations

import sys
from typing import NoReturn

from ..exits import EXIT_CONFIG

__all__ = ["COMMANDS", "fail"]

#: ``epics-bridge COMMAND ...``: the module whose ``main(argv)`` runs it, imported only when used.
#: Anything else on the command line is a path to run.
COMMANDS = {
    "check": "epics_bridge.cli.check",
    "new": "epics_bridge.cli.new",
    "db": "epics_bridge.cli.db",
    "display": "epics_bridge.phoebus.display",
    "alarms": "epics_bridge.phoebus.alarms",
}


def fail(message: str) -> NoReturn:
    """Every command's refusal: the problems, one per line, and exit status 2; nothing was started."""
    print(f"epics-bridge: nothing started:\n  {message.replace(chr(10), chr(10) + '  ')}", file=sys.stderr)
    sys.exit(EXIT_CONFIG)
