"""``python -m epics_bridge PATH...``: load task files, refuse bad ones before anything starts, run.

Every file is imported and every task validated first; all problems are reported together with
the file, task and field, and the process exits 2 without touching a PV. Only a clean set runs.
A script ending in ``bridge.run()`` and a class-API daemon's ``start()`` take the same options
from their own command line (:func:`run_script`).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List, NoReturn, Optional, Sequence

from loguru import logger

from ..exits import EXIT_OK
from ..ioc.softioc import IOCError
from ..observe import metrics_folder
from ..registry import Registry
from ..service.interface import Service, exit_process, serve
from ..service.launch import launch
from ..service.loading import load
from ..service.options import Options, add_arguments
from ..task import ConfigError, Task
from ..version import __version__
from .common import COMMANDS, fail

__all__ = ["main", "run_script", "script_service", "serve_or_fail"]


def _parser(defaults: Options, script: Optional[str] = None) -> argparse.ArgumentParser:
    """The launcher's options; for ``script`` (a file ending in ``bridge.run()``) the same without paths."""
    parser = argparse.ArgumentParser(
        prog=script or "python -m epics_bridge",
        description="Run @bridge.task functions as supervised EPICS daemons.",
        epilog="Other commands: " + ", ".join(f"'epics-bridge {name} --help'" for name in COMMANDS),
    )
    parser.add_argument("--version", action="version", version=f"epics-bridge {__version__}")
    if script is None:
        parser.add_argument("paths", nargs="+", metavar="PATH", help="task file, or folder of task files")
    parser.add_argument("--list", action="store_true", help="print the tasks and their PVs, then exit")
    add_arguments(parser, defaults)
    return parser


def _options(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    namespace = parser.parse_args(list(argv))
    try:
        namespace.options = Options.from_namespace(namespace)
    except ConfigError as exc:
        fail(str(exc))
    return namespace


def main(argv: Sequence[str], registry: Registry) -> NoReturn:
    """Run the task files named in ``argv``, which register into ``registry``."""
    args = _options(_parser(Options()), argv)
    options: Options = args.options
    _before_import(options, args.list)
    sources: Dict[str, str] = {}  # the text of each task file as it validated: what workers will run
    try:
        tasks = load(args.paths, registry, only=options.only, sources=sources, debug=options.log_level == "DEBUG")
    except ConfigError as exc:
        fail(str(exc))
    exit_process(_serve(tasks, options, args.list, registry, args.paths, sources))


def script_service(registry: Registry, argv: Optional[Sequence[str]] = None, **keywords: Any) -> Optional[Service]:
    """``bridge.run()`` and ``BridgeDaemon.start()``: the tasks of ``registry`` with the launcher's
    options from the script's own command line (``python tasks/motor.py --ioc --no-log-files``),
    keyword arguments as their defaults (by the options' names), every task in this process unless
    ``--isolation`` says otherwise. The service, not started; None when ``--list`` printed the tasks."""
    try:
        defaults = Options.for_script(keywords)
    except ConfigError as exc:
        fail(str(exc))
    args = _options(_parser(defaults, script=os.path.basename(sys.argv[0]) or "bridge.run()"), _argv(argv))
    options: Options = args.options
    _before_import(options, args.list)
    try:
        tasks = registry.select(options.only) if options.only else registry.tasks
    except ConfigError as exc:
        fail(str(exc))
    paths = sorted({str(task.source.path) for task in tasks})
    share = _share(tasks, options)
    if args.list:
        _print_list(share, _heading(share, tasks, options))
        return None
    return _launch(share, options, registry, paths, {})


def run_script(registry: Registry, argv: Optional[Sequence[str]] = None, **keywords: Any) -> int:
    """:func:`script_service`, served until SIGTERM/SIGINT; the exit status."""
    service = script_service(registry, argv, **keywords)
    return EXIT_OK if service is None else serve_or_fail(service)


def _argv(argv: Optional[Sequence[str]]) -> List[str]:
    return list(sys.argv[1:] if argv is None else argv)


def _before_import(options: Options, listing: bool) -> None:
    """What must happen before any task file is imported."""
    # Until the service configures its sinks, what task files log at import goes to stderr at the
    # chosen level (loguru's own default would show DEBUG).
    logger.remove()
    logger.add(sys.stderr, level=options.log_level)
    if options.metrics_port is not None and options.isolation != "none" and not listing:
        _multiprocess_metrics()


def _multiprocess_metrics() -> None:
    """Workers' metrics meet in a fresh private folder; prometheus_client reads this variable when
    it is first imported (in any process), so it is set before any task file is imported."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_folder.make()


def _share(tasks: List[Task], options: Options) -> List[Task]:
    return options.shard.select(tasks) if options.shard else tasks


def _heading(share: Sequence[Task], tasks: Sequence[Task], options: Options) -> str:
    if options.shard is None:
        return ""
    names = ", ".join(task.name for task in share) or "none; this instance stays up idle, ready"
    return f"shard {options.shard}: {len(share)} of {len(tasks)} task(s): {names}"


def _print_list(tasks: Sequence[Task], heading: str) -> None:
    if heading:
        print(heading)
    for task in tasks:
        print(f"{task.name}  [{task.mode}]  prefix {task.prefix}  ({task.source})")
        for logical, pv in task.pvs.as_dict.items():
            print(f"    {logical:<16} {pv}")


def _serve(
    tasks: List[Task],
    options: Options,
    listing: bool,
    registry: Registry,
    paths: Sequence[str],
    sources: Dict[str, str],
) -> int:
    share = _share(tasks, options)
    heading = _heading(share, tasks, options)
    if listing:
        _print_list(share, heading)
        return EXIT_OK
    service = _launch(share, options, registry, paths, sources)
    if heading:
        logger.info(heading)
    return serve_or_fail(service)


def _launch(
    tasks: List[Task], options: Options, registry: Registry, paths: Sequence[str], sources: Dict[str, str]
) -> Service:
    """Refuse bad options before anything starts (the embedded IOC's ports included)."""
    if options.shard is not None and not tasks:
        options = Options.of({"isolation": "file"}, base=options)  # an idle supervisor: probes and signals answered
    try:
        return launch(tasks, options, registry=registry, paths=paths, sources=sources)
    except (ConfigError, IOCError) as exc:
        fail(str(exc))


def serve_or_fail(service: Service) -> int:
    """Serve ``service``; a refusal at start (the embedded IOC cannot start, say) exits 2."""
    try:
        return serve(service)
    except (ConfigError, IOCError) as exc:
        fail(str(exc))
