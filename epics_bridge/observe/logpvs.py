"""Log PVs: each task's recent log lines on its IOC, for operators' displays (``db/bridge-logs.db``).

When the IOC serves ``{main}InfoLog``, ``{main}WarningLog``, ``{main}ErrorLog`` and ``{main}LogLevel``,
the task's lines at or above LogLevel are published there: DEBUG and INFO lines to InfoLog, WARNING
to WarningLog, ERROR and CRITICAL to ErrorLog, each PV holding its recent lines (``{main}LogLines``,
default 20) joined by newlines, newest last. An IOC without them costs one warning in the task's
log at start-up and nothing more. A kind's PV (and its NELM) is first asked for with the task's first
line of that kind: each channel costs ~5 KB of the worker, and most tasks never log an error; an
IOC that lacks just that PV costs one warning then, and the other kinds are still shown.

Logging must never wait for the network, so the loguru sink only appends the record to a bounded
queue (dropping the oldest, counted, when the IOC takes them too slowly); one publisher thread per
process turns queued records into text and writes it with its own p4p context, coalescing
everything that arrived while a write was under way into the next one. LogLevel is followed by a
monitor that only wakes that thread, which reads the new value itself.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from typing import TYPE_CHECKING, Any, Counter, Deque, Dict, List, Optional, Sequence, Set, Tuple

from loguru import logger
from p4p.client.thread import Context

from ..engine.hooks import Hooks
from ..io import BridgeIO, Monitor, PVError
from ..task import Task
from ..values import to_python
from .logs import LEVELS, visible

if TYPE_CHECKING:
    from loguru import Record

__all__ = ["LogPVs", "fit"]

KINDS = ("InfoLog", "WarningLog", "ErrorLog")
LEVEL_PV = "LogLevel"
LINES_PV = "LogLines"
#: loguru's level numbers of LogLevel's choices, by index (DEBUG 10 ... ERROR 40).
LEVEL_NOS = tuple(logger.level(name).no for name in LEVELS)
DEFAULT_LINES = 20
#: A line longer than this is cut: one stack dump should not push every other line out of view.
MAX_LINE = 300
#: Records waiting for the publisher, at least; beyond the bound the oldest are dropped (and counted).
QUEUE_SIZE = 1000
PROBE_TIMEOUT = 2.0
PUT_TIMEOUT = 2.0
#: Seconds before an IOC that did not answer is asked again (probe or write).
RETRY = 5.0
#: LogLevel changes said at INFO per task, at most, within LEVEL_NOTE_WINDOW seconds; more go to
#: DEBUG, so a script (or an operator) toggling it cannot flood the very log it tunes.
LEVEL_NOTES = 5
LEVEL_NOTE_WINDOW = 60.0
_NEVER = 1 << 30


def fit(lines: Sequence[str], capacity: Optional[int]) -> str:
    """The newest ``lines`` whose newline-joined UTF-8 text fits ``capacity`` bytes, oldest first.

    The server cuts a longer text at its end, which would lose the newest lines; a single line too
    long on its own is cut here at its end instead.
    """
    if capacity is None:
        return "\n".join(lines)
    kept: List[str] = []
    used = -1  # no newline before the first line
    for line in reversed(lines):
        used += len(line.encode()) + 1
        if used > capacity:
            break
        kept.append(line)
    if not kept and lines:
        return lines[-1].encode()[:capacity].decode(errors="ignore")
    return "\n".join(reversed(kept))


def _kind(level_no: int) -> str:
    return KINDS[2] if level_no >= LEVEL_NOS[3] else KINDS[1] if level_no >= LEVEL_NOS[2] else KINDS[0]


def _line(record: Dict[str, Any]) -> str:
    text = record["message"]
    exception = record["exception"]
    if exception is not None and exception.type is not None:
        text += f" [{exception.type.__name__}: {exception.value}]"
    text = " | ".join(text.splitlines())
    if len(text) > MAX_LINE:
        text = text[: MAX_LINE - 1] + "…"
    when = record["time"]
    return visible(f"{when:%Y-%m-%d %H:%M:%S}.{when.microsecond // 1000:03d} {record['level'].name} {text}")


class _TaskLogs:
    """One task's log PVs and the lines they show. Touched by the publisher thread only."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.pvs = {kind: task.prefix + kind for kind in KINDS}
        self.level_pv = task.prefix + LEVEL_PV
        self.lines: Dict[str, Deque[str]] = {kind: collections.deque(maxlen=DEFAULT_LINES) for kind in KINDS}
        #: Bytes each kind's PV holds, once it was first needed (None: the IOC gives no NELM).
        self.capacity: Dict[str, Optional[int]] = {}
        #: Kinds whose PV the IOC does not serve (their lines stay in the files).
        self.absent: Set[str] = set()
        self.dirty: Set[str] = set()
        #: None until the probe has found out whether the IOC serves the log PVs.
        self.served: Optional[bool] = None
        self.level: Optional[int] = None
        self.retry_at = 0.0
        self.failing = False
        self.reconnecting = False
        self.level_notes: Deque[float] = collections.deque(maxlen=LEVEL_NOTES)  # when changes were said at INFO
        self.subscription: Optional[Monitor] = None
        self.log = logger.bind(task=task.name)

    @property
    def required(self) -> List[str]:
        return [*self.pvs.values(), self.level_pv]

    @property
    def unsized(self) -> List[str]:
        """The kinds with lines to show whose PV was not asked about yet."""
        return [kind for kind in self.dirty if kind not in self.capacity and kind not in self.absent]

    def configure(self, values: Dict[str, Any]) -> None:
        """Apply what the IOC says: lines to keep (LogLines)."""
        lines = values.get(self.task.prefix + LINES_PV)
        lines = to_python(lines) if lines is not None else DEFAULT_LINES
        self.lines = {kind: collections.deque(old, maxlen=max(1, int(lines))) for kind, old in self.lines.items()}
        self.dirty = {kind for kind in KINDS if self.lines[kind]}

    def size(self, kind: str, values: Dict[str, Any]) -> None:
        """Apply what the IOC said of one kind's PV (and its NELM), which it serves."""
        nelm = values.get(self.pvs[kind] + ".NELM")
        nelm = to_python(nelm) if nelm is not None else None
        self.capacity[kind] = int(nelm) - 1 if nelm else None  # room for the terminating NUL


class LogPVs(Hooks):
    """Publishes each task's log lines to its log PVs. Build it before the runner starts (lines from
    then on are kept until the IOC has been asked), and :meth:`close` it after the runner stopped."""

    def __init__(self, tasks: Sequence[Task], queue_size: Optional[int] = None) -> None:
        self._logs = {task.name: _TaskLogs(task) for task in tasks}
        #: Threshold per task whose lines are wanted; replaced, never mutated (read by any thread).
        self._levels: Dict[str, int] = {name: LEVEL_NOS[1] for name in self._logs}
        self._queue: Deque[Tuple[str, Dict[str, Any]]] = collections.deque()
        # Room for every task to fill its three PVs: the start-up summaries of hundreds of tasks are
        # logged before the publisher thread even starts.
        self._queue_size = queue_size or max(QUEUE_SIZE, len(KINDS) * DEFAULT_LINES * len(self._logs))
        self._dropped: Counter[str] = collections.Counter()
        #: Lines that could not be turned into text (said once, the first time).
        self.unshown = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._handler: Optional[int] = None
        self._handler_level: Optional[int] = 0  # none yet: _retune adds it
        self._retune()
        self._thread = threading.Thread(target=self._run, name="log-pvs", daemon=True)
        self._io: Optional[BridgeIO] = None

    # -- hooks and life cycle (runner thread) ------------------------------------------------------
    def started(self, tasks: List[Task]) -> None:
        self._thread.start()

    def close(self, timeout: float = PUT_TIMEOUT + 1.0) -> None:
        """Publish what is queued (for up to ``timeout`` s), then stop."""
        self._closing.set()
        self._wake.set()
        if self._thread.ident is not None:
            self._thread.join(timeout)
        handler, self._handler = self._handler, None
        if handler is not None:
            with contextlib.suppress(ValueError):  # the publisher may have removed it, if it outlived join
                logger.remove(handler)

    # -- the loguru side (any thread, must not block) -----------------------------------------------
    def _wanted(self, record: Record) -> bool:
        return record["level"].no >= self._levels.get(record["extra"].get("task", ""), _NEVER)

    def _sink(self, message: Any) -> None:
        record = message.record
        with self._lock:
            if len(self._queue) >= self._queue_size:
                self._dropped[self._queue.popleft()[0]] += 1
            self._queue.append((record["extra"]["task"], record))
        self._wake.set()

    def _retune(self) -> None:
        """Keep the sink's own level at the lowest one asked for: below every task's level, loguru
        never even builds the record (a DEBUG line costs ~0.2 us instead of ~7 us)."""
        lowest = min(self._levels.values(), default=None)
        if lowest == self._handler_level:
            return
        old, self._handler_level = self._handler, lowest
        self._handler = (
            None
            if lowest is None
            else logger.add(self._sink, level=lowest, filter=self._wanted, format=lambda record: "")
        )
        if old is not None:
            logger.remove(old)

    # -- the publisher thread -----------------------------------------------------------------------
    @property
    def io(self) -> BridgeIO:
        """The publisher thread's own IO, made when that thread starts."""
        assert self._io is not None, "used on the publisher thread only"
        return self._io

    def _run(self) -> None:
        self._io = BridgeIO(Context("pva", nt=False), timeout=PUT_TIMEOUT)
        try:
            while True:
                closing = self._closing.is_set()
                if not closing:
                    self._probe()
                self._apply_levels()
                self._collect()
                self._publish()
                if closing:
                    return
                self._wake.wait(self._next_wake())
                self._wake.clear()
        except Exception:
            logger.opt(exception=True).error("log PV publisher failed; log lines now go to the files only")
        finally:
            for logs in self._logs.values():
                if logs.subscription is not None:
                    logs.subscription.close()
            self._io.close()

    def _next_wake(self) -> Optional[float]:
        waiting = [logs.retry_at for logs in self._logs.values() if logs.served is None or (logs.served and logs.dirty)]
        return max(0.0, min(waiting) - time.monotonic()) if waiting else None

    def _probe(self) -> None:
        """Ask the IOC, once it answers for a task at all, whether it serves that task's log PVs.

        Only LogLevel (followed) and LogLines are asked for here; a kind's PV and its NELM are asked
        for on its first line (see :meth:`_size`): each channel costs ~5 KB of every worker, and
        most tasks never log a warning or an error."""
        now = time.monotonic()
        due = [logs for logs in self._logs.values() if logs.served is None and logs.retry_at <= now]
        if not due:
            return
        for logs in due:
            logs.retry_at = now + RETRY  # the IOC does not answer yet: ask again later
        names = [pv for logs in due for pv in (logs.level_pv, logs.task.prefix + LINES_PV)]
        values, _ = self.io.survey(names, timeout=PROBE_TIMEOUT)
        served = [logs for logs in due if logs.level_pv in values]
        unsure = [logs for logs in due if logs.level_pv not in values]
        if unsure:  # no LogLevel: is the IOC down, or are the log PVs not loaded?
            _, missing = self.io.survey(
                [pv for logs in unsure for pv in (logs.task.pvs.busy, *logs.required)], timeout=PROBE_TIMEOUT
            )
            for logs in unsure:
                if logs.task.pvs.busy not in missing:
                    self._unserved(logs, [pv for pv in logs.required if pv in missing])
        for logs in served:
            logs.configure(values)
            logs.served = True
            logs.retry_at = 0.0
            # p4p's network thread only wakes this thread, which pops the LogLevel updates itself.
            logs.subscription = self.io.monitor(logs.level_pv, self._wake.set)

    def _unserved(self, logs: _TaskLogs, absent: List[str]) -> None:
        logs.served = False
        self._levels = {name: no for name, no in self._levels.items() if name != logs.task.name}
        self._retune()
        what = "no log PVs" if len(absent) == len(logs.required) else "only some log PVs"
        logs.log.warning(
            "the IOC serves {} (missing: {}); log lines go to the log files only (load "
            "db/bridge-logs.db with P={} to have them)",
            what,
            ", ".join(absent),
            logs.task.prefix,
        )

    def _apply_levels(self) -> None:
        for logs in self._logs.values():
            for value in logs.subscription.pop() if logs.subscription is not None else ():
                self._apply_level(logs, value)

    def _apply_level(self, logs: _TaskLogs, value: Any) -> None:
        if isinstance(value, Exception):
            logs.reconnecting = True
            return
        if logs.reconnecting:  # the IOC may have rebooted with empty log PVs: show our lines again
            logs.reconnecting = False
            logs.dirty.update(kind for kind in KINDS if logs.lines[kind])
        index = to_python(value)
        if not 0 <= index < len(LEVEL_NOS):
            logs.log.warning("{} = {} is not one of {}: ignored", logs.level_pv, index, "/".join(LEVELS))
            return
        if LEVEL_NOS[index] != logs.level:
            logs.level = LEVEL_NOS[index]
            self._levels = {**self._levels, logs.task.name: logs.level}
            self._retune()
            now, notes = time.monotonic(), logs.level_notes
            loud = len(notes) < LEVEL_NOTES or now - notes[0] >= LEVEL_NOTE_WINDOW
            if loud:
                notes.append(now)
            logs.log.log(
                "INFO" if loud else "DEBUG", "log PVs: publishing {} and above ({})", LEVELS[index], logs.level_pv
            )

    def _collect(self) -> None:
        with self._lock:
            queued, self._queue = self._queue, collections.deque()
            dropped, self._dropped = self._dropped, collections.Counter()
        for name, record in queued:
            logs = self._logs[name]
            if logs.served is not False:
                try:
                    line = _line(record)
                except Exception as exc:  # one line's trouble is that line's alone
                    self._unshown(logs, exc)
                    continue
                kind = _kind(record["level"].no)
                if kind not in logs.absent:
                    logs.lines[kind].append(line)
                    logs.dirty.add(kind)
        for name, count in dropped.items():
            self._logs[name].log.warning(
                "{} log line(s) not published to the log PVs: the IOC took them too slowly (they are in the log file)",
                count,
            )

    def _unshown(self, logs: _TaskLogs, exc: Exception) -> None:
        self.unshown += 1
        if self.unshown == 1:
            logs.log.warning(
                "a log line could not be shown on the log PVs ({!r}); such lines are skipped, the others published",
                exc,
            )

    def _size(self, unsized: List[_TaskLogs], now: float) -> None:
        """Ask, in one round, for the kind PVs (and their NELM) that first have lines to show. One
        that does not answer while its task's LogLevel does is not served: said once, its lines
        stay in the files; when LogLevel does not answer either, the IOC is away: asked again later."""
        if not unsized:
            return
        asked = [(logs, kind) for logs in unsized for kind in logs.unsized]
        names = [pv for logs, kind in asked for pv in (logs.pvs[kind], logs.pvs[kind] + ".NELM")]
        values, _ = self.io.survey([*names, *(logs.level_pv for logs in unsized)], timeout=PROBE_TIMEOUT)
        for logs, kind in asked:
            if logs.pvs[kind] in values:
                logs.size(kind, values)
            elif logs.level_pv in values:
                logs.absent.add(kind)
                logs.dirty.discard(kind)
                logs.log.warning(
                    "the IOC does not serve {}; those lines go to the log files only (load db/bridge-logs.db "
                    "with P={} to have them)",
                    logs.pvs[kind],
                    logs.task.prefix,
                )
            else:
                logs.retry_at = now + RETRY

    def _publish(self) -> None:
        """One write of every changed PV; a task whose IOC did not take it is retried after RETRY s."""
        now = time.monotonic()
        ready = [logs for logs in self._logs.values() if logs.served and logs.dirty and logs.retry_at <= now]
        self._size([logs for logs in ready if logs.unsized], now)
        ready = [logs for logs in ready if logs.retry_at <= now]
        batch = {
            logs.pvs[kind]: fit(logs.lines[kind], logs.capacity[kind])
            for logs in ready
            for kind in logs.dirty
            if kind in logs.capacity
        }
        if not batch:
            return
        try:
            self.io.put(batch)
            failures: Dict[str, BaseException] = {}
        except PVError as exc:
            failures = exc.failures
        for logs in ready:
            failed = [pv for pv in logs.pvs.values() if pv in failures]
            if failed:
                logs.retry_at = now + RETRY
                if not logs.failing:
                    logs.log.warning(
                        "could not write the log PVs ({}); retrying every {:g} s",
                        PVError("put", {pv: failures[pv] for pv in failed}),
                        RETRY,
                    )
                logs.failing = True
            else:
                logs.dirty.clear()
                if logs.failing:
                    logs.log.info("log PVs written again")
                logs.failing = False
