"""Every option of the service, declared once: its name, command-line flag, type and validation,
default, help, and whether worker processes receive it.

As gunicorn declares each setting once and derives the rest, everything else is derived from
:class:`Options`: the launcher's argparse options (and a script's, for ``bridge.run()`` and
``BridgeDaemon.start()``), the keyword arguments of those two, the payload a worker receives, the
log configuration, and the options table of the docs. The same names travel from the command line
to the worker, and one converter per option checks both a command-line string and a Python value,
so a bad value is refused the same way wherever it comes from, before anything starts.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

from loguru import logger

from ..observe.logs import LEVELS, LogConfig
from ..task import ConfigError
from .shard import Shard, parse

__all__ = ["ISOLATIONS", "Options", "add_arguments", "argparse_type", "markdown_table", "positive_seconds"]

#: ``--isolation``: a worker process per task file, per task, or every task in this process.
ISOLATIONS = ("file", "task", "none")
Convert = Callable[[Any], Any]


# -- converters: a command-line string or a Python value in, the option's value out -------------------
def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return number


def seconds(value: Any) -> float:
    """A finite number of seconds, 0 or more."""
    number = _number(value)
    if number < 0:
        raise ValueError(f"{value!r}: seconds must be 0 or more")
    return number


def positive_seconds(value: Any) -> float:
    """A finite number of seconds above 0."""
    number = _number(value)
    if number <= 0:
        raise ValueError(f"{value!r}: seconds must be more than 0")
    return number


def _level(value: Any) -> str:
    level = str(value).upper()
    if level not in LEVELS:
        raise ValueError(f"{value!r}: choose one of {', '.join(LEVELS)}")
    return level


def _port(value: Any) -> Optional[int]:
    if value is None:
        return None
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a port number") from None
    if isinstance(value, (bool, float)) or not 0 <= port <= 65535:
        raise ValueError(f"{value!r}: a port is 0..65535")
    return port


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{value!r} is not a non-empty string")
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{value!r} is not True or False")
    return value


def _folder(value: Any) -> Optional[Path]:
    if value is None:
        return None
    if not isinstance(value, (str, Path)) or not str(value):
        raise ValueError(f"{value!r} is not a folder")
    return Path(value)


def _names(value: Any) -> Tuple[str, ...]:
    names = (value,) if isinstance(value, str) else tuple(value)
    if not all(isinstance(name, str) and name for name in names):
        raise ValueError(f"{value!r} is not a list of task names")
    return names


def _isolation(value: Any) -> str:
    if value not in ISOLATIONS:
        raise ValueError(f"{value!r}: choose one of {', '.join(ISOLATIONS)}")
    return str(value)


def _shard(value: Any) -> Optional[Shard]:
    if value is None or isinstance(value, Shard):
        return value
    return parse(str(value))


def _loguru_value(option: str, value: Any) -> Union[str, int]:
    """A count (digits) or a text that loguru parses. It parses rotation and retention when a file
    sink is added: let it, with ``delay`` and a filter that takes nothing, so no file is opened."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"{value!r} is neither a number nor a text")
    probe = Path(tempfile.gettempdir()) / "epics-bridge-option-check.log"
    setting: Dict[str, Any] = {option: value}
    try:
        logger.remove(logger.add(probe, delay=True, filter=lambda record: False, **setting))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{value!r}: {exc}") from None
    return value


def _rotation(value: Any) -> Union[str, int]:
    return _loguru_value("rotation", value)


def _retention(value: Any) -> Union[str, int]:
    return _loguru_value("retention", value)


# -- the declaration --------------------------------------------------------------------------------------
def _option(
    default: Any,
    convert: Convert,
    help: str,  # noqa: A002 - argparse's word
    *,
    flag: Optional[str] = None,
    metavar: Optional[str] = None,
    off: Optional[Tuple[str, Any, str]] = None,
    worker: bool = False,
    script_default: Any = None,
    shown_default: Optional[str] = None,
) -> Any:
    """One option. ``flag`` defaults to ``--<name with dashes>``; ``off`` is a second flag that
    sets a given value (``--no-log-files`` sets ``log_dir`` to None) and its help; ``worker``: the
    worker processes receive it; ``script_default``: the default of a script (``bridge.run()``,
    ``BridgeDaemon.start()``) when it differs; ``shown_default``: the default as the docs show it."""
    metadata = dict(
        convert=convert,
        help=help,
        flag=flag,
        metavar=metavar,
        off=off,
        worker=worker,
        script_default=script_default,
        shown_default=shown_default,
    )
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Options:
    """The service's options. Build with :meth:`of` (checks and converts every value), or from the
    command line with :func:`add_arguments` and :meth:`from_namespace`."""

    only: Tuple[str, ...] = _option((), _names, "run only these tasks", metavar="NAME", shown_default="all")
    ioc: bool = _option(
        False,
        _flag,
        "start a soft IOC serving the tasks' PVs (db/bridge.db per prefix + each task's db=)",
        shown_default="off",
    )
    log_dir: Optional[Path] = _option(
        Path("logs"),
        _folder,
        "folder for the log files",
        metavar="DIR",
        off=("--no-log-files", None, "log to the console only (log_dir=None)"),
        worker=True,
    )
    log_level: str = _option("INFO", _level, "DEBUG, INFO, WARNING or ERROR", worker=True)
    log_rotation: Union[str, int] = _option(
        "10 MB",
        _rotation,
        "when to start a new log file: a size, an interval ('1 day') or a time ('00:00')",
        worker=True,
    )
    log_retention: Union[str, int] = _option(
        5, _retention, "rotated files to keep, or an age like '14 days'", worker=True
    )
    p4p_log_level: str = _option("WARNING", _level, "level of p4p's own messages", worker=True)
    log_pvs: bool = _option(
        True,
        _flag,
        "publish log lines to the IOC's log PVs (db/bridge-logs.db)",
        off=("--no-log-pvs", False, "do not publish log lines to the IOC's log PVs (db/bridge-logs.db)"),
        worker=True,
        shown_default="on",
    )
    metrics_port: Optional[int] = _option(
        None,
        _port,
        "serve Prometheus metrics and the /livez, /readyz probes on port N",
        metavar="N",
        shown_default="off",
    )
    metrics_addr: str = _option("127.0.0.1", _text, "address the metrics server listens on", metavar="ADDR")
    stop_grace: float = _option(
        5.0, seconds, "seconds a running cycle may take to finish on SIGTERM", metavar="S", worker=True
    )
    isolation: str = _option(
        "file",
        _isolation,
        "worker processes: one per task file, one per task, or none (every task in this process: a stuck "
        "task then ends them all, with exit status 3)",
        script_default="none",
    )
    reload: bool = _option(
        False,
        _flag,
        "development only: restart a task file's worker when the file (or a helper it imports) is saved; a "
        "save that does not validate is logged and the last good code keeps running. In production, send "
        "SIGHUP (systemctl reload) instead",
        shown_default="off",
    )
    shard: Optional[Shard] = _option(
        None,
        _shard,
        "run only this instance's share of the tasks (I = 0..N-1), chosen by task name; auto/N takes I from "
        "the host name's trailing -<ordinal> (a StatefulSet pod)",
        metavar="I/N",
        shown_default="all",
    )

    def __post_init__(self) -> None:
        if self.reload and self.isolation == "none":
            raise ConfigError("--reload restarts worker processes: use it with --isolation file or task, not none")

    @classmethod
    def of(cls, values: Mapping[str, Any], base: Optional[Options] = None) -> Options:
        """``base`` (default: the declared defaults) with ``values`` by option name, each checked;
        ConfigError naming the option and what is wrong."""
        unknown = sorted(set(values) - set(NAMES))
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(unknown)} (known: {', '.join(NAMES)})")
        converted = {}
        for name, value in values.items():
            try:
                converted[name] = _field(name).metadata["convert"](value)
            except ValueError as exc:
                raise ConfigError(f"option {name} ({_flag_of(_field(name))}): {exc}") from None
        return replace(base or cls(), **converted)

    @classmethod
    def for_script(cls, values: Mapping[str, Any]) -> Options:
        """The options of a script: its own defaults (``isolation="none"``), then ``values``."""
        defaults = {f.name: f.metadata["script_default"] for f in fields(cls) if f.metadata["script_default"]}
        return cls.of({**defaults, **values})

    @classmethod
    def from_namespace(cls, namespace: argparse.Namespace) -> Options:
        return cls.of({name: getattr(namespace, name) for name in NAMES})

    def for_worker(self) -> Dict[str, Any]:
        """What a worker receives, as JSON-ready values (read back with :meth:`of`)."""
        out: Dict[str, Any] = {}
        for option in fields(self):
            if option.metadata["worker"]:
                value = getattr(self, option.name)
                out[option.name] = str(value) if isinstance(value, Path) else value
        return out

    def log_config(self, *, process_file: bool = True, task_files: bool = True) -> LogConfig:
        """The log configuration these options ask for; which files a process writes is its own."""
        return LogConfig(
            log_dir=self.log_dir,
            log_level=self.log_level,
            log_rotation=self.log_rotation,
            log_retention=self.log_retention,
            p4p_log_level=self.p4p_log_level,
            process_file=process_file,
            task_files=task_files,
        )


NAMES: Tuple[str, ...] = tuple(option.name for option in fields(Options))


def _field(name: str) -> Any:
    return next(option for option in fields(Options) if option.name == name)


def _flag_of(option: Any) -> str:
    return str(option.metadata["flag"] or "--" + option.name.replace("_", "-"))


def argparse_type(convert: Convert, option: str) -> Callable[[str], Any]:
    """``convert`` as an argparse ``type=``: its ValueError becomes argparse's refusal, with its text."""

    def parse_text(text: str) -> Any:
        try:
            return convert(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse_text.__name__ = option  # argparse names the type in its message
    return parse_text


def add_arguments(parser: argparse.ArgumentParser, defaults: Options) -> None:
    """Add every option to ``parser``, with ``defaults`` as the values of the flags not given."""
    for option in fields(Options):
        meta, flag, default = option.metadata, _flag_of(option), getattr(defaults, option.name)
        shown = f" (default {_shown(option, default)})"
        if isinstance(option.default, bool):
            if not meta["off"]:
                parser.add_argument(flag, dest=option.name, action="store_true", default=default, help=meta["help"])
        elif option.name == "only":
            parser.add_argument(
                flag, dest=option.name, nargs="+", metavar=meta["metavar"], default=default, help=meta["help"]
            )
        elif option.name == "isolation":
            parser.add_argument(flag, dest=option.name, choices=ISOLATIONS, default=default, help=meta["help"] + shown)
        else:
            parser.add_argument(
                flag,
                dest=option.name,
                type=argparse_type(meta["convert"], option.name),
                metavar=meta["metavar"],
                default=default,
                help=meta["help"] + shown,
            )
        if meta["off"]:
            off_flag, off_value, off_help = meta["off"]
            parser.add_argument(
                off_flag, dest=option.name, action="store_const", const=off_value, default=default, help=off_help
            )


def _shown(option: Any, value: Any) -> str:
    if option.metadata["shown_default"] is not None and value == option.default:
        return str(option.metadata["shown_default"])
    return str(value)


def markdown_table() -> str:
    """The docs' table of options, derived from the declaration (a test keeps the docs in step)."""
    rows: List[str] = ["| option | keyword | default | |", "|---|---|---|---|"]
    for option in fields(Options):
        meta = option.metadata
        flag = f"`{_flag_of(option)}{' ' + meta['metavar'] if meta['metavar'] else ''}`"
        if meta["off"]:
            flag += f" / `{meta['off'][0]}`"
        default = f"`{_shown(option, option.default)}`"
        if meta["script_default"]:
            default += f" (`{meta['script_default']}` for a script)"
        # A help text may hold '|' (a cell's end in Markdown) or '<' (an HTML tag's start): escaped.
        cell = meta["help"].replace("|", "\\|").replace("<", "&lt;")
        rows.append(f"| {flag} | `{option.name}` | {default} | {cell} |")
    return "\n".join(rows)
