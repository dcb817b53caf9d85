"""Logging, configured once per process with loguru: the console, one rotating file per task, and a
process-wide file for start-up, shutdown and the watchdog's exit.

Task code logs through ``t.log`` (bound to its task); framework lines about a task are bound the
same way, so a task's file tells its whole story. A task's loop thread runs inside
``logger.contextualize(task=...)``, so a class-API daemon or a helper module that logs with the
plain ``loguru.logger`` (or a failed ``pvget``) there is credited to that task too. Lines about no
task go to the process file.

No thread waits for a sink: the console and the files are written by writer threads, through
bounded queues that drop (and count) rather than block (:mod:`epics_bridge.sinks`). Whatever a line
holds, it is written: control characters and lone surrogates (undecodable bytes) are shown as
escapes (``\\x00``, ``\\udcff``), so a task's strange string is data in its file, never a lost line.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Set, Union

from loguru import logger

from ..sinks import QueuedSink
from ..task import ConfigError, Task

if TYPE_CHECKING:
    from loguru import Record

__all__ = ["LogConfig", "configure", "LEVELS", "NO_TASK", "PROCESS_LOG", "task_log", "visible"]

FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <8} | {extra[task]} | {message}"
#: ``extra["task"]`` of a line about no task in particular.
NO_TASK = "-"
PROCESS_LOG = "epics-bridge.log"
#: The levels a user may choose (CLI, keyword arguments and the LogLevel PV).
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass(frozen=True)
class LogConfig:
    """Where and how much to log: the log options of :class:`~epics_bridge.service.options.Options`
    (validated and defaulted there), and which files this process writes."""

    #: None: the console only.
    log_dir: Optional[Path]
    log_level: str
    #: When a file starts anew: a size ("10 MB"), an interval ("1 day") or a time ("00:00").
    log_rotation: Union[str, int]
    #: How many rotated files to keep (an int), or for how long ("14 days").
    log_retention: Union[str, int]
    #: Level for p4p's own (stdlib logging) messages.
    p4p_log_level: str
    #: Lines bound to no task go to PROCESS_LOG too; off in worker processes, where only the
    #: supervisor writes that file (two processes must not rotate one file).
    process_file: bool = True
    #: A file per task; off in the supervisor, whose workers write them.
    task_files: bool = True
    console: bool = True


def task_log(directory: Union[str, Path], task_name: str) -> Path:
    """The file a task's lines go to."""
    return Path(directory) / f"{task_name}.log"


class _ToLoguru(logging.Handler):
    """Routes stdlib logging (p4p uses it) into loguru, attributed to the caller of ``logging``."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: Union[str, int] = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        frame: Optional[FrameType] = sys._getframe(1)
        depth = 1  # past this method and logging's own frames
        while frame is not None and frame.f_code.co_filename == logging.__file__:
            frame, depth = frame.f_back, depth + 1
        logger.opt(depth=depth, exception=record.exc_info).log(level, "{}: {}", record.name, record.getMessage())


#: What :func:`visible` escapes: C0 controls but tab and newline, DEL, and lone surrogates.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str) -> str:
    """``text`` with what a file, a terminal or a PV cannot show as it is (a NUL ends a PV's text, a
    lone surrogate cannot be encoded) written as its Python escape: ``\\x00``, ``\\udcff``."""
    return _UNSAFE.sub(_escape, text) if _UNSAFE.search(text) else text


def _escape_message(record: Record) -> None:
    record["message"] = visible(record["message"])


def _fd_writer(stream: Any) -> Callable[[str], None]:
    """Writes to the file descriptor under ``stream``, past its buffer: a writer thread blocked in
    a write must not hold the buffer's lock, which the interpreter takes at exit to flush it."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # a stream without one (a test's capture)

        def write_stream(text: str) -> None:
            stream.write(text)
            stream.flush()

        return write_stream

    def write(text: str) -> None:
        data = memoryview(text.encode("utf-8", errors="backslashreplace"))
        while data:
            data = data[os.write(fd, data) :]

    return write


class _Files:
    """Files written by a logger of their own: loguru's file handling (rotation, retention), fed
    the lines the main logger formatted, on the files' writer thread."""

    def __init__(self, file_options: Dict[str, Any]) -> None:
        self._files = copy.deepcopy(logger)  # made right after logger.remove(): no handlers to copy
        self._options = dict(file_options, format="{message}", level=0, catch=False, errors="backslashreplace")

    def add(self, path: Path, select: Callable[[Record], bool]) -> None:
        self._files.add(path, filter=select, **self._options)

    def write(self, message: str) -> None:
        record = message.record  # type: ignore[attr-defined]
        self._files.bind(task=record["extra"]["task"]).opt(raw=True).log(record["level"].no, message)

    def close(self) -> None:
        self._files.remove()


def _only(task_name: str) -> Callable[[Record], bool]:
    return lambda record: record["extra"]["task"] == task_name


def _untasked(record: Record) -> bool:
    return bool(record["extra"]["task"] == NO_TASK)


def configure(tasks: Iterable[Task], config: LogConfig) -> None:
    """Replace loguru's handlers. What needs the system (a writable folder, file names that cannot
    collide) is checked before anything changes, so a problem raises ConfigError and leaves the
    current logging as it was."""
    tasks = list(tasks)
    options: Dict[str, Any] = dict(level=config.log_level, format=FORMAT, backtrace=False, diagnose=False)
    file_options = dict(options, rotation=config.log_rotation, retention=config.log_retention, encoding="utf-8")
    directory = config.log_dir
    if directory is not None:
        _check_writable(directory)
        _check_names(tasks)
    logger.remove()
    logger.configure(extra={"task": NO_TASK}, patcher=_escape_message)
    files = _Files(file_options)  # before any handler is added: a copy of the bare logger
    if config.console:
        logger.add(QueuedSink("stderr", _fd_writer(sys.stderr)), colorize=sys.stderr.isatty(), **options)
    if directory is not None:
        owners: Set[str] = set()
        if config.process_file:
            files.add(directory / PROCESS_LOG, _untasked)
            owners.add(NO_TASK)
        for task in tasks if config.task_files else ():
            files.add(task_log(directory, task.name), _only(task.name))
            owners.add(task.name)
        if owners:
            logger.add(
                QueuedSink("the log files", files.write, files.close),
                filter=lambda record: record["extra"]["task"] in owners,
                **options,
            )
        logger.info(
            "logging at {} to {}/ (a file per task and {}; rotation {}, retention {})",
            config.log_level,
            directory,
            PROCESS_LOG,
            config.log_rotation,
            config.log_retention,
        )
    logging.basicConfig(handlers=[_ToLoguru()], level=logging.WARNING, force=True)
    logging.getLogger("p4p").setLevel(config.p4p_log_level)
    logging.captureWarnings(True)


def _check_writable(directory: Path) -> None:
    """A probe file of this process's own: the supervisor and every worker check the same directory
    at once, and a shared probe name let one process's unlink fail another's start."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise ConfigError(f"--log-dir {str(directory)!r} is not writable: {exc.strerror or exc}") from None


def _check_names(tasks: List[Task]) -> None:
    """Refuse log files that collide, also through retention: it deletes old ``a.*.log`` files of
    ``a.log``, which would include the file of a task named ``a.b``."""
    names = {t.name for t in tasks}
    process = Path(PROCESS_LOG).stem
    for name in sorted(names):
        parts = name.split(".")
        stems = [".".join(parts[:n]) for n in range(1, len(parts) + 1)]
        owner = (
            "the process log"
            if process in stems
            else next((f"task '{stem}'" for stem in stems[:-1] if stem in names), None)
        )
        if owner:
            raise ConfigError(
                f"task '{name}': its log file {name}.log would collide with the files of "
                f"{owner} (X.log rotates to X.*.log, and retention deletes old X.*.log); "
                "rename the task"
            )
