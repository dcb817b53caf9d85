"""Who serves a prefix: the ``$(P)Owner`` record of ``db/bridge.db``.

Two daemons answering one Trigger would run every cycle twice (a migration with the old daemon
still running, one task folder on two hosts, two replicas during a rolling update). So a task
claims its prefix before it serves, by writing ``host:pid:start-time`` into ``$(P)Owner``, and a
newcomer that finds another daemon's claim waits. A claim only counts while its holder is alive,
judged by the IOC itself: ``$(P)HeartbeatAge`` (seconds since the last pulse) must stay below
:attr:`Ownership.stale_after` (sooner for a holder on this host whose process has ended). A
crashed or killed holder stops pulsing, so its successor (a restart with a new pid, or the waiting
newcomer) takes over seconds later without anyone clearing the record; a graceful stop clears it,
and the successor takes over at once.

The holder watches the record (a monitor, no polling): when another daemon's name appears in it
(two started in the same instant, or this one was stalled long enough to be taken over), it stops
serving and waits like a newcomer. An IOC restart empties the record; the holder writes its
claim again. An IOC without the record (an older ``db/bridge.db``) cannot arbitrate: the task
says so once and serves.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any, Callable, Dict, Optional, Tuple

from ..io import BridgeIO, PVError
from ..task import Task
from ..values import to_python

__all__ = ["Ownership", "owner_token"]


def owner_token() -> str:
    """``host:pid:start-time`` of this process (UTC, to the second): what it writes into Owner."""
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return f"{socket.gethostname()}:{os.getpid()}:{started}"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def owner_label(token: str) -> str:
    """``host:pid`` of a token, as messages name an owner."""
    return ":".join(token.split(":")[:2])


class Ownership:
    """One task's claim on its prefix. Only the loop thread calls it."""

    def __init__(self, task: Task, io: BridgeIO, log: Any, wake: Callable[[], None]) -> None:
        self.io, self.log = io, log
        self._wake = wake  # called on p4p's network thread: queues :meth:`drain` on the loop thread
        self.pv = task.prefix + "Owner"
        self.age_pv = task.prefix + "HeartbeatAge"
        self.token = owner_token()
        #: A holder whose heartbeat has been silent this long (s) is gone: its claim lapses. Long
        #: enough that a live holder on a loaded host keeps its claim; as long as bridge.db's
        #: HeartbeatAge alarm takes (HBTMO, 5 s) for the usual 1 s period.
        self.stale_after = max(5.0, 3 * task.heartbeat_period)
        #: The same for a holder on this host whose process is known to have ended.
        self.local_stale = max(2.0, 2 * task.heartbeat_period)
        self.timeout = min(1.0, task.timeout)
        #: Whether the IOC has the Owner record (None until the first complete handshake).
        self.supported: Optional[bool] = None
        self.held = False
        self._holder: Optional[str] = None  # the record's value, as the monitor last told it
        self._monitor: Any = None

    @property
    def names(self) -> Tuple[str, str]:
        """The PVs the handshake round reads for the verdict."""
        return self.pv, self.age_pv

    def verdict(self, values: Dict[str, Any]) -> Optional[str]:
        """The live holder that keeps this task from serving (its token), or None when it may claim.

        ``values``: the raw values of one handshake round, :attr:`names` included if they answered.
        """
        if self.pv not in values or self.age_pv not in values:
            if self.supported is None:
                self.log.info(
                    "the IOC has no {} record (db/bridge.db before the owner record): a second "
                    "daemon serving this prefix cannot be detected",
                    self.pv,
                )
            self.supported = False
            return None
        self.supported = True
        holder, age = str(to_python(values[self.pv]) or ""), float(to_python(values[self.age_pv]))
        if not holder or holder == self.token:
            return None
        gone = self._gone(holder, age)
        if gone:
            self.log.warning("taking over: {} names {}, {}: it is gone", self.pv, holder, gone)
            return None
        return holder

    def _gone(self, holder: str, age: float) -> Optional[str]:
        """Why ``holder``'s claim has lapsed, or None while it stands.

        A holder on this host whose process has ended (a crashed or killed worker: its restart
        is here) lapses once its heartbeat has missed two periods; the silence is required too,
        since a container with the host's name but its own pid namespace may hold a live claim.
        Any other holder lapses after :attr:`stale_after` s of silence.
        """
        if age >= self.stale_after:
            return f"whose heartbeat has been silent for {age:g} s (the limit is {self.stale_after:g} s)"
        host, _, rest = holder.partition(":")
        pid = rest.partition(":")[0]
        if host == socket.gethostname() and pid.isdigit() and age >= self.local_stale and not _running(int(pid)):
            return f"whose process {pid} on this host has ended (heartbeat silent for {age:g} s)"
        return None

    def claim(self, busy_pv: str, heartbeat: Dict[str, Any]) -> Tuple[Optional[str], Any]:
        """Write this daemon's token, then read it back with Busy in one round.

        ``heartbeat``: the Heartbeat PV and the value it holds, written with the claim so that
        HeartbeatAge starts from 0 (the first pulse may be a period away, and a newcomer must not
        find the fresh claim stale). Returns (another holder that won a simultaneous claim, or
        None; Busy's value). PVError when the IOC does not take the claim.
        """
        if not self.supported:
            return None, self.io.get(busy_pv)
        self.io.put({self.pv: self.token, **heartbeat})
        back = self.io.get([self.pv, busy_pv])
        if back[self.pv] != self.token:
            return back[self.pv], back[busy_pv]
        self.held = True
        self._holder = self.token
        if self._monitor is None:
            self._monitor = self.io.monitor(self.pv, self._wake)
        return None, back[busy_pv]

    def drain(self) -> None:
        """Take in the record's updates (on the loop thread). A disconnect is skipped: the
        reconnect delivers the value then current."""
        for update in self._monitor.pop():
            if not isinstance(update, Exception):
                self._holder = str(to_python(update) or "")

    def lost(self) -> Optional[str]:
        """The daemon that took the prefix since this one claimed it, or None while it holds it.

        An emptied record (the IOC restarted, someone cleared it) is claimed again. A foreign
        token seen by the monitor is confirmed with one fresh read, since an update posted before
        this daemon's own claim may arrive after it.
        """
        holder = self._holder
        if not self.held or holder is None or holder == self.token:
            return None
        try:
            if not holder:
                self.io.put({self.pv: self.token})
                self.log.info("{} was empty (an IOC restart?): claimed again", self.pv)
                self._holder = self.token
                return None
            holder = self.io.get(self.pv, timeout=self.timeout)
        except PVError as exc:
            self.log.warning("could not check {}: {}", self.pv, exc)
            return None
        if holder in ("", self.token):
            return None
        self.held = False
        return str(holder)

    def release(self) -> None:
        """Clear the record on a graceful stop, if it still names this daemon: a successor then
        serves at once instead of waiting for the heartbeat to go stale."""
        if not self.held:
            return
        self.held = False
        try:
            if self.io.get(self.pv, timeout=self.timeout) == self.token:
                self.io.put({self.pv: ""}, timeout=self.timeout)
        except PVError as exc:
            self.log.warning("could not release {}: {}", self.pv, exc)

    def close(self) -> None:
        if self._monitor is not None:
            self._monitor.close()
            self._monitor = None
