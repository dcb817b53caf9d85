"""Test helpers: condition waits, a closed-loop trigger client, daemons in subprocesses or in-process."""
from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence

from p4p.client.thread import Context

from epics_bridge.registry import Task
from epics_bridge.runner import Runner


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


def client_for(env: Mapping[str, str]) -> Context:
    """A raw p4p client configured only from ``env`` (e.g. a private IOC's client_env)."""
    return Context("pva", nt=False, conf=dict(env), useenv=False)


def read(ctx: Context, pv: str, timeout: float = 5.0) -> Any:
    """The plain value of a PV (an enum's index)."""
    v = ctx.get(pv, timeout=timeout)
    return v["value.index"] if "value.index" in v else v["value"]


class Trigger:
    """A client doing the closed-loop handshake: put Trigger=1, wait for Trigger=0, read the status."""

    def __init__(self, ctx: Context, prefix: str) -> None:
        self.ctx, self.prefix = ctx, prefix
        self.updates: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self.sub = ctx.monitor(prefix + "Trigger", self.updates.put, notify_disconnect=True)

    def wait_value(self, wanted: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                v = self.updates.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"{self.prefix}Trigger did not become {wanted} within {timeout:g} s") from None
            if not isinstance(v, Exception) and v["value.index"] == wanted:
                return

    def cycle(self, timeout: float = 10.0) -> int:
        """Trigger one cycle and return the TaskStatus read right after the acknowledge."""
        self.drain()
        self.ctx.put(self.prefix + "Trigger", 1)
        self.wait_value(1, timeout)
        self.wait_value(0, timeout)
        return read(self.ctx, self.prefix + "TaskStatus")

    def drain(self) -> None:
        while True:
            try:
                self.updates.get_nowait()
            except queue.Empty:
                return

    def close(self) -> None:
        self.sub.close()


def write_tasks(folder: Path, source: str, name: str = "tasks_under_test.py") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return path


class Daemon:
    """``python -m epics_bridge ARGS`` in a subprocess, its stderr kept in a file."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str], workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.stderr_path = workdir / "daemon.stderr"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "epics_bridge", *map(str, args)],
            env={**os.environ, **env}, cwd=workdir, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=open(self.stderr_path, "wb"),
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


@contextmanager
def daemon(args: Sequence[str], env: Mapping[str, str], workdir: Path) -> Iterator[Daemon]:
    d = Daemon(args, env, workdir)
    try:
        yield d
    finally:
        d.kill()


@contextmanager
def running(tasks: List[Task], **kwargs: Any) -> Iterator[Runner]:
    """Run tasks in this process (on the session IOC) and stop them afterwards."""
    runner = Runner(tasks, **kwargs)
    runner.start()
    try:
        yield runner
    finally:
        runner.stop()


def wait_heartbeat(ctx: Context, prefix: str, pulses: int = 2, timeout: float = 10.0) -> None:
    """Wait until the Heartbeat PV has changed ``pulses`` times (a live daemon)."""
    seen: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
    sub = ctx.monitor(prefix + "Heartbeat", seen.put)
    try:
        deadline = time.monotonic() + timeout
        values: List[Dict] = []
        while len(values) < pulses + 1:
            try:
                v = seen.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"{prefix}Heartbeat: {len(values)} updates in {timeout:g} s") from None
            values.append(v)
    finally:
        sub.close()
