"""systemd's notify protocol without libsystemd: READY, STATUS, WATCHDOG and STOPPING datagrams.

Under ``Type=notify`` systemd passes ``NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract
socket) and, with ``WatchdogSec=``, ``WATCHDOG_USEC``. The notifier says READY once every task
runs, keeps a one-line STATUS for ``systemctl status``, and pings the watchdog at half its period
only while every task is healthy. A stalled task (or a heartbeat thread that went silent) stops
the pings, so systemd also catches the hang the process's own watchdog cannot exit from. All
sending after READY happens on the notifier's own thread: heartbeat threads only record state.
The supervisor, which runs no task, speaks through the same notifier from its own loop
(:meth:`SystemdNotifier.announce_ready`, :meth:`~SystemdNotifier.report`, ``reloading``, ``stopping``).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Dict, List, Mapping, Optional

from loguru import logger

from ..engine.hooks import Hooks
from ..exits import EXIT_STUCK
from ..task import Task

__all__ = ["SystemdNotifier", "from_environment"]

#: A heartbeat thread that has not reported for this many of its periods (and at least
#: SILENT_MIN s) is hung itself: the process could not exit on its own, so systemd must act.
SILENT_PERIODS = 5
SILENT_MIN = 5.0
#: Longest a datagram may block (systemd not reading); sends happen off the task threads anyway.
SEND_TIMEOUT = 2.0


def notify_address(value: str) -> Optional[str]:
    """The socket address for ``NOTIFY_SOCKET``: '@' means the abstract namespace; None if unusable."""
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # e.g. systemd's newer "vsock:" form, which a service on the host does not get


def watchdog_interval(environ: Mapping[str, str]) -> Optional[float]:
    """Seconds between pings (half of WATCHDOG_USEC), or None when the watchdog is not ours."""
    pid = environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None


def from_environment(environ: Optional[Mapping[str, str]] = None) -> Optional[SystemdNotifier]:
    """A notifier when systemd asked for notifications (NOTIFY_SOCKET set), else None."""
    environ = os.environ if environ is None else environ
    value = environ.get("NOTIFY_SOCKET")
    if not value:
        return None
    address = notify_address(value)
    if address is None:
        logger.warning("NOTIFY_SOCKET={!r} is neither a path nor an @abstract name: not notifying", value)
        return None
    return SystemdNotifier(address, watchdog_interval(environ))


class SystemdNotifier(Hooks):
    """READY=1 at start, STATUS= on change, WATCHDOG=1 while healthy, STOPPING=1 on a graceful stop."""

    def __init__(self, address: str, interval: Optional[float]) -> None:
        self.address = address
        self.interval = interval
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.settimeout(SEND_TIMEOUT)
        self._lock = threading.Lock()
        self._tasks: List[Task] = []
        self._stuck: Dict[str, int] = {}
        self._not_ready: Dict[str, str] = {}  # task name -> why it does not serve (yet)
        self._last_report: Dict[str, float] = {}
        self._status = ""
        #: When the next WATCHDOG=1 is due (monotonic seconds): the supervisor's loop wakes for it.
        self.next_ping = 0.0
        self._wake = threading.Event()
        self._done = threading.Event()
        self._send_failed = False
        self._thread = threading.Thread(target=self._run, name="systemd-notify", daemon=True)

    # -- engine events -------------------------------------------------------------------------------
    def started(self, tasks: List[Task]) -> None:
        now = time.monotonic()
        with self._lock:
            self._tasks = list(tasks)
            self._last_report = {task.name: now for task in tasks}
        self.announce_ready(self._summary(self._unhealthy(now)))
        self._thread.start()

    def heartbeat(self, task: Task, stuck: int, reason: Optional[str]) -> None:
        with self._lock:
            changed = bool(stuck) != bool(self._stuck.get(task.name))
            self._stuck[task.name] = stuck
            self._last_report[task.name] = time.monotonic()
        if changed:
            self._wake.set()

    def ready(self, task: Task, ready: bool, reason: Optional[str]) -> None:
        with self._lock:
            if ready:
                self._not_ready.pop(task.name, None)
            else:
                self._not_ready[task.name] = reason or "not ready"
        self._wake.set()

    def stopping(self) -> None:
        self._finish()
        self.send("STOPPING=1", "STATUS=stopping: finishing running cycles")

    def close(self) -> None:
        self._finish()
        self._socket.close()

    def fatal(self, task: Task, reason: str) -> None:
        self._finish()
        self.send(f"STATUS=watchdog: task {task.name} stuck ({reason}); exiting with status {EXIT_STUCK}")

    # -- the service's states: the engine's events above and the supervisor's loop both say them here --
    def announce_ready(self, status: str) -> None:
        """READY=1 with the first status line."""
        self._status = status
        self.send("READY=1", f"STATUS={status}")

    def report(self, status: Optional[str], now: float, healthy: bool = True) -> None:
        """STATUS= when ``status`` changed (None: nothing to say yet) and WATCHDOG=1 when a ping is
        due and everything is ``healthy``, in one datagram."""
        messages = []
        if status is not None and status != self._status:
            self._status = status
            messages.append(f"STATUS={status}")
        if self.interval is not None and now >= self.next_ping:
            self.next_ping = now + self.interval
            if healthy:
                messages.append("WATCHDOG=1")
        if messages:
            self.send(*messages)

    def reloading(self) -> None:
        """A reload begins (systemd's ``Type=notify-reload`` wants the time with it); READY=1 ends it."""
        self.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def reloaded(self) -> None:
        self.send("READY=1")

    # -- the notifier thread -------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._done.is_set():
            now = time.monotonic()
            unhealthy = self._unhealthy(now)
            self.report(self._summary(unhealthy), now, healthy=not unhealthy)
            # Wake for the next ping, a change of health, or at least every second (silent heartbeats).
            self._wake.wait(min(1.0, max(0.0, self.next_ping - now)) if self.interval is not None else 1.0)
            self._wake.clear()

    def _finish(self) -> None:
        """No datagram from the thread after this returns (a ping after STOPPING would be noise)."""
        self._done.set()
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(SEND_TIMEOUT + 1.0)

    # -- health -------------------------------------------------------------------------------------
    def _unhealthy(self, now: float) -> Dict[str, str]:
        """Task name -> why it is not healthy: stuck heartbeat periods, or a silent heartbeat thread."""
        with self._lock:
            bad = {}
            for task in self._tasks:
                silent = now - self._last_report.get(task.name, now)
                if self._stuck.get(task.name):
                    bad[task.name] = "stuck"
                elif silent > max(SILENT_PERIODS * task.heartbeat_period, SILENT_MIN):
                    bad[task.name] = "heartbeat silent"
            return bad

    def _summary(self, unhealthy: Dict[str, str]) -> str:
        running = f"{len(self._tasks)} task(s) running"
        with self._lock:
            not_ready = f"; {_listed(self._not_ready, 'not ready')}" if self._not_ready else ""
        if not unhealthy:
            return f"{running}, none stuck{not_ready}"
        paused = "; watchdog pings paused" if self.interval is not None else ""
        return f"{running}, {_listed(unhealthy, 'stuck')}{paused}{not_ready}"

    # -- the socket ----------------------------------------------------------------------------------
    def send(self, *assignments: str) -> None:
        """One datagram of newline-separated VAR=value lines; a failure is logged once, never raised."""
        try:
            self._socket.sendto("\n".join(assignments).encode(), self.address)
        except OSError as exc:
            if not self._send_failed:
                self._send_failed = True
                logger.warning("cannot notify systemd at {!r}: {}", self.address.replace("\0", "@"), exc)


def _listed(reasons: Dict[str, str], what: str, shown: int = 5) -> str:
    """'N <what>: a (why), b (why) and M more', for the status line."""
    names = ", ".join(f"{name} ({why})" for name, why in list(reasons.items())[:shown])
    more = f" and {len(reasons) - shown} more" if len(reasons) > shown else ""
    return f"{len(reasons)} {what}: {names}{more}"
