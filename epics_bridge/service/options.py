"""argparse ``type=`` checks for the commands' options.

argparse runs them while it parses, before a task file is imported or a process started, so a bad
value ends every command (``--list`` included) with exit status 2 and a message naming the option,
instead of a negative grace period in the log or a level name loguru refuses an hour later.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Union

from loguru import logger

from ..observe.logs import LEVELS

__all__ = ["seconds", "positive_seconds", "log_level", "port", "rotation", "retention", "retention_value"]


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def seconds(text: str) -> float:
    """A finite number of seconds, 0 or more."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: seconds must be 0 or more")
    return value


def positive_seconds(text: str) -> float:
    """A finite number of seconds above 0."""
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: seconds must be more than 0")
    return value


def log_level(text: str) -> str:
    """One of the levels a user may choose, in any case."""
    if text.upper() not in LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r}: choose one of {', '.join(LEVELS)}")
    return text


def port(text: str) -> int:
    """A TCP port, 0..65535 (0: any free one)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: a port is 0..65535")
    return value


def retention_value(text: str) -> Union[str, int]:
    """What loguru takes for ``--log-retention``: a count of files (digits) or an age ('14 days')."""
    return int(text) if text.isdigit() else text


def _loguru_parses(option: str, convert: Callable[[str], object] = str) -> Callable[[str], str]:
    """A check that loguru itself parses the value: it does when a file sink is added. With
    ``delay`` and a filter that takes nothing, no file is ever opened."""

    def check(text: str) -> str:
        probe = Path(tempfile.gettempdir()) / "epics-bridge-option-check.log"
        try:
            setting: Dict[str, Any] = {option: convert(text)}
            logger.remove(logger.add(probe, delay=True, filter=lambda record: False, **setting))
        except (ValueError, TypeError) as exc:
            raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
        return text

    check.__name__ = option
    return check


#: ``--log-rotation``: a size ('10 MB'), an interval ('1 day') or a time of day ('00:00').
rotation = _loguru_parses("rotation")
#: ``--log-retention``: rotated files to keep ('5') or an age ('14 days').
retention = _loguru_parses("retention", retention_value)
