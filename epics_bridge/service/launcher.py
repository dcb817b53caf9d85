"""``python -m epics_bridge PATH...``: load task files, refuse bad ones before anything starts, run.

Every file is imported and every task validated first; all problems are reported together with
the file, task and field, and the process exits 2 without touching a PV. Only a clean set runs.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import os
import shutil
import sys
import tempfile
import traceback
import types
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, NoReturn, Optional, Sequence, Tuple

from loguru import logger

from .. import __version__
from ..engine.exits import EXIT_CONFIG, EXIT_OK
from ..ioc.softioc import IOCError
from ..registry import ConfigError, Registry, Task, bridge
from . import options
from .options import retention_value as _retention
from .shard import Shard, parse

__all__ = ["load", "main", "fail", "COMMANDS", "ISOLATIONS"]

#: ``--isolation``: a worker process per task file, per task, or every task in this process.
ISOLATIONS = ("file", "task", "none")

#: ``epics-bridge COMMAND ...``: module (relative to this package) whose ``main(argv)`` runs it,
#: imported only when that command is used. Anything else is a path to run.
COMMANDS = {
    "check": ".check",
    "display": "..phoebus.display",
    "alarms": "..phoebus.alarms",
    "new": ".scaffold",
}


def _task_files(paths: Sequence[str]) -> Tuple[List[Path], List[str]]:
    files, errors = [], []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.glob("*.py") if not p.name.startswith("_"))
            if not found:
                errors.append(f"{path}: no task files (*.py not starting with '_') in this folder")
            files += found
        elif path.is_file() and path.suffix != ".py":
            errors.append(
                f"{path}: not a task file: give Python files (*.py) or folders of them"
                + (" (a database is loaded by its task's db= argument)" if path.suffix == ".db" else "")
            )
        elif path.is_file():
            files.append(path)
        else:
            errors.append(f"{path}: no such file or folder")
    return files, errors


def _import(path: Path, index: int, sources: Dict[str, str]) -> None:
    """Run a task file as a module. Its text comes from ``sources`` when given there (the last good
    version a reload keeps running), else from disk, and is then recorded in ``sources``."""
    folder = str(path.resolve().parent)
    if folder not in sys.path:  # so a task file can import its helpers (_common.py) beside it
        sys.path.insert(0, folder)
    filename = os.path.abspath(path)
    if filename not in sources:
        sources[filename] = path.read_text(encoding="utf-8")
    module = types.ModuleType(f"epics_bridge_tasks.{path.stem}_{index}")
    module.__file__ = filename
    sys.modules[module.__name__] = module
    exec(compile(sources[filename], filename, "exec"), module.__dict__)


def _describe_import_error(path: Path, exc: BaseException) -> str:
    if isinstance(exc, ConfigError):
        return str(exc)
    if isinstance(exc, SyntaxError):
        return f"{exc.filename}:{exc.lineno}: syntax error: {exc.msg}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename).resolve() == path.resolve()]
    where = f"{path}:{frames[-1].lineno}" if frames else str(path)
    return f"{where}: cannot import: {type(exc).__name__}: {exc}"


def load(paths: Sequence[str], only: Sequence[str] = (), sources: Optional[Dict[str, str]] = None) -> List[Task]:
    """Import every task file under ``paths``; return the tasks they registered (task files use the
    default registry, ``from epics_bridge import bridge``). One ConfigError lists every problem.

    ``sources`` (absolute path -> text): files to import from that text rather than from disk; every
    file read from disk is added to it, so the caller holds exactly the code that validated."""
    known = {task.name for task in bridge.tasks}
    files, errors = _task_files(paths)
    sources = {} if sources is None else sources
    for index, path in enumerate(files):
        try:
            _import(path, index, sources)
        except Exception as exc:
            errors.append(_describe_import_error(path, exc))
    loaded = Registry(t for t in bridge.tasks if t.name not in known)
    if not errors and not loaded.tasks:
        errors.append(f"{', '.join(map(str, paths))}: no tasks found (decorate a function with @bridge.task)")
    if not errors and only:
        try:
            return loaded.select(only)
        except ConfigError as exc:
            errors.append(str(exc))
    if errors:
        raise ConfigError("\n".join(errors))
    return loaded.tasks


def _share(shard: Shard, share: Sequence[Task], tasks: Sequence[Task]) -> str:
    names = ", ".join(task.name for task in share) or "none; this instance stays up idle, ready"
    return f"shard {shard}: {len(share)} of {len(tasks)} task(s): {names}"


def _print_list(tasks: Sequence[Task], heading: str = "") -> None:
    if heading:
        print(heading)
    for task in tasks:
        print(f"{task.name}  [{task.mode}]  prefix {task.prefix}  ({task.source})")
        for logical, pv in task.pvs.as_dict.items():
            print(f"    {logical:<16} {pv}")


def _parser(script: Optional[str] = None) -> argparse.ArgumentParser:
    """The launcher's options; for ``script`` (a file ending in ``bridge.run()``) the same without paths."""
    parser = argparse.ArgumentParser(
        prog=script or "python -m epics_bridge",
        description="Run @bridge.task functions as supervised EPICS daemons.",
        epilog="Other commands: " + ", ".join(f"'epics-bridge {name} --help'" for name in COMMANDS),
    )
    parser.add_argument("--version", action="version", version=f"epics-bridge {__version__}")
    if script is None:
        parser.add_argument("paths", nargs="+", metavar="PATH", help="task file, or folder of task files")
    parser.add_argument("--only", nargs="+", default=[], metavar="NAME", help="run only these tasks")
    parser.add_argument("--list", action="store_true", help="print the tasks and their PVs, then exit")
    parser.add_argument("--log-dir", default="logs", help="folder for the log files (default: ./logs)")
    parser.add_argument("--no-log-files", action="store_true", help="log to the console only")
    parser.add_argument(
        "--log-level", default="INFO", type=options.log_level, help="DEBUG, INFO, WARNING or ERROR (default INFO)"
    )
    parser.add_argument(
        "--log-rotation",
        default="10 MB",
        type=options.rotation,
        help="when to start a new log file: a size, an interval or a time (default '10 MB')",
    )
    parser.add_argument(
        "--log-retention", default="5", type=options.retention, help="rotated files to keep, or an age like '14 days'"
    )
    parser.add_argument(
        "--p4p-log-level",
        default="WARNING",
        type=options.log_level,
        help="level of p4p's own messages (default WARNING)",
    )
    parser.add_argument(
        "--no-log-pvs", action="store_true", help="do not publish log lines to the IOC's log PVs (db/bridge-logs.db)"
    )
    parser.add_argument(
        "--metrics-port", type=options.port, metavar="N", help="serve Prometheus metrics on port N (default: off)"
    )
    parser.add_argument(
        "--metrics-addr",
        default="127.0.0.1",
        metavar="ADDR",
        help="address the metrics server listens on (default 127.0.0.1)",
    )
    parser.add_argument(
        "--stop-grace",
        type=options.seconds,
        default=5.0,
        help="seconds a running cycle may take to finish on SIGTERM (default 5)",
    )
    parser.add_argument(
        "--shard",
        type=_shard,
        metavar="I/N",
        help="run only this instance's share of the tasks (I = 0..N-1), chosen by task name; "
        "auto/N takes I from the host name's trailing -<ordinal> (a StatefulSet pod)",
    )
    parser.add_argument(
        "--ioc",
        action="store_true",
        help="start a soft IOC serving the tasks' PVs (db/bridge.db per prefix + each task's db=)",
    )
    parser.add_argument(
        "--reload",
        action="store_true",
        help="development only: restart a task file's worker when the file (or a helper it "
        "imports) is saved; a save that does not validate is logged and the last good "
        "code keeps running. In production, send SIGHUP (systemctl reload) instead",
    )
    parser.add_argument(
        "--isolation",
        choices=ISOLATIONS,
        default="file",
        help="worker processes: one per task file (default), one per task, or none (every task "
        "in this process: a stuck task then ends them all, with exit status 3)",
    )
    return parser


def _shard(text: str) -> Shard:
    try:
        return parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def fail(message: str) -> NoReturn:
    """Every command's refusal: the problems, one per line, and exit status 2; nothing was started."""
    print(f"epics-bridge: nothing started:\n  {message.replace(chr(10), chr(10) + '  ')}", file=sys.stderr)
    sys.exit(EXIT_CONFIG)


def main(argv: Optional[Sequence[str]] = None) -> NoReturn:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in COMMANDS:
        importlib.import_module(COMMANDS[argv[0]], __package__).main(argv[1:])
    args = _parser().parse_args(argv)
    _prepare(args)
    sources: Dict[str, str] = {}  # the text of each task file as validated: what workers will run
    try:
        tasks = load(args.paths, only=args.only, sources=sources)
    except ConfigError as exc:
        fail(str(exc))
    sys.exit(_serve(args, tasks, sources))


def run_script(
    tasks: Sequence[Task],
    argv: Optional[Sequence[str]] = None,
    *,
    on_runner: Optional[Callable[[Any], None]] = None,
    **defaults: Any,
) -> int:
    """``bridge.run()`` and ``BridgeDaemon.start()``: the launcher's options from the script's own
    command line (``python tasks/motor.py --ioc --no-log-files``), keyword arguments as their
    defaults, and every task in this process unless ``--isolation`` says otherwise. Returns the exit
    status; ``on_runner`` receives what runs the tasks (to stop it from another thread)."""
    parser = _parser(script=os.path.basename(sys.argv[0]) or "bridge.run()")
    try:
        parser.set_defaults(**{"isolation": "none", **_keyword_defaults(defaults)})
    except ConfigError as exc:
        fail(str(exc))
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    args.paths = sorted({task.source.rsplit(":", 1)[0] for task in tasks})
    args.on_runner = on_runner
    _prepare(args)
    if args.only:
        try:
            tasks = Registry(tasks).select(args.only)
        except ConfigError as exc:
            fail(str(exc))
    return _serve(args, list(tasks), {})


def _keyword_defaults(keywords: Mapping[str, Any]) -> Dict[str, Any]:
    """``run(log_dir=None, log_pvs=False, ...)`` as the parser's defaults (the command line wins)."""
    keywords = dict(keywords)
    defaults: Dict[str, Any] = {}
    if "log_dir" in keywords:
        log_dir = keywords.pop("log_dir")
        defaults.update(no_log_files=True) if log_dir is None else defaults.update(log_dir=str(log_dir))
    if "log_pvs" in keywords:
        defaults["no_log_pvs"] = not keywords.pop("log_pvs")
    unknown = sorted(set(keywords) - set(_RUN_KEYWORDS))
    if unknown:
        raise ConfigError(
            f"run(): unknown option(s) {', '.join(unknown)} (known: log_dir, log_pvs, {', '.join(_RUN_KEYWORDS)})"
        )
    return {**defaults, **keywords}


#: Keyword arguments of ``bridge.run()`` named as the launcher's options (``--log-level`` ...).
_RUN_KEYWORDS = (
    "log_level",
    "log_rotation",
    "log_retention",
    "p4p_log_level",
    "metrics_port",
    "metrics_addr",
    "stop_grace",
    "isolation",
    "ioc",
    "only",
    "shard",
)


def _prepare(args: argparse.Namespace) -> None:
    """Checks across options, and what must happen before any task file is imported."""
    if args.reload and args.isolation == "none":
        fail("--reload restarts worker processes: use it with --isolation file or task, not none")
    if args.metrics_port is not None and args.isolation != "none" and not args.list:
        _multiprocess_metrics()


def _serve(args: argparse.Namespace, tasks: List[Task], sources: Dict[str, str]) -> int:
    share = args.shard.select(tasks) if args.shard else tasks
    heading = _share(args.shard, share, tasks) if args.shard else ""
    if args.list:
        _print_list(share, heading)
        return EXIT_OK
    if args.shard and not share:
        args.isolation = "file"  # an idle supervisor: no worker to run, probes and signals answered
    return _run(args, share, heading, sources)


def _multiprocess_metrics() -> None:
    """Workers' metrics meet in a fresh private folder; prometheus_client reads this variable when
    it is first imported (in any process), so it is set before any task file is imported."""
    folder = tempfile.mkdtemp(prefix="epics-bridge-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    atexit.register(shutil.rmtree, folder, ignore_errors=True)


def _run(
    args: argparse.Namespace, tasks: List[Task], heading: str = "", sources: Optional[Dict[str, str]] = None
) -> int:
    """Refuse bad options before anything starts (the embedded IOC included), then run."""
    from ..ioc.embedded import Announce, embedded_ioc, start

    log_dir = None if args.no_log_files else Path(args.log_dir)
    options = dict(
        log_dir=log_dir,
        log_level=args.log_level,
        log_rotation=args.log_rotation,
        log_retention=_retention(args.log_retention),
        p4p_log_level=args.p4p_log_level,
        log_pvs=not args.no_log_pvs,
        metrics_port=args.metrics_port,
        metrics_addr=args.metrics_addr,
        stop_grace=args.stop_grace,
    )
    ioc = None
    try:
        # in a folder of its own: a task may be named "ioc"
        ioc_log = log_dir / "embedded-ioc" / "softioc.log" if log_dir else None
        ioc = embedded_ioc(tasks, output=ioc_log) if args.ioc else None
        if args.isolation == "none":
            from ..engine.runner import prepare  # only here: a supervisor never loads p4p

            runner: Any = prepare(tasks, hooks=[Announce(ioc)] if ioc else [], **options)
        else:
            runner = _supervisor(args, tasks, options, ioc, sources if sources is not None else {})
        if heading:
            logger.info(heading)
        if getattr(args, "on_runner", None) is not None:
            args.on_runner(runner)
        if ioc is not None:
            start(ioc)
        return runner.run()
    except (ConfigError, IOCError) as exc:
        fail(str(exc))
    finally:
        if ioc is not None:
            ioc.stop()


def _supervisor(
    args: argparse.Namespace, tasks: List[Task], options: Dict[str, Any], ioc: Any, sources: Dict[str, str]
) -> Any:
    """The worker processes' supervisor, able to re-read the task files on SIGHUP (and on every save
    with ``--reload``), restarting the embedded IOC when the databases the tasks need changed.
    ``sources`` holds the text of every task file as it last validated: workers run that text, so a
    broken save never reaches a worker, even one that restarts before the file is fixed."""
    from ..ioc.embedded import databases, how_to_reach
    from .supervisor import supervise

    def reload_tasks() -> List[Task]:
        saved = bridge.tasks
        bridge.clear()
        fresh_sources: Dict[str, str] = {}
        try:
            fresh = load(args.paths, only=args.only, sources=fresh_sources)
        except ConfigError:
            bridge.clear()
            for task in saved:
                bridge.add(task)
            raise
        sources.clear()
        sources.update(fresh_sources)
        return args.shard.select(fresh) if args.shard else fresh

    def announce() -> None:
        if ioc is not None:
            print(how_to_reach(ioc, tasks), file=sys.stderr, flush=True)

    def reloaded(fresh: List[Task]) -> None:
        wanted = databases(fresh)
        if ioc is not None and wanted != ioc.databases:
            logger.info("reload: the tasks need other databases; restarting the embedded IOC on the same ports")
            ioc.databases = wanted
            ioc.restart()

    watch = sorted({p.resolve() if p.is_dir() else p.resolve().parent for p in map(Path, args.paths)})
    return supervise(
        tasks,
        args.isolation,
        options,
        sources,
        on_ready=announce,
        reload_tasks=reload_tasks,
        on_reload=reloaded,
        watch=watch if args.reload else (),
    )
