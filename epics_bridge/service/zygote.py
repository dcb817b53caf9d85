"""Worker processes forked from one interpreter that has already imported what every worker needs.

A fresh interpreter per worker pays for numpy, loguru and the standard library once per worker, as
private memory (the modules are Python objects, not shared library pages: numpy and loguru alone
about 13 MB). Forked from this zygote, the workers share those pages until they write to them: at
1000 tasks in 10 files, about 80 MB less for the whole service (361-365 against 440-444 MB PSS).
p4p is not among the preloaded modules: importing it initialises EPICS base's threads, and using
them in a child forked after that is undefined behaviour for EPICS ("Detected use of epicsThread
from child process after fork()"). Each worker imports p4p itself, after the fork, as before.

A worker is the zygote's grandchild: the zygote forks, the child forks the worker and exits at once.
The supervisor is a child subreaper (``PR_SET_CHILD_SUBREAPER``), so the orphaned worker becomes
its child: the supervisor reaps it, gets its exit status, and the worker's parent-death signal is
armed on the supervisor, exactly as for an interpreter the supervisor started itself. The zygote
holds no worker, so its own end loses nothing: the supervisor then starts fresh interpreters again.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from typing import AbstractSet, Dict, List, Optional, Sequence, Set, Tuple

from .worker import ENTRY, PR_SET_NAME, PR_SET_PDEATHSIG, prctl

__all__ = ["Zygote", "Adopted", "become_subreaper", "reap_orphans"]

#: What every worker imports before its tasks, none of which loads p4p (checked at start).
PRELOAD = (
    "numpy",
    "loguru",
    "epics_bridge.service.worker",
    "epics_bridge.service.interface",
    "epics_bridge.observe.logs",
    "epics_bridge.sinks",
    "logging",
    "queue",
)
#: The module whose import would make forking unsafe (see the module's docstring).
FORBIDDEN = "p4p._p4p"
#: How long the supervisor waits for a fork (the first includes the zygote's imports).
REPLY_TIMEOUT = 30.0
_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper(on: bool = True) -> bool:
    """Orphans among our descendants become our children (Linux): the zygote's grandchildren too."""
    return prctl(_PR_SET_CHILD_SUBREAPER, int(on))


class Adopted:
    """A worker forked by the zygote and adopted by the supervisor: the part of ``subprocess.Popen``
    the supervisor uses, on a process that is its child without having been started by it."""

    def __init__(self, pid: int, stdin: int) -> None:
        self.pid = pid
        self.returncode: Optional[int] = None
        self.stdin = os.fdopen(stdin, "wb")

    def poll(self) -> Optional[int]:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # someone else reaped it: gone, how is unknown
                self.returncode = 255
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: Optional[float] = None) -> int:
        until = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if until is not None and time.monotonic() >= until:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0.0)
            time.sleep(0.01)
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


class Zygote:
    """The supervisor's handle on the zygote process, started on the first :meth:`fork`. Any
    failure ends it for good: from then on :meth:`fork` raises and the caller starts fresh
    interpreters."""

    def __init__(self, lifeline: int, env: Dict[str, str]) -> None:
        self.lifeline, self.env = lifeline, env
        self.process: Optional[subprocess.Popen[bytes]] = None
        self.sock: Optional[socket.socket] = None
        self.failed: Optional[str] = None

    def fork(self, stdin: int, status: int) -> Tuple[int, int]:
        """A new worker interpreter reading its payload from ``stdin`` and reporting on ``status``:
        its pid and the number ``status`` has in it. OSError if the zygote cannot (then never again)."""
        if self.failed is not None:
            raise OSError(self.failed)
        try:
            if self.process is None:
                self._start()
            assert self.sock is not None
            socket.send_fds(self.sock, [b"fork\n"], [stdin, status])
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = self.sock.recv(64)
                if not chunk:
                    raise OSError(f"the zygote ended ({self._ended()})")
                reply += chunk
            pid, number = map(int, reply.split())
            if pid <= 0:
                raise OSError("the zygote could not fork")
            return pid, number
        except (OSError, ValueError) as exc:
            self.failed = str(exc) or type(exc).__name__
            self.close(grace=0.0)  # it may be hung: the supervisor's loop does not wait for it
            raise OSError(self.failed) from exc

    def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(os.getpid()), str(theirs.fileno()), str(self.lifeline)],
                env=self.env,
                pass_fds=(theirs.fileno(), self.lifeline),
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.settimeout(REPLY_TIMEOUT)
        self.sock = ours

    def _ended(self) -> str:
        if self.process is None:
            return "not started"
        code = self.process.poll()
        return "still running" if code is None else f"exit status {code}"

    def close(self, grace: float = 5.0) -> None:
        """End the zygote: end-of-file on its socket makes it exit; killed if it has not within
        ``grace`` s. Its workers are the supervisor's children, not its own: they go on."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.process is not None:
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


def reap_orphans(sessions: AbstractSet[int]) -> Set[int]:
    """Reap our zombie children that belong to one of ``sessions`` (the workers', each its own
    session): processes a worker started and left, adopted by the subreaper when it ended. Other
    children (the embedded IOC, the zygote) are left to whoever started them. Returns the
    sessions that still have a process among our children: the others can be forgotten."""
    alive: Set[int] = set()
    for pid in _children():
        stat = _stat(pid)
        if stat is None or stat[1] not in sessions:
            continue
        if stat[0] == "Z" and stat[1] != pid:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        else:
            alive.add(stat[1])
    return alive


def _children() -> List[int]:
    pids: List[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError), open(f"/proc/self/task/{tid}/children") as f:
                pids.extend(int(p) for p in f.read().split())
    return pids


def _stat(pid: int) -> Optional[Tuple[str, int]]:
    """(state, session id) from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[3])


# -- the zygote process -------------------------------------------------------------------------------
def _preload() -> None:
    """Import what every worker needs; refuse (exit) if that brought p4p in."""
    for name in PRELOAD:
        importlib.import_module(name)
    if FORBIDDEN in sys.modules:
        raise SystemExit(f"zygote: preloading imported {FORBIDDEN}; forking would be unsafe")
    gc.collect()
    gc.freeze()  # the collector no longer writes to these objects: their pages stay shared


def serve(supervisor: int, sock: socket.socket, lifeline: int) -> Optional[List[str]]:
    """The zygote's loop: a fork per request until end-of-file. Returns only in a forked worker,
    with the command line it runs under."""
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(sock, 64, 2)
        except OSError:
            return None
        if not message or len(fds) != 2:
            for fd in fds:
                os.close(fd)
            return None
        stdin, status = fds
        reader, writer = os.pipe()
        child = os.fork()
        if child == 0:  # the middle process: fork the worker, then leave it to the subreaper
            _middle(reader, writer)  # returns only in the worker
            return _become_worker(supervisor, sock, stdin, lifeline)
        os.close(writer)
        with os.fdopen(reader, "rb") as pipe:
            pid = pipe.read()
        os.waitpid(child, 0)  # once it is reaped, its orphan is the supervisor's child
        os.close(stdin)
        os.close(status)
        sock.sendall(b"%s %d\n" % (pid or b"0", status))


def _middle(reader: int, writer: int) -> None:
    """Fork the worker, tell the zygote its pid and exit: returns only in the worker."""
    try:
        os.close(reader)
        worker = os.fork()
        if worker == 0:
            os.close(writer)
            return
        os.write(writer, str(worker).encode())
    except BaseException:  # noqa: B036 - whatever happens, the middle process never returns
        pass
    os._exit(0)


def _become_worker(supervisor: int, sock: socket.socket, stdin: int, lifeline: int) -> List[str]:
    sock.close()
    os.setsid()  # its own session: Ctrl-C reaches the supervisor only, killpg the worker's tree
    os.dup2(stdin, 0)
    os.close(stdin)
    until = time.monotonic() + 5.0
    while os.getppid() != supervisor and time.monotonic() < until:  # adopted once the middle ends
        time.sleep(0.001)
    prctl(PR_SET_NAME, b"eb-spare")
    return [sys.argv[0], str(supervisor), str(lifeline)]


def main(argv: Sequence[str]) -> Optional[List[str]]:
    supervisor, fd, lifeline = map(int, argv)
    prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
    if os.getppid() != supervisor:
        return None
    prctl(PR_SET_NAME, b"eb-zygote")
    # numpy's OpenBLAS keeps a thread pool; OpenBLAS stops it around fork() itself (pthread_atfork)
    warnings.filterwarnings("ignore", message=".*multi-threaded.*fork", category=DeprecationWarning)
    _preload()
    return serve(supervisor, socket.socket(fileno=fd), lifeline)


if __name__ == "__main__":
    command = main(sys.argv[1:])
    if command is not None:  # a forked worker: from here on, the worker's entry point as its main
        import runpy

        sys.argv = command
        runpy.run_module(ENTRY, run_name="__main__", alter_sys=True)
