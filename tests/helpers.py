"""Test helpers: condition waits, monitors, daemons in subprocesses or in-process.

The closed-loop trigger client is the package's (:class:`epics_bridge.client.Trigger`), which the
benchmark drives too."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence

from p4p.client.thread import Context

from epics_bridge.client import Recorder, Trigger
from epics_bridge.engine.runner import Runner
from epics_bridge.ioc.softioc import free_port
from epics_bridge.service import worker
from epics_bridge.task import Task


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, what: str = "") -> Any:
    """Return the first truthy ``predicate()``; fail the test if none within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or predicate}")
        time.sleep(interval)


def recorder(ctx: Context, pvs: List[str]) -> Recorder:
    """Every update of ``pvs`` (with IOC timestamps) from the first (the value before the test) on."""
    updates = Recorder(ctx, pvs)
    wait_for(lambda: all(updates.of.values()), what="the first update of each monitored PV")
    return updates


def client_for(env: Mapping[str, str]) -> Context:
    """A raw p4p client configured only from ``env`` (e.g. a private IOC's client_env)."""
    return Context("pva", nt=False, conf=dict(env), useenv=False)


def read(ctx: Context, pv: str, timeout: float = 5.0) -> Any:
    """The plain value of a PV (an enum's index)."""
    v = ctx.get(pv, timeout=timeout)
    return v["value.index"] if "value.index" in v else v["value"]


class MonitorQueue:
    """A PV's monitor updates, queued for the test thread (the p4p callback only enqueues)."""

    def __init__(self, ctx: Context, pv: str, notify_disconnect: bool = False) -> None:
        self.pv = pv
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.sub = ctx.monitor(pv, self.queue.put, notify_disconnect=notify_disconnect)

    def next(self, predicate: Callable[[Any], bool], timeout: float, what: str = "the update") -> Any:
        """The next update (disconnects skipped) for which ``predicate`` holds; fail after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                v = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"{self.pv}: {what} did not come within {timeout:g} s") from None
            if not isinstance(v, Exception) and predicate(v):
                return v

    def drain(self) -> List[Any]:
        """Every update queued so far."""
        out = []
        while True:
            try:
                out.append(self.queue.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        self.sub.close()


def write_tasks(folder: Path, source: str, name: str = "tasks_under_test.py") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return path


class Daemon:
    """``python -m epics_bridge ARGS`` in a subprocess, its stderr kept in a file (or, with
    ``stderr_pipe``, a pipe that nobody reads: a blocked log sink)."""

    def __init__(
        self,
        args: Sequence[str],
        env: Mapping[str, str],
        workdir: Path,
        script: Optional[Path] = None,
        stderr_pipe: bool = False,
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.stderr_path = workdir / "daemon.stderr"
        #: Inherited by every process the daemon starts (workers, an embedded IOC): how leftovers are found.
        self.marker = f"{os.getpid()}-{uuid.uuid4().hex}"
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, *([str(script)] if script else ["-m", "epics_bridge"]), *map(str, args)],
                env={**os.environ, **env, LEFTOVER_MARKER: self.marker},
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE if stderr_pipe else stderr,
            )

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def log(self, name: str) -> str:
        """The content of logs/<name>.log (a task's file, or 'epics-bridge' for the process file)."""
        path = self.workdir / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"daemon still running after {timeout:g} s; stderr:\n{self.stderr[-3000:]}") from None

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def descendants(self) -> List[int]:
        """Every live process started by this daemon or its children, by the marker they inherited."""
        return processes_marked(self.marker)

    def workers(self) -> List[int]:
        """The daemon's worker processes now (not the spare that waits for the next start)."""
        return [pid for pid in self.descendants() if comm(pid).startswith("eb:")]

    def spares(self) -> List[int]:
        """Worker interpreters started but not yet given tasks (they name themselves when given some):
        forked by the zygote (``eb-spare``) or fresh."""
        return [
            pid
            for pid in self.descendants()
            if comm(pid) == "eb-spare" or (worker.ENTRY in cmdline(pid) and not comm(pid).startswith("eb:"))
        ]

    def worker(self, name: str) -> int:
        """The pid of the worker named ``name`` (its task file, or its task), waiting for it to run."""
        return wait_for(
            lambda: next((p for p in self.workers() if comm(p) == f"eb:{name}"[:15]), None),
            timeout=30,
            what=f"worker {name}",
        )

    def assert_nothing_left(self, timeout: float = 20.0) -> None:
        """No process of this daemon outlives it (a worker dies with its supervisor); kill and fail if one does."""
        try:
            wait_for(lambda: not self.descendants(), timeout, what="the daemon's processes to end")
        except AssertionError:
            left = {pid: cmdline(pid)[:120] for pid in self.descendants()}
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"processes left behind by the daemon: {left}") from None


@contextmanager
def daemon(
    args: Sequence[str],
    env: Mapping[str, str],
    workdir: Path,
    script: Optional[Path] = None,
    stderr_pipe: bool = False,
) -> Iterator[Daemon]:
    """``python -m epics_bridge ARGS`` (or ``python SCRIPT ARGS``), killed and checked for leftovers after."""
    d = Daemon(args, env, workdir, script, stderr_pipe)
    try:
        yield d
    finally:
        d.kill()
        if d.proc.stderr is not None:  # unblocks the workers' writers: a broken pipe now
            d.proc.stderr.close()
        d.assert_nothing_left()


LEFTOVER_MARKER = "EPICS_BRIDGE_TEST_DAEMON"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def comm(pid: int) -> str:
    """The process's name (``/proc/PID/comm``): a worker names itself ``eb:<worker name>``."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def processes_marked(marker: str) -> List[int]:
    """Live processes (not zombies) whose environment carries ``LEFTOVER_MARKER=marker``."""
    wanted = f"{LEFTOVER_MARKER}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (
                wanted in (entry / "environ").read_bytes().split(b"\0")
                and (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
            ):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@contextmanager
def running(tasks: List[Task], **kwargs: Any) -> Iterator[Runner]:
    """Run tasks in this process (on the session IOC) and stop them afterwards."""
    runner = Runner(tasks, hooks=kwargs.pop("hooks", ()), stop_grace=kwargs.pop("stop_grace", 5.0), **kwargs)
    runner.start()
    try:
        yield runner
    finally:
        runner.stop()
        runner.wait()


def wait_heartbeat(ctx: Context, prefix: str, pulses: int = 2, timeout: float = 10.0) -> None:
    """Wait until the Heartbeat PV has changed ``pulses`` times (a live daemon)."""
    updates = MonitorQueue(ctx, prefix + "Heartbeat")
    deadline = time.monotonic() + timeout
    try:
        for _ in range(pulses + 1):  # the first update is the current value
            updates.next(lambda v: True, max(0.0, deadline - time.monotonic()), what="a heartbeat")
    finally:
        updates.close()


class HeartbeatRecorder:
    """Monitors the Heartbeat PV of each prefix and keeps the arrival time of every pulse.

    A pulse is a change of the value (the first update after connecting only sets the baseline).
    The callback only appends to a list, so it never blocks p4p's workers.
    """

    def __init__(self, ctx: Context, prefixes: Sequence[str]) -> None:
        self.pulses: Dict[str, List[float]] = {p: [] for p in prefixes}
        self._subs = [ctx.monitor(p + "Heartbeat", self._recorder(p), notify_disconnect=True) for p in prefixes]

    def _recorder(self, prefix: str) -> Callable[[Any], None]:
        times = self.pulses[prefix]
        last: List[Any] = [None]

        def record(value: Any) -> None:
            if isinstance(value, Exception):
                return
            now, value = time.monotonic(), value["value.index"]
            if last[0] is not None and value != last[0]:
                times.append(now)
            last[0] = value

        return record

    def wait_pulses(self, prefix: str, count: int = 2, timeout: float = 10.0) -> None:
        """Wait until ``count`` more pulses of ``prefix`` have arrived."""
        target = len(self.pulses[prefix]) + count
        wait_for(lambda: len(self.pulses[prefix]) >= target, timeout, what=f"{count} pulses of {prefix}Heartbeat")

    def close(self) -> None:
        for sub in self._subs:
            sub.close()


def wait_value(ctx: Context, pv: str, wanted: Any, timeout: float = 10.0) -> None:
    """Wait until ``pv`` reads ``wanted`` (an enum's index)."""
    wait_for(lambda: read(ctx, pv) == wanted, timeout, what=f"{pv} == {wanted!r}")


def reset_logging() -> None:
    """Undo ``epics_bridge.observe.logs.configure`` in this process: loguru's defaults, p4p's level unset."""
    import logging

    from loguru import logger

    logger.remove()
    logger.configure(extra={}, patcher=lambda record: None)  # patcher=None would keep the old one
    logger.add(sys.stderr)
    logging.getLogger("p4p").setLevel(logging.NOTSET)


def ready_trigger(ctx: Context, prefix: str, timeout: float = 10.0) -> Trigger:
    """A :class:`Trigger` whose monitor has delivered its first update: the IOC serves the task's PVs."""
    trigger = Trigger(ctx, prefix)
    wait_for(lambda: not trigger.handshake.updates.empty(), timeout, what=f"a first update of {prefix}Trigger")
    return trigger


def embedded_ports() -> Dict[str, str]:
    """Private server ports for an ``--ioc`` run (PVA and CA), never the standard ones that another
    run on this host may hold; :func:`embedded_client_env` is how a client then finds that IOC."""
    return {
        "EPICS_PVAS_SERVER_PORT": str(free_port()),
        "EPICS_PVAS_BROADCAST_PORT": str(free_port(socket.SOCK_DGRAM)),
        "EPICS_CAS_SERVER_PORT": str(free_port()),
        "EPICS_CAS_BEACON_PORT": str(free_port(socket.SOCK_DGRAM)),
    }


def embedded_client_env(ports: Mapping[str, str]) -> Dict[str, str]:
    return {
        "EPICS_PVA_ADDR_LIST": "127.0.0.1",
        "EPICS_PVA_AUTO_ADDR_LIST": "NO",
        "EPICS_PVA_SERVER_PORT": ports["EPICS_PVAS_SERVER_PORT"],
        "EPICS_PVA_BROADCAST_PORT": ports["EPICS_PVAS_BROADCAST_PORT"],
    }


class ClosedLoop(threading.Thread):
    """Triggers one task again and again, as a client would, counting acknowledged and lost cycles."""

    def __init__(self, env: Dict[str, str], prefix: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.env, self.prefix, self.stop = env, prefix, stop
        self.acknowledged = self.lost = 0

    def run(self) -> None:
        ctx = client_for(self.env)
        trigger = ready_trigger(ctx, self.prefix)
        try:
            while not self.stop.is_set():
                try:
                    trigger.cycle(timeout=15.0)  # lost: never acknowledged, not just late on a loaded machine
                    self.acknowledged += 1
                except TimeoutError:
                    self.lost += 1
        finally:
            trigger.close()
            ctx.close()
