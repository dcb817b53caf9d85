"""What runs a set of validated tasks with its options: the in-process runner or the supervisor of
worker processes, with the embedded soft IOC around either, behind one service interface.

Every front end (the launcher, ``bridge.run()``, ``BridgeDaemon.start()``) goes through
:func:`launch`, then :func:`~epics_bridge.service.interface.serve`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from loguru import logger

from ..ioc.embedded import Announce, databases, embedded_ioc, how_to_reach, start
from ..ioc.softioc import SoftIOC
from ..registry import Registry
from ..task import ConfigError, Task
from .interface import Service
from .loading import load
from .options import Options

__all__ = ["launch"]


class _WithIOC:
    """A service with the embedded soft IOC around it: the IOC starts first (clients of this
    process and its workers are pointed at it) and stops last, after every task released its
    prefix."""

    def __init__(self, service: Service, ioc: SoftIOC) -> None:
        self.service, self.ioc = service, ioc

    def start(self) -> None:
        start(self.ioc)
        self.service.start()

    def stop(self) -> None:
        self.service.stop()

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        status = self.service.wait(timeout)
        if status is not None:
            self.ioc.stop()
        return status

    def ready(self) -> bool:
        return self.service.ready()


def launch(
    tasks: List[Task],
    options: Options,
    *,
    registry: Registry,
    paths: Sequence[str],
    sources: Dict[str, str],
) -> Service:
    """The service for ``tasks``, everything that can refuse to start already checked (ConfigError
    or IOCError): logging, the metrics port, the embedded IOC's ports. Not started yet.

    ``registry`` and ``paths``: where a reload re-reads the task files; ``sources``: the text of
    each task file as it validated, which worker processes run."""
    ioc: Optional[SoftIOC] = None
    if options.ioc:
        # in a folder of its own: a task may be named "ioc"
        output = options.log_dir / "embedded-ioc" / "softioc.log" if options.log_dir else None
        ioc = embedded_ioc(tasks, output=output)
    service: Service
    if options.isolation == "none":
        # here, not at the top: a supervisor never loads the engine (p4p and numpy are ~15 MB of it)
        from .inprocess import in_process

        service = in_process(tasks, options, hooks=[Announce(ioc)] if ioc else [])
    else:
        service = _supervisor(tasks, options, ioc, registry, paths, sources)
    return service if ioc is None else _WithIOC(service, ioc)


def _supervisor(
    tasks: List[Task],
    options: Options,
    ioc: Optional[SoftIOC],
    registry: Registry,
    paths: Sequence[str],
    sources: Dict[str, str],
) -> Service:
    """The worker processes' supervisor, able to re-read the task files on SIGHUP (and on every save
    with ``--reload``), restarting the embedded IOC when the databases the tasks need changed.
    ``sources`` holds the text of every task file as it last validated: workers run that text, so a
    broken save never reaches a worker, even one that restarts before the file is fixed."""
    from .supervisor import supervise

    def reload_tasks() -> List[Task]:
        saved = registry.tasks
        registry.clear()
        fresh_sources: Dict[str, str] = {}
        try:
            fresh = load(paths, registry, only=options.only, sources=fresh_sources)
            if ioc is not None:
                databases(fresh)  # refuses here, like a file that does not validate: typed PVs no record fits
        except ConfigError:
            registry.clear()
            for task in saved:
                registry.add(task)
            raise
        sources.clear()
        sources.update(fresh_sources)
        return options.shard.select(fresh) if options.shard else fresh

    def announce() -> None:
        if ioc is not None:
            print(how_to_reach(ioc, tasks), file=sys.stderr, flush=True)

    def reloaded(fresh: List[Task]) -> None:
        wanted = databases(fresh)
        if ioc is not None and wanted != ioc.databases:
            logger.info("reload: the tasks need other databases; restarting the embedded IOC on the same ports")
            ioc.databases = wanted
            ioc.restart()

    watch = sorted({p.resolve() if p.is_dir() else p.resolve().parent for p in map(Path, paths)})
    return supervise(
        tasks,
        options,
        sources,
        on_ready=announce,
        reload_tasks=reload_tasks,
        on_reload=reloaded,
        watch=watch if options.reload else (),
    )
