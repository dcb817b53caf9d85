"""A real EPICS soft IOC in a child process: EPICS base from ``epicscorelibs``, the PVA server
(QSRV) from ``pvxslibs``, both plain pip packages.

The test suite, the embedded ``--ioc`` mode and the benchmark all use it, so they talk to the same
record processing, alarms and QSRV group puts that a facility IOC has. The child listens only on
the given interface and ports, serves PV Access only unless asked for Channel Access too (the
``--ioc`` first run, for ``caget`` and Phoebus's default protocol), and exits when its parent goes
away (its stdin closes), so a crashed test run leaves no IOC behind.

Run one by hand::

    python -m epics_bridge.ioc.softioc -m P=IOC:MOTOR:01: -d db/bridge.db
"""

from __future__ import annotations

import argparse
import os
import queue
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO, Dict, List, Mapping, Optional, Sequence, Tuple, Union

__all__ = ["Database", "SoftIOC", "IOCError", "db_dir", "free_ca_port", "free_port"]

Macros = Union[str, Mapping[str, object]]


#: Lines of the IOC's own output quoted when it dies during start-up.
OUTPUT_TAIL = 12
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class IOCError(RuntimeError):
    """The soft IOC failed to start (its output says why)."""


@dataclass(frozen=True)
class Database:
    """One ``dbLoadRecords`` call: a db file and its macros (``"P=A:,N=2"`` or a mapping)."""

    path: Path
    macros: Macros = ""

    @property
    def macro_string(self) -> str:
        if isinstance(self.macros, str):
            return self.macros
        return ",".join(f"{k}={v}" for k, v in self.macros.items())


def db_dir() -> Path:
    """The standard databases shipped inside the package (``epics_bridge/db``, package data), so a
    checkout, a wheel and a container find them the same way."""
    folder = Path(str(resources.files("epics_bridge").joinpath("db")))
    if not (folder / "bridge.db").is_file():
        raise IOCError(f"cannot find bridge.db in {folder}: the package was installed without its data")
    return folder


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port the OS has just reported free on ``host`` (TCP by default, SOCK_DGRAM for UDP)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_ca_port(host: str = "127.0.0.1", attempts: int = 20) -> int:
    """A port free for both TCP and UDP on ``host``: a CA server takes the same number for its
    circuits (TCP) and for name searches (UDP)."""
    for _ in range(attempts):
        port = free_port(socket.SOCK_STREAM, host)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        return port
    raise IOCError(f"no port free for both TCP and UDP on {host} after {attempts} tries")


class SoftIOC:
    """Start with ``with SoftIOC([Database(path, "P=X:")]) as ioc:`` and give clients ``ioc.client_env``.

    Ports default to free ones, so parallel runs never meet; pass them to restart an IOC on the
    same address (clients reconnect as after a real IOC reboot).
    """

    def __init__(
        self,
        databases: Sequence[Union[Database, Tuple[Union[str, Path], Macros]]],
        *,
        interface: str = "127.0.0.1",
        server_port: Optional[int] = None,
        broadcast_port: Optional[int] = None,
        output: Optional[Union[str, Path]] = None,
        channel_access: bool = False,
        ca_server_port: Optional[int] = None,
        ca_repeater_port: Optional[int] = None,
    ) -> None:
        self.databases = [d if isinstance(d, Database) else Database(Path(d[0]), d[1]) for d in databases]
        self.interface = interface
        self.server_port = server_port or free_port(socket.SOCK_STREAM, interface)
        self.broadcast_port = broadcast_port or free_port(socket.SOCK_DGRAM, interface)
        #: The Channel Access server (RSRV) beside QSRV; its ports only matter when it is on.
        self.channel_access = channel_access
        self.ca_server_port: Optional[int] = None
        self.ca_repeater_port: Optional[int] = None
        if channel_access:
            self.ca_server_port = ca_server_port or free_ca_port(interface)
            self.ca_repeater_port = ca_repeater_port or free_port(socket.SOCK_DGRAM, interface)
        self.output = Path(output) if output else None
        self.process: Optional[subprocess.Popen[bytes]] = None
        self._output_file: Optional[IO[bytes]] = None
        self._output_start = 0

    # -- addresses --------------------------------------------------------------------------
    @property
    def server_env(self) -> Dict[str, str]:
        """The EPICS_PVAS_* (and, with Channel Access, EPICS_CAS_*) settings the IOC runs with."""
        env = {
            "EPICS_PVAS_INTF_ADDR_LIST": self.interface,
            "EPICS_PVAS_SERVER_PORT": str(self.server_port),
            "EPICS_PVAS_BROADCAST_PORT": str(self.broadcast_port),
            "EPICS_PVAS_AUTO_BEACON_ADDR_LIST": "NO",
            "EPICS_PVAS_BEACON_ADDR_LIST": self.interface,
            "EPICS_IOC_IGNORE_SERVERS": "" if self.channel_access else "rsrv",
        }
        if self.channel_access:
            env.update(
                {
                    "EPICS_CAS_INTF_ADDR_LIST": self.interface,
                    "EPICS_CAS_SERVER_PORT": str(self.ca_server_port),
                    "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
                    "EPICS_CAS_BEACON_ADDR_LIST": self.interface,
                    "EPICS_CAS_BEACON_PORT": str(self.ca_repeater_port),
                }
            )
        return env

    @property
    def client_env(self) -> Dict[str, str]:
        """The EPICS_PVA_* (and EPICS_CA_*) settings a client needs to find this IOC and nothing else."""
        env = {
            "EPICS_PVA_ADDR_LIST": self.interface,
            "EPICS_PVA_AUTO_ADDR_LIST": "NO",
            "EPICS_PVA_SERVER_PORT": str(self.server_port),
            "EPICS_PVA_BROADCAST_PORT": str(self.broadcast_port),
        }
        if self.channel_access:
            env.update(
                {
                    "EPICS_CA_ADDR_LIST": self.interface,
                    "EPICS_CA_AUTO_ADDR_LIST": "NO",
                    "EPICS_CA_SERVER_PORT": str(self.ca_server_port),
                    "EPICS_CA_REPEATER_PORT": str(self.ca_repeater_port),
                }
            )
        return env

    @property
    def pid(self) -> int:
        assert self.process is not None, "IOC not started"
        return self.process.pid

    # -- life cycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> SoftIOC:
        """Start the child and return once iocInit has finished and the PVA server listens."""
        if self.process is not None and self.process.poll() is None:
            raise IOCError("IOC already running")
        ready_r, ready_w = os.pipe()
        cmd = [sys.executable, "-m", "epics_bridge.ioc.softioc", "--ready-fd", str(ready_w), "--lifeline"]
        for db in self.databases:
            cmd += ["-m", db.macro_string, "-d", str(db.path)]
        # client_env too: QSRV's own PVA client (for pva links) then also stays on our ports.
        env = {**os.environ, **self.client_env, **self.server_env}
        if self.output is not None:
            self.output.parent.mkdir(parents=True, exist_ok=True)
            self._output_file = open(self.output, "ab")
            self._output_start = self._output_file.tell()  # this run's output starts here
        try:
            self.process = subprocess.Popen(
                cmd,
                env=env,
                stdin=subprocess.PIPE,
                stdout=self._output_file,
                stderr=subprocess.STDOUT if self._output_file else None,
                pass_fds=(ready_w,),
                # Out of the terminal's process group: a Ctrl-C (or a group SIGTERM) must stop the
                # tasks first, which release their prefixes on this IOC; it follows when this
                # process closes its lifeline.
                start_new_session=True,
            )
        finally:
            os.close(ready_w)
        try:
            self._wait_ready(ready_r, timeout)
        except BaseException:
            self.stop()
            raise
        finally:
            os.close(ready_r)
        return self

    def _wait_ready(self, fd: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        data = b""
        while b"\n" not in data:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise IOCError(f"soft IOC not ready within {timeout:.0f} s")
            readable, _, _ = select.select([fd], [], [], remaining)
            if readable:
                chunk = os.read(fd, 64)
                if not chunk:  # the child closed the pipe without saying READY: it died
                    code = self.process.wait(timeout=5) if self.process else None
                    raise IOCError(f"soft IOC exited during start-up (status {code}); {self._last_words()}")
                data += chunk

    def _last_words(self) -> str:
        """What the IOC said before it died (dbLoadRecords names the file, line and undefined macro),
        without its colour codes and the Python traceback that follows."""
        if self._output_file is None:
            return "see its output above"
        self._output_file.flush()
        text = _ANSI.sub("", Path(self._output_file.name).read_bytes()[self._output_start :].decode(errors="replace"))
        lines = [line for line in text.split("Traceback (most recent call last)")[0].splitlines() if line.strip()]
        return "its last output lines:\n  " + "\n  ".join(lines[-OUTPUT_TAIL:])

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the IOC to exit (close its stdin, then SIGTERM), SIGKILL if it does not."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            _ask_to_exit(proc)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc is not None and proc.stdin is not None:
            proc.stdin.close()
        if self._output_file is not None:
            self._output_file.close()
            self._output_file = None

    def kill(self) -> None:
        """SIGKILL the IOC, as a crash or power loss would (a frozen one included)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.stop()

    def restart(self, timeout: float = 30.0) -> SoftIOC:
        """A reboot: the same databases on the same ports, with fresh record values."""
        self.stop()
        return self.start(timeout)

    def freeze(self) -> None:
        """SIGSTOP: the IOC keeps its sockets but answers nothing, like a hung host."""
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def __enter__(self) -> SoftIOC:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _ask_to_exit(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.kill(proc.pid, signal.SIGCONT)  # a frozen IOC cannot act on anything else
        proc.terminate()
    except ProcessLookupError:
        pass


# -- the child ------------------------------------------------------------------------------
class _LoadDb(argparse.Action):
    """``-d DB`` loads DB with the macros of the latest ``-m``, as softIoc does."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        value: object,
        option_string: Optional[str] = None,
    ) -> None:
        namespace.databases.append((value, namespace.macros))


def _parse(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m epics_bridge.ioc.softioc",
        description="Run a soft IOC (EPICS base + pvxs QSRV) serving PV Access only "
        "(Channel Access too when EPICS_IOC_IGNORE_SERVERS is set empty).",
    )
    parser.add_argument("-m", "--macros", default="", help="macros for the following -d, e.g. P=IOC:A:,N=2")
    parser.add_argument(
        "-d",
        "--database",
        dest="databases",
        action=_LoadDb,
        default=[],
        metavar="DB",
        help="database file to load (repeat; each uses the latest -m)",
    )
    parser.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--lifeline", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.databases:
        parser.error("at least one -d DB is needed")
    return args


def _wait_for_eof(stop: queue.SimpleQueue[None]) -> None:
    # os.read, not sys.stdin: a buffered reader still blocked at exit aborts the interpreter.
    while os.read(0, 4096):
        pass
    stop.put(None)


def main(argv: Optional[List[str]] = None) -> None:
    args = _parse(argv)
    os.environ.setdefault("PVXS_QSRV_ENABLE", "YES")
    os.environ.setdefault("EPICS_IOC_IGNORE_SERVERS", "rsrv")  # PV Access only unless the parent says
    os.environ.setdefault("EPICS_PVAS_INTF_ADDR_LIST", "127.0.0.1")

    warnings.filterwarnings("ignore", message="Module epics_bridge was already imported")
    import pvxslibs.path
    from epicscorelibs import ioc

    try:
        ioc.start_ioc(
            dbs=args.databases,
            extra_dbd_load=(("pvxsIoc.dbd", pvxslibs.path.dbd_path),),
            extra_dso_load=("pvxslibs.lib.pvxsIoc",),
        )
    except RuntimeError as exc:
        # EPICS prints its own errors (which file, which macro) from its errlog thread; flushed
        # first, they come before this line rather than inside a Python traceback.
        ioc.Com.errlogFlush()
        sys.exit(f"soft IOC: {exc}")
    # Not a threading.Event: its set() from a handler could wait for the lock its wait() holds.
    stop: queue.SimpleQueue[None] = queue.SimpleQueue()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.put(None))
    if args.lifeline:
        # A terminal's Ctrl-C reaches the whole process group: the parent stops us after its tasks.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        threading.Thread(target=_wait_for_eof, args=(stop,), daemon=True).start()
    if args.ready_fd is not None:
        os.write(args.ready_fd, b"READY\n")
        os.close(args.ready_fd)
    else:
        print("soft IOC running; Ctrl-C to stop", file=sys.stderr, flush=True)
    stop.get()


if __name__ == "__main__":
    main()
