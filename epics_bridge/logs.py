"""Logging, configured once per process with loguru: the console, one rotating file per task, and a
process-wide file for start-up, shutdown and the watchdog.

Task code logs through ``t.log`` (bound to its task); framework lines about a task are bound the
same way, so a task's file tells its whole story. Lines bound to no task go to the process file.
"""
from __future__ import annotations

import logging
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Union

from loguru import logger

from .registry import ConfigError, Task

__all__ = ["LogConfig", "configure"]

FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <8} | {extra[task]} | {message}"
NO_TASK = "-"
PROCESS_LOG = "epics-bridge.log"


@dataclass
class LogConfig:
    """Where and how much to log. ``directory=None`` logs to the console only."""

    directory: Optional[Path] = Path("logs")
    level: str = "INFO"
    rotation: Union[str, int] = "10 MB"
    retention: Union[str, int] = 5
    console: bool = True
    #: Level for p4p's own (stdlib logging) messages.
    p4p_level: str = "WARNING"


class _ToLoguru(logging.Handler):
    """Routes stdlib logging (p4p uses it) into loguru."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: Union[str, int] = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(depth=6, exception=record.exc_info).log(level, "{}: {}", record.name, record.getMessage())


def _only(task_name: str):
    return lambda record: record["extra"].get("task") == task_name


def _untasked(record) -> bool:
    return record["extra"].get("task", NO_TASK) == NO_TASK


def configure(tasks: Iterable[Task], config: LogConfig) -> None:
    """Replace loguru's handlers; ConfigError if the log directory cannot be written."""
    directory = Path(config.directory) if config.directory is not None else None
    if directory is not None:
        _check_writable(directory)
    logger.remove()
    logger.configure(extra={"task": NO_TASK})
    if config.console:
        logger.add(sys.stderr, level=config.level, format=FORMAT, backtrace=False)
    if directory is not None:
        options = dict(level=config.level, format=FORMAT, rotation=config.rotation,
                       retention=config.retention, encoding="utf-8", backtrace=False)
        logger.add(directory / PROCESS_LOG, filter=_untasked, **options)
        for task in tasks:
            logger.add(directory / f"{task.name}.log", filter=_only(task.name), **options)
    logging.basicConfig(handlers=[_ToLoguru()], level=logging.WARNING, force=True)
    logging.getLogger("p4p").setLevel(config.p4p_level)
    logging.captureWarnings(True)
    warnings.simplefilter("default")


def _check_writable(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".epics-bridge-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"--log-dir {str(directory)!r} is not writable: {exc.strerror or exc}") from None
