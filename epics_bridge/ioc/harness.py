"""Tasks under test on a soft IOC of their own: what the ``bridge_ioc`` fixture hands a test.

The IOC is the one ``--ioc`` starts (bridge.db and the log PVs per task prefix plus the tasks' own
``db=`` files) on loopback ports that no other test process of the machine holds; the tasks run on
the engine in the test's process, so a test sees their real handshake, statuses and log lines.
"""

from __future__ import annotations

import functools
import os
import socket
import tempfile
import threading
import time
from contextlib import ExitStack, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import pytest
from loguru import logger
from p4p.client.thread import Context

from ..casting import from_ioc
from ..engine.cycle import Loop
from ..engine.hooks import Hooks
from ..engine.runner import Runner
from ..io import BridgeIO
from ..observe.logpvs import LogPVs
from ..registry import Registry
from ..status import TaskStatus
from ..task import Task
from .embedded import databases
from .softioc import IOCError, SoftIOC, free_port

__all__ = ["BridgeIOC", "CycleResult", "Settings", "TaskRef"]

#: A task as a test names it: its decorated function, its name, or the Task.
TaskRef = Union[Callable[..., Any], str, Task]
#: Port claims shared by every test process of this machine (pytest-xdist workers included).
PORT_CLAIMS = Path(tempfile.gettempdir()) / "epics-bridge-ports"
#: Seconds a PV may take to answer once the IOC has answered a first get.
SERVED_TIMEOUT = 2.0
#: Seconds a running cycle may take to finish when the test ends.
STOP_GRACE = 2.0


@dataclass(frozen=True)
class Settings:
    """The fixture's options (``--bridge-ioc-*`` flags and ``bridge_ioc_*`` ini keys), read once per test."""

    start_timeout: float = 30.0
    cycle_timeout: float = 10.0
    external: bool = False


@dataclass(frozen=True)
class CycleResult:
    """One cycle as the engine ran it: the status and duration it wrote to the IOC, and the task's
    log lines of that cycle (``"LEVEL    | message"``, tracebacks included), one per line."""

    status: TaskStatus
    duration: float
    log: str


class BridgeIOC:
    """The IOC and running tasks of one ``bridge_ioc(...)`` call, and a client for the test."""

    def __init__(
        self,
        tasks: List[Task],
        settings: Settings,
        io: BridgeIO,
        runner: Runner,
        cycles: _Cycles,
        client_env: Mapping[str, str],
    ) -> None:
        self.tasks = tasks
        self.settings = settings
        self.io = io
        self.runner = runner
        self._cycles = cycles
        #: The EPICS_PVA_* settings that reach this IOC (for a subprocess, say); empty when external.
        self.client_env = dict(client_env)

    @classmethod
    def start(
        cls,
        refs: Sequence[TaskRef],
        registry: Registry,
        settings: Settings,
        stack: ExitStack,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> BridgeIOC:
        """Start the IOC (unless external), check that it serves every PV, then run the tasks
        (found in ``registry`` when named by function or name). ``stack`` stops whatever was
        started when the test ends, also if a later step failed."""
        tasks = _resolve(refs, registry)
        env: Dict[str, str] = {}
        if not settings.external:
            env = _start_ioc(tasks, settings, stack, tmp_path).client_env
            for key, value in env.items():  # p4p reads them when a context is made
                monkeypatch.setenv(key, value)
        io = BridgeIO(Context("pva", nt=False))
        stack.callback(io.close)
        _check_served(tasks, io, settings.start_timeout)
        runner, cycles = _start_runner(tasks, stack)
        return cls(tasks, settings, io, runner, cycles, env)

    def put(self, target: Union[TaskRef, Mapping[str, Any]], /, **logical: Any) -> None:
        """``put(task, valve=0)`` by the task's logical names, or ``put({"FULL:PV": 0})``; returns once
        the IOC acknowledged every write."""
        if isinstance(target, Mapping):
            self.io.put(dict(target))
            return
        task = self._task(target)
        self.io.put({_pv(task, name): value for name, value in logical.items()})

    def get(self, target: TaskRef, logical: Optional[str] = None) -> Any:
        """``get(task, "valve")`` by logical name, or ``get("FULL:PV")``: the value as a task reads it
        (a typed PV's as its declared type, by logical name)."""
        if logical is None:
            if not isinstance(target, str):
                raise TypeError("get(task) needs the logical name too: get(task, 'valve')")
            return self.io.get(target)
        task = self._task(target)
        value = self.io.get(_pv(task, logical))
        declared = task.pvs.declarations.get(logical)
        return value if declared is None else from_ioc(value, declared)

    def cycle(self, target: TaskRef, timeout: Optional[float] = None) -> CycleResult:
        """Run one real cycle and return its result. A trigger task gets Trigger=1 and the result
        comes once the IOC holds the acknowledge (Trigger back to 0); for a timer task it is the
        next cycle that starts after this call, so that it reads what the test put before."""
        task = self._task(target)
        limit = (self.settings.cycle_timeout if timeout is None else timeout) + (task.period or 0.0)
        since = time.monotonic()
        if task.period is None:
            self.io.put({task.pvs.trigger: 1})
        result = self._cycles.wait(task, since, limit)
        if task.period is None and task.poll is None:
            _wait_acknowledge(self.io, task, limit)
        return result

    def _task(self, ref: TaskRef) -> Task:
        for task in self.tasks:
            if ref is task or ref is task.func or ref == task.name:
                return task
        pytest.fail(
            f"bridge_ioc: {_label(ref)} is not running in this IOC (started: {', '.join(t.name for t in self.tasks)})",
            pytrace=False,
        )


def _label(ref: object) -> str:
    return repr(getattr(ref, "__name__", ref))


def _resolve(refs: Sequence[TaskRef], registry: Registry) -> List[Task]:
    """Tasks from what the test named: the registry holds every decorated function."""
    if not refs:
        pytest.fail("bridge_ioc(): name at least one task (a decorated function or its name)", pytrace=False)
    tasks = []
    for ref in refs:
        found = [ref] if isinstance(ref, Task) else [t for t in registry.tasks if ref is t.func or ref == t.name]
        if not found:
            known = ", ".join(t.name for t in registry.tasks) or "none"
            pytest.fail(
                f"bridge_ioc: {_label(ref)} is not a registered task: decorate it with @bridge.task and "
                f"import its file (registered: {known})",
                pytrace=False,
            )
        tasks.append(found[0])
    return tasks


def _pv(task: Task, logical: str) -> str:
    names = task.pvs.as_dict
    if logical not in names:
        pytest.fail(f"task '{task.name}' has no PV named {logical!r} (it has: {', '.join(names)})", pytrace=False)
    return names[logical]


def _wait_acknowledge(io: BridgeIO, task: Task, timeout: float) -> None:
    """The engine reports a cycle after writing its acknowledge: confirm that the IOC holds it."""
    deadline = time.monotonic() + timeout
    while io.get(task.pvs.trigger):
        if time.monotonic() > deadline:
            pytest.fail(
                f"task '{task.name}': the cycle ended but {task.pvs.trigger} is still 1 after "
                f"{timeout:g} s: the acknowledge was not written (see the task's log)",
                pytrace=False,
            )
        time.sleep(0.01)


# -- the IOC ----------------------------------------------------------------------------------------
def _start_ioc(tasks: List[Task], settings: Settings, stack: ExitStack, tmp_path: Path) -> SoftIOC:
    tcp, udp = _claim_ports(stack)
    output = tmp_path / "bridge-ioc" / "softioc.log"
    ioc = SoftIOC(databases(tasks), server_port=tcp, broadcast_port=udp, output=output)
    try:
        ioc.start(timeout=settings.start_timeout)
    except IOCError as exc:
        pytest.fail(
            f"bridge_ioc: {exc}\n(databases: {', '.join(str(d.path) for d in ioc.databases)}; IOC output in {output})",
            pytrace=False,
        )
    stack.callback(ioc.stop)
    return ioc


def _check_served(tasks: List[Task], io: BridgeIO, timeout: float) -> None:
    """Ready means a real get answered: each task's Trigger within ``timeout`` (the IOC may still be
    starting), then every PV of every task in one round (a PV it does not serve is named)."""
    owners = {pv: (task.name, logical) for task in tasks for logical, pv in task.pvs.as_dict.items()}
    for stage, budget in (([task.pvs.trigger for task in tasks], timeout), (list(owners), SERVED_TIMEOUT)):
        missing = io.unreachable(stage, timeout=budget)
        if missing:
            lines = [f"{pv} (task '{owners[pv][0]}', PV '{owners[pv][1]}'): {why}" for pv, why in missing.items()]
            pytest.fail(
                "bridge_ioc: the IOC does not serve these PVs (add their records to the task's db= "
                "file):\n  " + "\n  ".join(lines),
                pytrace=False,
            )


def _claim_ports(stack: ExitStack) -> Tuple[int, int]:
    """A TCP and a UDP port, free now and claimed by no other test process. pvxs silently moves
    to another port when its own is taken, so two IOCs must never be handed the same one."""
    if not PORT_CLAIMS.is_dir():
        PORT_CLAIMS.mkdir(exist_ok=True)
        with suppress(OSError):  # shared by every user of the machine, like /tmp itself
            PORT_CLAIMS.chmod(0o1777)
    for _ in range(100):
        tcp, udp = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_DGRAM)
        paths = [PORT_CLAIMS / f"tcp-{tcp}", PORT_CLAIMS / f"udp-{udp}"]
        claimed = [path for path in paths if _claim(path)]
        if len(claimed) == len(paths):
            for path in claimed:
                stack.callback(_release, path)
            return tcp, udp
        for path in claimed:
            _release(path)
    pytest.fail(f"bridge_ioc: no unclaimed free ports after 100 tries (claims in {PORT_CLAIMS})", pytrace=False)


def _claim(path: Path) -> bool:
    """Create ``path`` holding our pid; a claim left by a dead process is taken over."""
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if not _stale(path):
                return False
            _release(path)
            continue
        with os.fdopen(fd, "w") as file:
            file.write(str(os.getpid()))
        return True
    return False


def _stale(path: Path) -> bool:
    try:
        pid = int(path.read_text())
    except (OSError, ValueError):  # gone, or being written right now
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's live process
        return False
    return False


def _release(path: Path) -> None:
    with suppress(FileNotFoundError):
        path.unlink()


# -- the tasks --------------------------------------------------------------------------------------
class _TestRunner(Runner):
    """A task stuck past its watchdog budget fails the test instead of ending the pytest process."""

    def __init__(self, tasks: List[Task], cycles: _Cycles) -> None:
        super().__init__(tasks, hooks=[cycles, LogPVs(tasks)], stop_grace=STOP_GRACE)
        self.cycles = cycles

    def _stuck_limit(self, task: Task, reason: str) -> None:
        self.cycles.watchdog.setdefault(task.name, reason)


def _start_runner(tasks: List[Task], stack: ExitStack) -> Tuple[Runner, _Cycles]:
    cycles = _Cycles(tasks)
    runner = _TestRunner([replace(task, func=cycles.timed(task)) for task in tasks], cycles)
    cycles.loops = runner.loops  # filled by start(): a timer task's first cycle may log at once
    handler = logger.add(cycles.sink, level="DEBUG", format="{level: <8} | {message}", filter=cycles.wanted)
    stack.callback(logger.remove, handler)
    stack.callback(cycles.check_watchdog)
    try:
        runner.start()
    finally:
        stack.callback(_stop, runner)
    return runner, cycles


def _stop(runner: Runner) -> None:
    runner.stop()
    runner.wait()


class _Cycles(Hooks):
    """Every finished cycle of each task, with the lines its loop thread logged while it ran."""

    def __init__(self, tasks: Sequence[Task]) -> None:
        self.loops: List[Loop] = []
        #: Tasks the watchdog would have ended the process for, and why.
        self.watchdog: Dict[str, str] = {}
        #: (when the function was called, the result) of every finished cycle, per task
        self._done: Dict[str, List[Tuple[float, CycleResult]]] = {task.name: [] for task in tasks}
        self._started: Dict[str, float] = {}
        self._lines: Dict[str, List[str]] = {task.name: [] for task in tasks}
        self._changed = threading.Condition()

    def _loop_of(self, record: Dict[str, Any]) -> Optional[Loop]:
        """The loop whose thread logged this line: the task function and the cycle run there."""
        return next((loop for loop in self.loops if loop.thread.ident == record["thread"].id), None)

    def wanted(self, record: Any) -> bool:
        loop = self._loop_of(record)
        return loop is not None and loop.in_cycle

    def sink(self, message: Any) -> None:
        loop = self._loop_of(message.record)
        if loop is not None:
            with self._changed:
                self._lines[loop.task.name].append(str(message).rstrip("\n"))

    def timed(self, task: Task) -> Callable[[Any], object]:
        """The task's function, noting when each call starts: which cycle read what the test put."""
        func = task.func

        @functools.wraps(func)
        def call(t: Any) -> object:
            self._started[task.name] = time.monotonic()
            return func(t)

        @functools.wraps(func)
        async def await_call(t: Any) -> object:
            self._started[task.name] = time.monotonic()
            return await func(t)  # type: ignore[misc]

        return await_call if task.is_async else call

    def cycle_finished(self, task: Task, status: TaskStatus, duration: float) -> None:
        # A cycle whose Busy=1 was refused never called the function: it counts from now.
        started = self._started.pop(task.name, time.monotonic())
        with self._changed:
            lines, self._lines[task.name] = self._lines[task.name], []
            self._done[task.name].append((started, CycleResult(TaskStatus(status), duration, "\n".join(lines))))
            self._changed.notify_all()

    def wait(self, task: Task, since: float, timeout: float) -> CycleResult:
        """The first finished cycle of ``task`` whose function was called after ``since``."""

        def found() -> Optional[CycleResult]:
            return next((result for started, result in self._done[task.name] if started > since), None)

        with self._changed:
            if not self._changed.wait_for(found, timeout):
                pytest.fail(
                    f"task '{task.name}': no cycle finished within {timeout:g} s"
                    + (f"; watchdog: {self.watchdog[task.name]}" if task.name in self.watchdog else ""),
                    pytrace=False,
                )
            result = found()
            assert result is not None
            return result

    def check_watchdog(self) -> None:
        if self.watchdog:
            pytest.fail(
                "bridge_ioc: the watchdog would have ended the process (exit 3): "
                + "; ".join(f"task '{name}': {reason}" for name, reason in self.watchdog.items()),
                pytrace=False,
            )
