"""The host service's supervisor: worker processes, each restarted alone when it ends.

One thread, one loop. Signal handlers do nothing but wake the loop (``signal.set_wakeup_fd``);
the loop then reads the workers' status pipes, answers HTTP (metrics and probes), reaps and
restarts workers, kills a worker that has gone silent, and speaks to systemd. Every task file was
imported and validated here before the first worker starts; each worker imports its own files,
in a process forked from a zygote that holds only what comes before p4p (:mod:`.zygote`; :mod:`.worker`
says why nothing that imported p4p is forked), or in a fresh interpreter. A worker that keeps failing
waits 1 s, 2 s, 4 s ... up to 60 s between attempts (reset once it stayed up 10 minutes); the
others never notice. The service itself ends only on SIGTERM/SIGINT, after every worker stopped.
What happens to a worker is decided by :mod:`.lifecycle` (its states and transitions); this loop
feeds it events and carries out the actions it returns.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

from loguru import logger

from ..exits import EXIT_OK
from ..observe.systemd import from_environment
from ..task import ConfigError, Task
from . import worker as worker_module
from .lifecycle import (
    KILL_GRACE,
    Back,
    Backoff,
    Event,
    Exited,
    Failed,
    Heard,
    Kill,
    Lifecycle,
    Phase,
    Remove,
    Replace,
    Retire,
    Spawn,
    State,
    Stop,
    Stopped,
    Terminate,
    Tick,
    describe,
    ordinal,
)
from .options import Options
from .worker import WorkerSpec
from .zygote import Adopted, Zygote, become_subreaper, reap_orphans

__all__ = ["Supervisor", "Backoff", "supervise"]

#: systemd's variables: the supervisor is the service's main process, workers must not notify.
_SYSTEMD_ONLY = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
#: The fewest workers worth a zygote: each worker shares about 9 MB of written pages with it, and
#: its own PSS is 16 MB among 10 workers, more among fewer (1000 tasks in 10 files: 361-365
#: against 440-444 MB PSS; in one file it measured 306 MB against 247-308 MB without).
ZYGOTE_FROM = 3
#: The loop wakes at least this often to look for silent workers; restarts due and systemd's
#: watchdog pings wake it when they are due, and everything else arrives on a file descriptor.
TICK = 2.0


#: A worker's process: one the supervisor started, or one the zygote forked and it adopted.
Process = Union[subprocess.Popen[bytes], Adopted]


@dataclass
class Worker:
    """What the supervisor knows of one worker process."""

    spec: WorkerSpec
    tasks: List[Task]
    #: Where it is in its lifecycle: only :meth:`Lifecycle.step` makes a new one.
    state: State = field(default_factory=State)
    process: Optional[Process] = None
    fd: Optional[int] = None
    buffer: bytes = b""
    #: The reason its process gave before ending (a ``fatal`` message), or why it could not start.
    last_words: Optional[str] = None
    health: Dict[str, Optional[str]] = field(default_factory=dict)
    ready: Dict[str, Tuple[bool, Optional[str]]] = field(default_factory=dict)
    #: The task files' text the worker was given: a reload that validated other text restarts it.
    code: Dict[str, Optional[str]] = field(default_factory=dict)
    #: The other user files it imported (helpers beside the task files), as (mtime, size) when it
    #: started: they come from disk, so a change of one means new code too.
    files: Dict[str, Tuple[int, int]] = field(default_factory=dict)
    #: While it imports its task files: how many tasks it has registered so far (None once started).
    registered: Optional[int] = None

    def changed_files(self, sources: Mapping[str, str]) -> List[str]:
        edited = [path for path, text in self.code.items() if sources.get(path) != text]
        return edited + [path for path, stamp in self.files.items() if _stamp(path) != stamp and path not in self.code]

    @property
    def pid(self) -> Optional[int]:
        return self.process.pid if self.process is not None else None

    @property
    def silence_limit(self) -> float:
        """Longer than the running worker's own watchdog takes to end it: past this, it cannot end
        itself (before its tasks run, the lifecycle's start timeout applies)."""
        return max(t.stall_timeout + t.max_stuck_cycles * t.heartbeat_period for t in self.tasks) + 5.0

    def unhealthy(self) -> Dict[str, str]:
        """Task -> why it is not ready now."""
        if not self.state.has_process:
            wait = max(0.0, self.state.start_at - time.monotonic())
            why = f"worker {self.spec.name} restarting in {wait:.0f} s"
            if self.state.last_exit:
                why += f" ({self.state.last_exit})"
            return {t: why for t in self.spec.tasks}
        if not self.state.up:
            return {t: f"worker {self.spec.name} starting" for t in self.spec.tasks}
        bad = {}
        for name in self.spec.tasks:
            ready, reason = self.ready.get(name, (True, None))
            if self.health.get(name):
                bad[name] = f"stuck: {self.health[name]}"
            elif not ready:
                bad[name] = reason or "not ready"
        return bad


class Supervisor:
    """Runs ``tasks`` in worker processes (grouped by ``isolation``): a service (start, stop, wait,
    ready) whose :meth:`wait` runs the supervisor's loop."""

    def __init__(
        self,
        tasks: Sequence[Task],
        isolation: str,
        worker_options: Mapping[str, Any],
        sources: Dict[str, str],
        *,
        stop_grace: float,
        start_timeout: float,
        endpoints: Any = None,
        on_ready: Optional[Callable[[], None]] = None,
        metrics: Any = None,
        reload_tasks: Optional[Callable[[], List[Task]]] = None,
        on_reload: Optional[Callable[[List[Task]], None]] = None,
    ) -> None:
        by_name = {t.name: t for t in tasks}
        self.isolation = isolation
        #: The text of each task file as it last validated (shared with the reloader, which updates it).
        self.sources = sources
        self.workers = [Worker(spec, [by_name[n] for n in spec.tasks]) for spec in worker_module.plan(tasks, isolation)]
        self.reload_tasks, self.on_reload = reload_tasks, on_reload
        self.worker_options = dict(worker_options)
        self.stop_grace = stop_grace
        self.lifecycle = Lifecycle(stop_grace=stop_grace, start_timeout=start_timeout)
        self.endpoints = endpoints
        self.metrics = metrics
        self.on_ready = on_ready
        self.selector = selectors.DefaultSelector()
        self.stopping = False
        self.loop_at = time.monotonic()
        self._ready_sent = False
        self._wake_r, self._wake_w = os.pipe()
        self.notifier = from_environment()
        self._watch_stop: Any = None
        #: A fresh interpreter with a worker's imports done, kept once some worker had to be started
        #: again (see :meth:`_keep_spare`).
        self._spare: Optional[_Spare] = None
        self._restarting = False
        #: Workers get the read end; its only write end is ours, so they see end-of-file when we die.
        self._lifeline_r, self._lifeline_w = os.pipe()
        #: Forks the workers once we are a subreaper (Linux); None: each a fresh interpreter.
        self._zygote: Optional[Zygote] = None
        #: Every worker's session (its pid) while we are a subreaper: processes a worker left behind
        #: are reaped by these; one is forgotten once neither its worker nor any process of it is left.
        self._sessions: Set[int] = set()
        #: A SIGCHLD came: look for such orphans (only then: the look opens files under /proc).
        self._child_ended = False
        self._restore: Callable[[], None] = lambda: None
        self._exit_status: Optional[int] = None

    # -- the loop --------------------------------------------------------------------------------
    def start(self) -> None:
        self._restore = self._install_signals()
        if len(self.workers) >= ZYGOTE_FROM and become_subreaper():
            self._zygote = Zygote(self._lifeline_r, _worker_env())
        if self.endpoints is not None:
            self.selector.register(self.endpoints.fileno(), selectors.EVENT_READ, "http")
        logger.info(
            "supervisor (pid {}): {} worker(s) for {} task(s)",
            os.getpid(),
            len(self.workers),
            sum(len(w.spec.tasks) for w in self.workers),
        )
        self._step(0.0)

    def stop(self) -> None:
        """Ask for a graceful stop of every worker; safe from a signal handler and any thread."""
        with contextlib.suppress(BlockingIOError):  # a full pipe: a wake-up is pending anyway
            os.write(self._wake_w, bytes([signal.SIGTERM]))

    def ready(self) -> bool:
        return not self.unhealthy()

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        """Run the loop until a stop is asked for, stop every worker, and return 0; None if
        ``timeout`` passed first (the loop runs on at the next call)."""
        if self._exit_status is not None:
            return self._exit_status
        until = None if timeout is None else time.monotonic() + timeout
        while not self.stopping:
            if until is not None and time.monotonic() >= until:
                return None
            self._step(TICK if until is None else min(TICK, max(0.0, until - time.monotonic())))
        try:
            self._stop()
        finally:
            if self._watch_stop is not None:
                self._watch_stop.set()
            self._restore()
            self.selector.close()
            os.close(self._wake_r)
            os.close(self._wake_w)
            os.close(self._lifeline_r)
            os.close(self._lifeline_w)
            if self._zygote is not None:
                self._zygote.close()
                become_subreaper(False)
        self._exit_status = EXIT_OK
        return self._exit_status

    def watch(self, folders: Sequence[Path]) -> None:
        """``--reload``: a saved ``*.py`` under ``folders`` does what SIGHUP does (watchfiles, with its
        debounce; WATCHFILES_FORCE_POLLING=1 where inotify is silent, e.g. network mounts)."""
        import threading

        import watchfiles

        stop = self._watch_stop = threading.Event()

        def run() -> None:
            for changes in watchfiles.watch(
                *folders, watch_filter=watchfiles.PythonFilter(), stop_event=stop, raise_interrupt=False
            ):
                logger.info("--reload: changed: {}", ", ".join(sorted(path for _, path in changes)))
                with contextlib.suppress(BlockingIOError):  # a full pipe: a wake-up is pending anyway
                    os.write(self._wake_w, bytes([signal.SIGHUP]))

        threading.Thread(target=run, name="reload-watch", daemon=True).start()
        logger.info("--reload: watching {} for changes (development only)", ", ".join(map(str, folders)))

    def _step(self, timeout: float) -> None:
        self.loop_at = time.monotonic()
        due = [at for w in self.workers if (at := w.state.wakes_at) is not None]
        if self.notifier is not None and self.notifier.interval is not None:
            due.append(self.notifier.next_ping)
        if due:
            timeout = max(0.0, min(timeout, min(due) - time.monotonic()))
        for key, _ in self.selector.select(timeout):
            if key.data == "signals":
                self._signals()
            elif key.data == "http":
                self.endpoints.handle()
            else:
                self._read(key.data)
        self._reap()
        if self.stopping:
            return
        for w in list(self.workers):  # silence, SIGKILL deadlines, starts due
            self._apply(w, Tick(w.silence_limit))
        self._notify()

    # -- signals -----------------------------------------------------------------------------------
    def _install_signals(self) -> Callable[[], None]:
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, "signals")
        previous_fd = signal.set_wakeup_fd(self._wake_w)
        sigs = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)
        previous = {sig: signal.signal(sig, _wake_only) for sig in sigs}

        def restore() -> None:
            signal.set_wakeup_fd(previous_fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    def _signals(self) -> None:
        try:
            data = os.read(self._wake_r, 512)
        except BlockingIOError:
            return
        for number in data:
            if number in (signal.SIGTERM, signal.SIGINT) and not self.stopping:
                logger.info("supervisor: {} received; stopping every worker", signal.Signals(number).name)
                self.stopping = True
            elif number == signal.SIGHUP:
                self.reload()
            elif number == signal.SIGCHLD:
                self._child_ended = True

    def reload(self) -> None:
        """SIGHUP (or a saved file under ``--reload``): re-read the task files; restart only the workers
        whose tasks or imported files changed, start added ones, stop removed ones. A file that no
        longer validates changes nothing: the error is logged and every worker keeps running."""
        if self.reload_tasks is None:
            logger.warning("supervisor: reload requested, but this service cannot re-read its task files")
            return
        if self.notifier is not None:
            self.notifier.reloading()
        try:
            tasks = self.reload_tasks()
        except ConfigError as exc:
            logger.error(
                "reload: the task files do not validate; everything keeps running as it was:\n  {}",
                str(exc).replace("\n", "\n  "),
            )
            if self.notifier is not None:
                self.notifier.reloaded()
            return
        by_name = {t.name: t for t in tasks}
        specs = {spec.name: spec for spec in worker_module.plan(tasks, self.isolation)}
        for w in list(self.workers):
            spec = specs.pop(w.spec.name, None)
            changed = w.changed_files(self.sources)
            if spec is None:
                logger.info("reload: worker {} removed (tasks {})", w.spec.name, ", ".join(w.spec.tasks))
                self._apply(w, Retire())
            elif spec != w.spec or changed or w.state.leaving:
                if spec != w.spec:
                    why = "its tasks changed"
                elif changed:
                    why = "changed: " + ", ".join(changed)
                else:
                    why = "its tasks are back"
                logger.info("reload: restarting worker {} ({})", w.spec.name, why)
                w.spec, w.tasks = spec, [by_name[n] for n in spec.tasks]
                self._apply(w, Replace())
            else:
                w.tasks = [by_name[n] for n in spec.tasks]
        for spec in specs.values():
            logger.info("reload: new worker {} (tasks {})", spec.name, ", ".join(spec.tasks))
            self.workers.append(Worker(spec, [by_name[n] for n in spec.tasks]))
        if self.on_reload is not None:
            self.on_reload(tasks)
        if self.notifier is not None:
            self.notifier.reloaded()

    # -- workers -------------------------------------------------------------------------------------
    def _apply(self, w: Worker, event: Event, pid: Optional[int] = None) -> None:
        """Feed ``event`` to the worker's lifecycle and carry out what it decides. ``pid``: of the
        process that ended, for an :class:`Exited` event (the worker no longer has it)."""
        w.state, actions = self.lifecycle.step(w.state, event, time.monotonic())
        for action in actions:
            if isinstance(action, Spawn):
                self._spawn(w)
            elif isinstance(action, Terminate):
                if action.silent is not None:
                    silent = f"silent for {action.silent:.0f} s"
                    if w.registered is not None:
                        silent += f" while importing its task files ({w.registered} task(s) registered, none since)"
                    logger.error("worker {} (pid {}) {}: ending it", w.spec.name, w.pid, silent)
                    w.last_words = w.last_words or silent
                if w.pid is not None:
                    _signal_group(w.pid, signal.SIGTERM)
            elif isinstance(action, Kill):
                if w.pid is not None:
                    _signal_group(w.pid, signal.SIGKILL)
            elif isinstance(action, Remove):
                self.workers.remove(w)
            elif isinstance(action, Back):
                logger.info("worker {} is back (pid {})", w.spec.name, w.pid)
            elif isinstance(action, Stopped):
                assert isinstance(event, Exited)  # only an exit reports one
                code = event.returncode
                logger.info(
                    "worker {} (pid {}) stopped ({})",
                    w.spec.name,
                    pid,
                    f"exit status {code}" if code is not None and code >= 0 else describe(code),
                )
            elif isinstance(action, Failed):
                if self.metrics is not None:
                    self.metrics.restarted(w.spec.tasks)
                logger.error(
                    "worker {} (pid {}, tasks {}) ended: {}{}; restarting it in {:g} s ({} failure in a row)",
                    w.spec.name,
                    pid,
                    ", ".join(w.spec.tasks),
                    action.how,
                    f" — {w.last_words}" if w.last_words else "",
                    action.delay,
                    ordinal(w.state.failures),
                )

    def _spawn(self, w: Worker) -> None:
        spare, self._spare = self._spare, None
        try:
            if spare is None or spare.process.poll() is not None:
                _discard(spare)
                spare = self._new_spare()
            assert spare.process.stdin is not None  # stdin=PIPE
            with spare.process.stdin as stdin:  # a pipe's buffer takes it at once; the spare reads it now
                stdin.write(worker_module.payload(w.spec, self.worker_options, spare.status_fd, self.sources))
        except OSError as exc:  # no process could be started, or the spare died meanwhile
            _discard(spare)
            w.last_words = f"cannot start a process: {exc}"
            self._exited(w, None)
            return
        w.process, w.fd, w.buffer = spare.process, spare.read_fd, b""
        if self._zygote is not None:  # only a subreaper adopts what a worker leaves behind
            self._sessions.add(spare.process.pid)
        w.code = {str(f): self.sources.get(str(f)) for f in w.spec.files}
        w.last_words, w.registered = None, 0
        w.health.clear()
        w.ready.clear()
        self.selector.register(spare.read_fd, selectors.EVENT_READ, w)
        logger.info("worker {} started (pid {}): {}", w.spec.name, w.pid, ", ".join(w.spec.tasks))
        self._keep_spare()

    def _keep_spare(self) -> None:
        """Have a spare ready, so a restart does not wait for its imports (numpy and p4p in a fresh
        interpreter, ~0.5 s, far more on a loaded host; p4p alone in a fork). Only from the first
        restart (a failure or a reload) on: a spare costs an idle worker's memory, which a service
        whose workers never end need not pay."""
        if not self._restarting or self._spare is not None or self.stopping:
            return
        try:
            self._spare = self._new_spare()
        except OSError as exc:
            logger.warning("supervisor: cannot start a spare worker process ({}); the next start waits", exc)

    def _new_spare(self) -> _Spare:
        """Forked by the zygote if it can, else a fresh interpreter (said once)."""
        if self._zygote is not None and self._zygote.failed is None:
            try:
                return _Spare.fork(self._zygote)
            except OSError as exc:
                logger.warning("supervisor: the zygote cannot fork workers ({}); starting fresh interpreters", exc)
        return _Spare.start(self._lifeline_r)

    def _read(self, w: Worker) -> None:
        assert w.fd is not None
        while True:
            try:
                chunk = os.read(w.fd, 65536)
            except BlockingIOError:
                break
            except OSError:  # os.read retries EINTR itself (PEP 475): anything else is a broken pipe
                chunk = b""
            if not chunk:  # the worker closed its end: it is gone, the reaper will say how
                self._close_pipe(w)
                break
            w.buffer += chunk
        *lines, w.buffer = w.buffer.split(b"\n")
        for line in lines:
            self._message(w, line)

    def _message(self, w: Worker, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            return
        event = message.get("event")
        if event == "started":
            w.files = {path: _stamp(path) for path in message.get("files", [])}
            w.registered = None
        elif event == "progress":
            w.registered = int(message["tasks"])
        self._apply(w, Heard(started=event == "started"))
        if event == "health":
            w.health[message["task"]] = message.get("reason")
        elif event == "ready":
            w.ready[message["task"]] = (bool(message["ready"]), message.get("reason"))
        elif event == "fatal":
            w.last_words = message["reason"]

    def _close_pipe(self, w: Worker) -> None:
        if w.fd is not None:
            self.selector.unregister(w.fd)
            os.close(w.fd)
            w.fd = None

    def _reap(self) -> None:
        if self._zygote is not None and self._child_ended:
            self._child_ended = False
            self._sessions = reap_orphans(self._sessions) | (self._sessions & {w.pid for w in self.workers})
        for w in list(self.workers):
            if w.process is None or w.process.poll() is None:
                continue
            if w.fd is not None:
                self._read(w)  # its last words are in the pipe
                self._close_pipe(w)
            self._exited(w, w.process.returncode)

    def _exited(self, w: Worker, returncode: Optional[int]) -> None:
        pid = w.pid
        w.process = None
        if self.metrics is not None and pid is not None:
            self.metrics.process_dead(pid)
        if not self.stopping:
            self._restarting = True
            self._keep_spare()  # importing while the backoff runs
        else:  # the stop may have been asked for in this very step, before it reached this worker:
            self._apply(w, Stop())  # its end is a stop, not a failure (no process left to signal)
        self._apply(w, Exited(returncode, w.last_words), pid)

    def _stop(self) -> None:
        """Every worker gets SIGTERM and the stop grace (plus time to clear Busy), then SIGKILL."""
        if self.notifier is not None:
            self.notifier.stopping()
        for w in list(self.workers):
            self._apply(w, Stop())
        deadline = time.monotonic() + self.stop_grace + KILL_GRACE
        while any(w.pid is not None for w in self.workers) and time.monotonic() < deadline:
            self._step(min(TICK, max(0.0, deadline - time.monotonic())))
        for w in self.workers:
            if w.process is not None:
                logger.error("worker {} (pid {}) did not stop in time: SIGKILL", w.spec.name, w.pid)
                _signal_group(w.process.pid, signal.SIGKILL)
                w.process.wait()
                w.process = None
        _discard(self._spare)
        self._spare = None
        logger.info("supervisor: every worker stopped")

    # -- health -----------------------------------------------------------------------------------
    def unhealthy(self) -> Dict[str, str]:
        """Task -> why it is not ready now (empty: every task of this instance serves)."""
        bad: Dict[str, str] = {}
        for w in self.workers:
            bad.update(w.unhealthy())
        return bad

    def alive(self) -> Optional[str]:
        """None while the supervisor does its job; else why restarting the service would help."""
        now = time.monotonic()
        if now - self.loop_at > 10 * TICK + 5.0:
            return f"the supervisor's loop has not run for {now - self.loop_at:.0f} s"
        stuck = [w.spec.name for w in self.workers if (at := w.state.kill_at) is not None and now - at > KILL_GRACE]
        if stuck:
            return f"worker(s) {', '.join(stuck)} survived SIGKILL for more than {KILL_GRACE:g} s"
        return None

    def status_line(self) -> str:
        total = sum(len(w.spec.tasks) for w in self.workers)
        running = sum(len(w.spec.tasks) for w in self.workers if w.state.up)
        parts = [f"{running}/{total} tasks running"]
        now = time.monotonic()
        for w in self.workers:
            if w.state.phase is Phase.BACKING_OFF:
                parts.append(
                    f"{w.spec.name} restarting in {max(0.0, w.state.start_at - now):.0f} s ({w.state.last_exit})"
                )
        stuck = [name for w in self.workers for name, why in w.health.items() if why]
        if stuck:
            parts.append("stuck: " + ", ".join(stuck))
        return "; ".join(parts)

    def _notify(self) -> None:
        if not self._ready_sent and all(w.state.settled for w in self.workers):
            self._ready_sent = True
            status = self.status_line()
            logger.info("supervisor: {}", status)
            if self.notifier is not None:
                self.notifier.announce_ready(status)
            if self.on_ready is not None:
                self.on_ready()
        if self.notifier is not None:
            self.notifier.report(self.status_line() if self._ready_sent else None, time.monotonic())


@dataclass
class _Spare:
    """A worker interpreter started ahead of need: imports done, waiting for its payload on stdin."""

    process: Process
    read_fd: int
    #: The status pipe's write end, by the number it has in the child.
    status_fd: int

    @classmethod
    def start(cls, lifeline: int) -> _Spare:
        read_fd, write_fd = os.pipe()
        try:
            # its own session: Ctrl-C reaches the supervisor only, and killpg reaches the worker's tree
            process = subprocess.Popen(
                worker_module.command(lifeline),
                env=_worker_env(),
                pass_fds=(write_fd, lifeline),
                stdin=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        os.set_blocking(read_fd, False)
        return cls(process, read_fd, write_fd)

    @classmethod
    def fork(cls, zygote: Zygote) -> _Spare:
        read_fd, write_fd = os.pipe()
        stdin_r, stdin_w = os.pipe()
        try:
            pid, status_fd = zygote.fork(stdin_r, write_fd)
        except OSError:
            os.close(read_fd)
            os.close(stdin_w)
            raise
        finally:
            os.close(write_fd)
            os.close(stdin_r)
        os.set_blocking(read_fd, False)
        return cls(Adopted(pid, stdin_w), read_fd, status_fd)


def _worker_env() -> Dict[str, str]:
    """Our environment without systemd's variables: only we speak to systemd."""
    return {k: v for k, v in os.environ.items() if k not in _SYSTEMD_ONLY}


def _discard(spare: Optional[_Spare]) -> None:
    """End a spare that will not be used: an empty payload makes it exit at once."""
    if spare is None:
        return
    with contextlib.suppress(OSError):
        if spare.process.stdin is not None:
            spare.process.stdin.close()
    try:
        spare.process.wait(timeout=KILL_GRACE)
    except subprocess.TimeoutExpired:
        spare.process.kill()
        spare.process.wait()
    os.close(spare.read_fd)


def _stamp(path: str) -> Tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (0, -1)
    return (st.st_mtime_ns, st.st_size)


def _wake_only(signum: int, frame: object) -> None:
    """The handler of every supervised signal: the wakeup fd already carries it to the loop."""


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    except PermissionError:
        os.kill(pid, sig)


def supervise(
    tasks: Sequence[Task],
    options: Options,
    sources: Dict[str, str],
    *,
    on_ready: Optional[Callable[[], None]] = None,
    reload_tasks: Optional[Callable[[], List[Task]]] = None,
    on_reload: Optional[Callable[[List[Task]], None]] = None,
    watch: Sequence[Path] = (),
) -> Supervisor:
    """Everything that can refuse to start, done before any worker exists: logging configured (the
    task files' names checked), the HTTP port bound. Each worker gets the options it needs for its
    own tasks (:meth:`Options.for_worker`)."""
    from ..observe.logs import configure

    configure(tasks, options.log_config(task_files=False))
    endpoints = metrics = None
    if options.metrics_port is not None:  # http.server and prometheus_client bring http.client and ssl: ~3 MB
        from ..observe.metrics import ServiceMetrics
        from .endpoints import Endpoints

        endpoints, metrics = Endpoints(options.metrics_port, options.metrics_addr), ServiceMetrics(tasks)
        logger.info("metrics and probes on http://{}:{}/metrics, /livez, /readyz", *endpoints.address)
    supervisor = Supervisor(
        tasks,
        options.isolation,
        options.for_worker(),
        sources,
        stop_grace=options.stop_grace,
        start_timeout=options.start_timeout,
        endpoints=endpoints,
        metrics=metrics,
        on_ready=on_ready,
        reload_tasks=reload_tasks,
        on_reload=on_reload,
    )
    if watch:
        supervisor.watch(watch)
    if endpoints is not None and metrics is not None:  # made together
        from .endpoints import health

        endpoints.route("/metrics", lambda: (200, "text/plain; version=0.0.4; charset=utf-8", metrics.render()))
        endpoints.route(
            "/livez",
            lambda: health(
                {"supervisor": why} if (why := supervisor.alive()) else {}, "ok: the supervisor's loop runs"
            ),
        )
        endpoints.route("/readyz", lambda: health(supervisor.unhealthy(), "ok: every task of this instance serves"))
    return supervisor
