"""A worker process of the host service: its share of the tasks on the in-process engine.

Not a fork of the supervisor, nor of anything that has imported p4p: importing p4p initialises
EPICS base's threads, and EPICS declares any use of them in a child forked after that undefined
behaviour (it prints "Detected use of epicsThread from child process after fork()"). A worker is
forked from the zygote (:mod:`.zygote`), which holds only what comes before p4p, or else is a
fresh interpreter; either way it imports p4p and its task files itself, so a restarted worker
runs the task file as it is on disk now, which is what reload wants. Inside, nothing differs from
a single process: each task has its loop and heartbeat threads and its own stuck counter, and the
watchdog's exit ends this worker only. It tells the supervisor what it needs to know as JSON lines
on a pipe: that its tasks run, each task's health and readiness, and its last words (which task
stayed stuck, and the line it hangs on) before the watchdog exits.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from ..engine.hooks import Hooks
from ..exits import EXIT_CONFIG
from ..registry import Registry
from ..task import ConfigError, Task
from .loading import load
from .options import Options

__all__ = ["WorkerSpec", "Reporter", "command", "main", "payload", "plan"]

#: How often a worker says it is alive, at most (from its heartbeat threads: proof that they run).
TICK = 2.0
#: While the task files import, how often the worker looks at how many tasks have registered (s).
PROGRESS_EVERY = 1.0
PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
#: Beyond ``--stop-grace``, what a worker's graceful stop may take once its supervisor is gone.
LIFELINE_GRACE = 5.0
#: The module a worker interpreter runs: a front end, since it hands :func:`main` the default
#: registry that the task files register into.
ENTRY = "epics_bridge.cli.worker"


@dataclass(frozen=True)
class WorkerSpec:
    """One worker: a name for people (its file, or its task), and the tasks it runs."""

    name: str
    tasks: Tuple[str, ...]
    files: Tuple[Path, ...]


def plan(tasks: Sequence[Task], isolation: str) -> List[WorkerSpec]:
    """``file``: a worker per task file; ``task``: a worker per task."""
    groups: Dict[str, List[Task]] = {}
    for task in tasks:
        key = task.name if isolation == "task" else task.source.path.name
        groups.setdefault(key, []).append(task)
    return [
        WorkerSpec(name, tuple(t.name for t in group), tuple(dict.fromkeys(t.source.path for t in group)))
        for name, group in groups.items()
    ]


def user_files(tasks: Sequence[Task]) -> List[str]:
    """The files of every module imported from the task files' folders (the task files and their
    helpers): the code this worker runs, so a change to any of them restarts it on reload."""
    folders = {str(t.source.path.resolve().parent) for t in tasks}
    files = {getattr(m, "__file__", None) for m in list(sys.modules.values())}
    return sorted(f for f in files if f and os.path.dirname(os.path.abspath(f)) in folders)


class Reporter(Hooks):
    """Sends the supervisor each change of a task's health or readiness, a tick at most every
    :data:`TICK` s, and the watchdog's reason before it exits. A supervisor that stops reading
    costs dropped messages, never a blocked heartbeat: the pipe is non-blocking."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)
        self._lock = threading.Lock()
        self._health: Dict[str, Optional[str]] = {}
        self._ready: Dict[str, Tuple[bool, Optional[str]]] = {}
        self._last_tick = 0.0

    def send(self, **message: Any) -> None:
        line = (json.dumps(message, default=str) + "\n").encode()
        with self._lock:
            try:
                os.write(self.fd, line)
            except (BlockingIOError, BrokenPipeError):
                pass

    def started(self, tasks: List[Task]) -> None:
        self.send(event="started", tasks=[t.name for t in tasks], files=user_files(tasks))

    def heartbeat(self, task: Task, stuck: int, reason: Optional[str]) -> None:
        now = time.monotonic()
        state = reason if stuck else None
        if self._health.get(task.name, "") != state:
            self._health[task.name] = state
            self.send(event="health", task=task.name, stuck=stuck, reason=state)
        elif now - self._last_tick >= TICK:
            self._last_tick = now
            self.send(event="tick")

    def ready(self, task: Task, ready: bool, reason: Optional[str]) -> None:
        if self._ready.get(task.name) != (ready, reason):
            self._ready[task.name] = (ready, reason)
            self.send(event="ready", task=task.name, ready=ready, reason=reason)

    def fatal(self, task: Task, reason: str) -> None:
        os.set_blocking(self.fd, True)  # the last words must arrive; the process ends right after
        self.send(event="fatal", reason=f"task '{task.name}' stuck: {reason}")


def prctl(option: int, value: object) -> bool:
    """Linux's prctl(2) through the C library this process already has loaded; False where it
    failed or does not exist."""
    try:
        return int(ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _die_with_parent(parent: int) -> None:
    """SIGTERM this worker when the supervisor dies, even by SIGKILL (Linux), so no worker
    outlives it; if it already died before this line, go now."""
    prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
    if os.getppid() != parent:
        sys.exit(0)


def command(lifeline: int) -> List[str]:
    """Without the zygote, a worker is this module run by a fresh interpreter (the zygote runs the
    same module in its forks). It imports what every worker needs, then
    waits for :func:`payload` on its stdin: once a worker has restarted, the supervisor keeps one such
    spare ready, so the next restart does not wait for numpy and p4p to load."""
    return [sys.executable, "-m", ENTRY, str(os.getpid()), str(lifeline)]


def _end_with_supervisor(lifeline: int, grace: float) -> None:
    """The backstop of the parent-death signal: the read end of a pipe whose only write end the
    supervisor holds reads end-of-file once it is gone; a graceful stop that has not ended this
    worker within ``grace`` seconds by then is cut short, so no worker outlives its supervisor."""
    while os.read(lifeline, 1):
        pass
    time.sleep(grace)  # the graceful stop's whole budget, then no more waiting
    os._exit(1)


def _name_process(name: str) -> None:
    """What ``ps -o comm``, ``top`` and ``/proc/PID/comm`` show for this worker (15 bytes at most)."""
    prctl(PR_SET_NAME, name.encode()[:15])


def payload(spec: WorkerSpec, options: Mapping[str, Any], status_fd: int, sources: Mapping[str, str]) -> bytes:
    """What a worker needs: its tasks, the text of their files as last validated, the run options."""
    files = [str(f) for f in spec.files]
    return json.dumps(
        {
            "name": spec.name,
            "tasks": list(spec.tasks),
            "files": files,
            "sources": {f: sources[f] for f in files if f in sources},
            "options": dict(options),
            "status_fd": status_fd,
        },
        default=str,
    ).encode()


@contextmanager
def _progress(registry: Registry, reporter: Reporter) -> Iterator[None]:
    """While the task files import, tell the supervisor whenever more tasks have registered: a large
    file that keeps registering is importing, not silent (``--start-timeout`` counts from the last
    progress); one that stops registering is ended, and the supervisor says how far it got."""
    done = threading.Event()

    def report() -> None:
        seen = len(registry.tasks)
        while not done.wait(PROGRESS_EVERY):
            count = len(registry.tasks)
            if count != seen:
                seen = count
                reporter.send(event="progress", tasks=count)

    thread = threading.Thread(target=report, name="import-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
    reporter.send(event="progress", tasks=len(registry.tasks))  # imported: the setup's time starts now


def main(registry: Registry, argv: Sequence[str]) -> int:
    """A worker (``argv``: the supervisor's pid and the lifeline's fd): import its task files from
    the text it was given, into ``registry``, and run its tasks."""
    _die_with_parent(int(argv[0]))
    import p4p.client.thread  # noqa: F401 - loaded while the spare waits, not when it is needed
    from loguru import logger

    from .inprocess import in_process
    from .interface import serve

    data = sys.stdin.buffer.read()
    if not data:  # a spare that was never needed
        return 0
    payload = json.loads(data)
    options = Options.of(payload["options"])
    grace = options.stop_grace + LIFELINE_GRACE
    threading.Thread(target=_end_with_supervisor, args=(int(argv[1]), grace), name="lifeline", daemon=True).start()
    _name_process(f"eb:{payload['name']}")
    reporter = Reporter(payload["status_fd"])
    try:
        with _progress(registry, reporter):
            tasks = load(payload["files"], registry, only=payload["tasks"], sources=payload["sources"])
    except ConfigError as exc:  # the file changed on disk since it was validated
        logger.error("worker {}: cannot start: {}", payload["name"], exc)
        reporter.send(event="fatal", reason=f"cannot start: {exc}")
        return EXIT_CONFIG
    hooks: List[Hooks] = [reporter]
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from ..observe.metrics import Metrics

        hooks.append(Metrics(tasks))  # recorded in the shared folder; the supervisor serves them
    runner = in_process(tasks, options, hooks=hooks, process_log=False)
    logger.info("worker {} (pid {}): tasks {}", payload["name"], os.getpid(), ", ".join(payload["tasks"]))
    return serve(runner)
