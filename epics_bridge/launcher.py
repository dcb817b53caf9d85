"""``python -m epics_bridge PATH...``: load task files, refuse bad ones before anything starts, run.

Every file is imported and every task validated first; all problems are reported together with
the file, task and field, and the process exits 2 without touching a PV. Only a clean set runs.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import traceback
from pathlib import Path
from typing import List, NoReturn, Optional, Sequence, Tuple

from .registry import ConfigError, Registry, Task, bridge
from .runner import EXIT_CONFIG, EXIT_OK
from .softioc import IOCError

__all__ = ["load", "main"]


def _task_files(paths: Sequence[str]) -> Tuple[List[Path], List[str]]:
    files, errors = [], []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.glob("*.py") if not p.name.startswith("_"))
            if not found:
                errors.append(f"{path}: no task files (*.py not starting with '_') in this folder")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            errors.append(f"{path}: no such file or folder")
    return files, errors


def _import(path: Path, index: int) -> None:
    folder = str(path.resolve().parent)
    if folder not in sys.path:  # so a task file can import its helpers (_common.py) beside it
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(f"epics_bridge_tasks.{path.stem}_{index}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)


def _describe_import_error(path: Path, exc: BaseException) -> str:
    if isinstance(exc, ConfigError):
        return str(exc)
    if isinstance(exc, SyntaxError):
        return f"{exc.filename}:{exc.lineno}: syntax error: {exc.msg}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename).resolve() == path.resolve()]
    where = f"{path}:{frames[-1].lineno}" if frames else str(path)
    return f"{where}: cannot import: {type(exc).__name__}: {exc}"


def load(paths: Sequence[str], registry: Registry = bridge, only: Sequence[str] = ()) -> List[Task]:
    """Import every task file under ``paths``; raise one ConfigError listing every problem."""
    files, errors = _task_files(paths)
    for index, path in enumerate(files):
        try:
            _import(path, index)
        except Exception as exc:
            errors.append(_describe_import_error(path, exc))
    if not errors and not registry.tasks:
        errors.append(f"{', '.join(paths)}: no tasks found (decorate a function with @bridge.task)")
    if not errors and only:
        try:
            return registry.select(only)
        except ConfigError as exc:
            errors.append(str(exc))
    if errors:
        raise ConfigError("\n".join(errors))
    return registry.tasks


def _print_list(tasks: Sequence[Task]) -> None:
    for task in tasks:
        print(f"{task.name}  [{task.mode}]  prefix {task.prefix}  ({task.source})")
        for logical, pv in task.pvs.as_dict.items():
            print(f"    {logical:<16} {pv}")


def check(tasks: Sequence[Task], timeout: float) -> bool:
    """Read every PV of every task at once; print task / PV / ok-or-reason. True if all answered."""
    from .io import BridgeIO

    rows = [(t.name, logical, pv) for t in tasks for logical, pv in t.pvs.as_dict.items()]
    io = BridgeIO(timeout=timeout)
    try:
        failures = io.unreachable([pv for _, _, pv in rows])
    finally:
        io.close()
    width = max(len(name) for name, _, _ in rows)
    for name, logical, pv in rows:
        verdict = f"FAIL {failures[pv]}" if pv in failures else "ok"
        print(f"{name:<{width}}  {logical:<16} {pv:<40} {verdict}")
    bad = len({pv for _, _, pv in rows if pv in failures})
    print(f"{len(rows) - bad}/{len(rows)} PVs reachable" + (f"; {bad} not" if bad else ""))
    return not bad


def _check_main(argv: Sequence[str]) -> NoReturn:
    parser = argparse.ArgumentParser(prog="python -m epics_bridge check",
                                     description="Connect to every PV of every task and report which answer.")
    parser.add_argument("paths", nargs="+", metavar="PATH")
    parser.add_argument("--only", nargs="+", default=[], metavar="NAME")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for all PVs (default 2)")
    args = parser.parse_args(argv)
    try:
        tasks = load(args.paths, only=args.only)
    except ConfigError as exc:
        _fail(str(exc))
    sys.exit(EXIT_OK if check(tasks, args.timeout) else 1)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m epics_bridge",
        description="Run @bridge.task functions as supervised EPICS daemons.",
        epilog="Also: 'python -m epics_bridge check PATH...' connects to every PV of every task and reports.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="task file, or folder of task files")
    parser.add_argument("--only", nargs="+", default=[], metavar="NAME", help="run only these tasks")
    parser.add_argument("--list", action="store_true", help="print the tasks and their PVs, then exit")
    parser.add_argument("--log-dir", default="logs", help="folder for the log files (default: ./logs)")
    parser.add_argument("--no-log-files", action="store_true", help="log to the console only")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    parser.add_argument("--log-rotation", default="10 MB", help="when to start a new log file (default '10 MB')")
    parser.add_argument("--log-retention", default="5", help="rotated files to keep, or an age like '14 days'")
    parser.add_argument("--stop-grace", type=float, default=5.0,
                        help="seconds a running cycle may take to finish on SIGTERM (default 5)")
    parser.add_argument("--ioc", action="store_true",
                        help="start a soft IOC serving the tasks' PVs (db/bridge.db per prefix + each task's db=)")
    return parser


def _retention(value: str):
    return int(value) if value.isdigit() else value


def _fail(message: str) -> NoReturn:
    print(f"epics-bridge: nothing started:\n  {message.replace(chr(10), chr(10) + '  ')}", file=sys.stderr)
    sys.exit(EXIT_CONFIG)


def main(argv: Optional[Sequence[str]] = None) -> NoReturn:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["check"]:
        _check_main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        tasks = load(args.paths, only=args.only)
    except ConfigError as exc:
        _fail(str(exc))
    if args.list:
        _print_list(tasks)
        sys.exit(EXIT_OK)
    sys.exit(_run(args, tasks))


def _run(args: argparse.Namespace, tasks: List[Task]) -> int:
    from .runner import run

    log_dir = None if args.no_log_files else Path(args.log_dir)
    ioc = None
    try:
        if args.ioc:
            from .embedded import how_to_reach, start_embedded_ioc

            ioc = start_embedded_ioc(tasks, output=log_dir / "ioc.log" if log_dir else None)
            print(how_to_reach(ioc, tasks), file=sys.stderr, flush=True)
        return run(tasks, log_dir=log_dir, log_level=args.log_level, log_rotation=args.log_rotation,
                   log_retention=_retention(args.log_retention), stop_grace=args.stop_grace)
    except (ConfigError, IOCError) as exc:
        _fail(str(exc))
    finally:
        if ioc is not None:
            ioc.stop()
