"""The benchmark's instruments: the processes it measures and their /proc figures, the order of the
handshake's writes, a recorder of Heartbeat pulses, and the throw-away venv of epics-bridge 5.0.0.

The client side of the handshake itself is :mod:`epics_bridge.client`, shared with the tests.
It runs in the benchmark process on its own p4p context: monitor callbacks only record (arrival
time, IOC timestamp, value) and hand over through a queue or an append; waiting happens here,
always under a deadline.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from epics_bridge.client import Handshake, Monitors, stamp
from epics_bridge.kept import Feed, KeptPuts

__all__ = [
    "BenchError",
    "Child",
    "Handshake",
    "HeartbeatWatch",
    "Monitors",
    "OrderCheck",
    "UPSTREAM",
    "idle_usage",
    "process_tree",
    "pss_mb",
    "tree_cpu_seconds",
    "tree_figures",
    "upstream_python",
    "upstream_versions",
]

UPSTREAM = "epics-bridge==5.0.0"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """One measurement could not be made; the report says why and the run goes on."""


# -- processes ----------------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """User + system CPU time of every thread of ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()  # after "(comm)", which may hold spaces
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime: fields 14 and 15


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise BenchError(f"no VmRSS for process {pid}")


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def pss_mb(pid: int) -> float:
    """Proportional set size: pages shared with other processes (e.g. forked workers) count by share."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024.0
    raise BenchError(f"no Pss for process {pid}")


def process_tree(pid: int) -> List[int]:
    """``pid`` and every process descended from it, now (a service: its supervisor and workers)."""
    children: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):  # gone meanwhile
                continue
            children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo.extend(children.get(tree[-1], ()))
    return tree


def tree_figures(pid: int) -> Dict[str, Any]:
    """Memory, threads, file descriptors and CPU seconds summed over the process tree of ``pid``.

    ``cpu_s`` maps each process to its CPU time so far, so that a window's CPU is the difference
    of two calls; a process that ends between the reads is left out."""
    out: Dict[str, Any] = {"processes": 0, "threads": 0, "fds": 0, "rss_mb": 0.0, "pss_mb": 0.0, "cpu_s": {}}
    for p in process_tree(pid):
        try:
            figures = (rss_mb(p), pss_mb(p), thread_count(p), len(os.listdir(f"/proc/{p}/fd")), cpu_seconds(p))
        except (OSError, BenchError):
            continue
        out["processes"] += 1
        out["rss_mb"] += figures[0]
        out["pss_mb"] += figures[1]
        out["threads"] += figures[2]
        out["fds"] += figures[3]
        out["cpu_s"][p] = figures[4]
    return out


def tree_cpu_seconds(before: Mapping[int, float], after: Mapping[int, float]) -> float:
    """CPU used between two :func:`tree_figures` reads by the processes alive at the second one."""
    return sum(cpu - before.get(p, 0.0) for p, cpu in after.items())


def _die_with_parent() -> None:
    """In the child before exec: the kernel SIGKILLs it if the benchmark dies, however it dies."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Child:
    """A measured process; its output goes to ``<workdir>/<name>.log``. Dies with the benchmark."""

    def __init__(self, name: str, cmd: Sequence[str], env: Mapping[str, str], workdir: Path) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                list(cmd),
                env=dict(env),
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        self.started_wall = time.time()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check(self) -> None:
        """BenchError (with the end of its output) if the process has exited."""
        code = self.proc.poll()
        if code is not None:
            tail = self.log_path.read_text(errors="replace")[-1500:]
            raise BenchError(f"{self.name} exited with status {code}; its output ends:\n{tail}")

    def stop(self, timeout: float = 5.0) -> Optional[float]:
        """SIGTERM, then SIGKILL after ``timeout``; seconds it took to exit on SIGTERM (None: killed)."""
        if self.proc.poll() is not None:
            return None
        started = time.monotonic()
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
            return time.monotonic() - started
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def idle_usage(child: Child, seconds: float) -> Dict[str, Any]:
    """A process left alone, with everything it started (a supervisor and its workers): % of one
    core over ``seconds`` of wall time, then RSS and PSS, threads and processes, all summed."""
    child.check()
    before, t0 = tree_figures(child.pid), time.monotonic()
    time.sleep(seconds)
    after, t1 = tree_figures(child.pid), time.monotonic()
    child.check()
    cpu = tree_cpu_seconds(before["cpu_s"], after["cpu_s"])
    return {
        "cpu_percent": round(100.0 * cpu / (t1 - t0), 3),
        "rss_mb": round(after["rss_mb"], 1),
        "pss_mb": round(after["pss_mb"], 1),
        "threads": after["threads"],
        "processes": after["processes"],
        "seconds": round(t1 - t0, 2),
    }


# -- the client side (the handshake itself is in .client) -------------------------------------------
class OrderCheck:
    """Did the IOC hold *this* cycle's TaskStatus when Trigger went back to 0?

    That is the contract's order: a client that waits for the acknowledge and then reads the
    status gets the status of its own cycle. A status written before this cycle's Busy=1 belongs
    to an earlier cycle, one written after the acknowledge came too late (IOC timestamps).
    """

    def __init__(self, monitors: Monitors, handshake: Handshake, prefixes: Sequence[str]) -> None:
        self.ctx, self.handshake = monitors.ctx, handshake
        self.busy_starts: Dict[str, List[float]] = {p: [] for p in prefixes}
        for p in prefixes:
            monitors.subscribe(p + "Busy", self._recorder(self.busy_starts[p]))

    @staticmethod
    def _recorder(starts: List[float]) -> Callable[[Any], None]:
        def record(value: Any) -> None:
            if not isinstance(value, Exception) and value["value.index"]:
                starts.append(stamp(value))

        return record

    def cycle(self, prefix: str, timeout: float) -> Optional[bool]:
        """One cycle and its verdict; None if it was not acknowledged in time."""
        name, wall = prefix + "Trigger", time.time()
        if name not in self.handshake.trigger([name], timeout):
            return None
        ack = self.handshake.ack_stamps[name]
        written = stamp(self.ctx.get(prefix + "TaskStatus", timeout=timeout))
        deadline = time.monotonic() + 1.0  # Busy's update may be dispatched just after Trigger's
        while True:
            started = [s for s in list(self.busy_starts[prefix]) if wall <= s <= ack]
            if started or time.monotonic() > deadline:
                return bool(started) and min(started) <= written <= ack
            time.sleep(0.01)


class HeartbeatWatch:
    """The IOC timestamp of every update of some Heartbeat PVs, recorded until :meth:`close`.

    Read through a feed of the compiled part (kept/) where there is one, a tenth of a second's
    pulses at a time: a thousand pulses a second through p4p's subscriptions would cost this client
    CPU that the service it measures shares on a 2-core host."""

    def __init__(self, monitors: Monitors, prefixes: Sequence[str]) -> None:
        self.stamps: Dict[str, List[float]] = {p + "Heartbeat": [] for p in prefixes}
        names = list(self.stamps)
        self._kept = KeptPuts(monitors.ctx)
        self._closed = threading.Event()
        feed = self._kept.feed(names) if names else None
        self._thread: Optional[threading.Thread] = None
        if feed is not None:
            self._thread = threading.Thread(target=self._take, args=(feed, names), name="heartbeats", daemon=True)
            self._thread.start()
            return
        for name in names:
            monitors.subscribe(name, self._recorder(name))

    def _take(self, feed: Feed, names: List[str]) -> None:
        try:
            while not self._closed.wait(0.1):
                for index, _, ioc_stamp, _ in feed.take(0.0):
                    self.stamps[names[index]].append(ioc_stamp)
        finally:
            feed.close()

    def close(self) -> None:
        self._closed.set()
        if self._thread is not None:
            self._thread.join(5.0)
        self._kept.close()

    def _recorder(self, name: str) -> Callable[[Any], None]:
        record = self.stamps[name].append

        def on_update(value: Any) -> None:
            if not isinstance(value, Exception):
                record(stamp(value))

        return on_update

    def first_since(self, names: Sequence[str], since: float) -> Dict[str, float]:
        """The first pulse of each PV stamped at or after ``since`` (PVs without one are absent)."""
        out = {}
        for name in names:
            later = [s for s in list(self.stamps[name]) if s >= since]
            if later:
                out[name] = min(later)
        return out

    def wait_all(self, names: Sequence[str], since: float, timeout: float, child: Optional[Child] = None) -> float:
        """Wait until every PV pulsed after ``since``; return the IOC time of the last first pulse."""
        deadline = time.monotonic() + timeout
        while True:
            firsts = self.first_since(names, since)
            if len(firsts) == len(names):
                return max(firsts.values())
            if child is not None:
                child.check()
            if time.monotonic() > deadline:
                raise BenchError(f"only {len(firsts)} of {len(names)} heartbeats pulsed within {timeout:g} s")
            time.sleep(0.05)

    def window(self, names: Sequence[str]) -> Dict[str, List[float]]:
        """A snapshot of the stamps of ``names``."""
        return {name: list(self.stamps[name]) for name in names}


# -- epics-bridge 5.0.0 -------------------------------------------------------------------------------
def upstream_versions(python: Path) -> Dict[str, str]:
    """Versions of epics-bridge and p4p in the venv of ``python`` (empty if it cannot say)."""
    probe = "import importlib.metadata as m; print(m.version('epics-bridge'), m.version('p4p'))"
    try:
        out = subprocess.run([str(python), "-I", "-c", probe], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    words = out.stdout.split()
    return dict(zip(("epics-bridge", "p4p"), words)) if out.returncode == 0 and len(words) == 2 else {}


def _has_upstream(python: Path) -> bool:
    return upstream_versions(python).get("epics-bridge") == UPSTREAM.split("==")[1]


def upstream_python(venv: Path, log: Path, timeout: float = 900.0) -> Path:
    """The python of ``venv`` holding epics-bridge 5.0.0 from PyPI, made on first use.

    It has the same import name as this package, so it lives in its own venv and only ever runs
    there, in its own processes. BenchError if it cannot be installed (e.g. no network).
    """
    python = venv / "bin" / "python"
    if _has_upstream(python):
        return python
    with open(log, "ab") as out:
        try:
            for cmd in (
                [sys.executable, "-m", "venv", "--clear", str(venv)],
                [str(python), "-m", "pip", "install", "--disable-pip-version-check", UPSTREAM],
            ):
                out.write(f"$ {' '.join(cmd)}\n".encode())
                out.flush()
                subprocess.run(
                    cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=timeout, check=True
                )
        except (OSError, subprocess.SubprocessError) as exc:
            raise BenchError(f"cannot install {UPSTREAM} into {venv} ({exc}); see {log}") from None
    if not _has_upstream(python):
        raise BenchError(f"{UPSTREAM} not importable in {venv} after installing; see {log}")
    return python
