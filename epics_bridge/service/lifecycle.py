"""One worker's lifecycle as named states and pure transitions: (state, event, now) -> (state, actions).

The supervisor owns the processes, the pipes and the log; this module decides. It reads no clock,
sends no signal and starts nothing: :meth:`Lifecycle.step` is given the time and returns what to
do, so tests drive every path (a crash, a silent worker, the backoff and its reset, a reload, a
stop) with a fake clock and no process at all. See docs/supervisor.md for the table.
"""

from __future__ import annotations

import enum
import signal
from dataclasses import dataclass, replace
from typing import List, Optional, Tuple, Union

from ..exits import EXIT_CONFIG, EXIT_OK, EXIT_STUCK

__all__ = [
    "Backoff",
    "Phase",
    "Then",
    "Event",
    "Action",
    "State",
    "Lifecycle",
    "Tick",
    "Heard",
    "Exited",
    "Replace",
    "Retire",
    "Stop",
    "Spawn",
    "Terminate",
    "Kill",
    "Remove",
    "Stopped",
    "Failed",
    "Back",
    "describe",
    "ordinal",
    "KILL_GRACE",
]

#: Seconds between a SIGTERM to a worker's group and the SIGKILL that follows if it is still there.
KILL_GRACE = 5.0


@dataclass(frozen=True)
class Backoff:
    """Delay before restarting a worker after its n-th failure in a row."""

    first: float = 1.0
    cap: float = 60.0
    #: A worker that stayed up this long starts counting its failures afresh.
    reset_after: float = 600.0

    def delay(self, failures: int) -> float:
        return min(self.cap, self.first * 2.0 ** max(0, failures - 1))


class Phase(enum.Enum):
    """Where a worker is; exactly one at a time."""

    #: No process; the next start is due at :attr:`State.start_at` (a new worker's is at once).
    BACKING_OFF = "backing off"
    #: A process runs but has not yet said that its tasks run.
    STARTING = "starting"
    #: The process said ``started``: its tasks run.
    RUNNING = "running"
    #: SIGTERM sent (SIGKILL follows after the stop grace); :attr:`State.then` says what comes next.
    STOPPING = "stopping"
    #: Never started again: removed by a reload, or the service stops.
    RETIRED = "retired"


class Then(enum.Enum):
    """What a stopping worker's exit leads to."""

    #: It was ended for silence: a failure, restarted after the backoff.
    RESTART = "restart"
    #: A reload changed its code: started again at once, failures forgotten.
    REPLACE = "replace"
    #: A reload removed it: dropped from the supervisor.
    RETIRE = "retire"
    #: The service stops.
    HALT = "halt"


@dataclass(frozen=True)
class State:
    """One worker's state. Fields other than ``phase`` and ``failures`` matter only in the phases named."""

    phase: Phase = Phase.BACKING_OFF
    #: Failures in a row (reset by a replace, or once a process stayed up ``Backoff.reset_after``).
    failures: int = 0
    #: BACKING_OFF: when the next start is due.
    start_at: float = 0.0
    #: STARTING, RUNNING, STOPPING: when the process started, and when it last said anything.
    since: float = 0.0
    heard: float = 0.0
    #: STOPPING: when SIGTERM was sent, when SIGKILL was (None: not yet), what the exit leads to,
    #: and whether the process had said that its tasks run.
    term_at: float = 0.0
    kill_at: Optional[float] = None
    then: Then = Then.RESTART
    served: bool = False
    #: The latest failure, for the status line and /readyz: '2nd failure: <last words or exit>'.
    last_exit: Optional[str] = None

    @property
    def has_process(self) -> bool:
        return self.phase in (Phase.STARTING, Phase.RUNNING, Phase.STOPPING)

    @property
    def up(self) -> bool:
        """Its process runs and said that its tasks run."""
        return self.phase is Phase.RUNNING or (self.phase is Phase.STOPPING and self.served)

    @property
    def settled(self) -> bool:
        """Either up or failed: the service as a whole may say READY."""
        return self.up or self.failures > 0

    @property
    def leaving(self) -> bool:
        """Stopping because a reload removed it: a reload that brings its tasks back replaces it."""
        return self.phase is Phase.STOPPING and self.then is Then.RETIRE

    @property
    def wakes_at(self) -> Optional[float]:
        """When the supervisor's loop must run for this worker's next start."""
        return self.start_at if self.phase is Phase.BACKING_OFF else None


# -- events -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tick:
    """The loop ran: starts due, silence and SIGKILL deadlines are checked. ``silence_limit``: how
    long a running worker may say nothing (longer than its own watchdog takes to end it)."""

    silence_limit: float


@dataclass(frozen=True)
class Heard:
    """A message from the worker; ``started``: the one saying that its tasks run."""

    started: bool = False


@dataclass(frozen=True)
class Exited:
    """The process ended (``returncode`` None: it could not be started), with its last words if any."""

    returncode: Optional[int]
    last_words: Optional[str] = None


@dataclass(frozen=True)
class Replace:
    """A reload changed this worker's tasks or files."""


@dataclass(frozen=True)
class Retire:
    """A reload removed this worker's tasks."""


@dataclass(frozen=True)
class Stop:
    """The service stops (SIGTERM or SIGINT to the supervisor)."""


Event = Union[Tick, Heard, Exited, Replace, Retire, Stop]


# -- actions ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Spawn:
    """Start a process for the worker now."""


@dataclass(frozen=True)
class Terminate:
    """SIGTERM the worker's process group; ``silent``: it said nothing for that many seconds."""

    silent: Optional[float] = None


@dataclass(frozen=True)
class Kill:
    """SIGKILL the worker's process group: it outlived its stop grace."""


@dataclass(frozen=True)
class Remove:
    """Drop the worker from the supervisor."""


@dataclass(frozen=True)
class Stopped:
    """It ended because it was asked to: say so (no failure)."""


@dataclass(frozen=True)
class Failed:
    """It ended on its own (or for silence): a failure; ``how`` its exit, restarted after ``delay``."""

    how: str
    delay: float


@dataclass(frozen=True)
class Back:
    """A worker that had failed runs its tasks again."""


Action = Union[Spawn, Terminate, Kill, Remove, Stopped, Failed, Back]
Step = Tuple[State, List[Action]]


@dataclass(frozen=True)
class Lifecycle:
    """The transitions, given the service's timing: pure, so one instance serves every worker."""

    #: A stopping worker's own grace to finish its cycles (``--stop-grace``); SIGKILL follows
    #: KILL_GRACE after it.
    stop_grace: float
    #: ``--start-timeout``: how long a starting worker may go without a word (its progress included).
    start_timeout: float
    backoff: Backoff = Backoff()

    def step(self, state: State, event: Event, now: float) -> Step:
        if isinstance(event, Tick):
            return self._tick(state, event.silence_limit, now)
        if isinstance(event, Heard):
            return self._heard(state, event.started, now)
        if isinstance(event, Exited):
            return self._exited(state, event, now)
        if isinstance(event, Replace):
            return self._ask(state, Then.REPLACE, now)
        if isinstance(event, Retire):
            return self._ask(state, Then.RETIRE, now)
        return self._stop(state, now)

    def _tick(self, state: State, silence_limit: float, now: float) -> Step:
        if state.phase is Phase.BACKING_OFF and now >= state.start_at:
            return replace(state, phase=Phase.STARTING, since=now, heard=now), [Spawn()]
        if state.phase in (Phase.STARTING, Phase.RUNNING):
            limit = silence_limit if state.phase is Phase.RUNNING else self.start_timeout
            if now - state.heard > limit:
                return self._terminate(state, Then.RESTART, now), [Terminate(silent=now - state.heard)]
        if (
            state.phase is Phase.STOPPING
            and state.kill_at is None
            and now - state.term_at > self.stop_grace + KILL_GRACE
        ):
            return replace(state, kill_at=now), [Kill()]
        return state, []

    def _heard(self, state: State, started: bool, now: float) -> Step:
        if not state.has_process:
            return state, []
        state = replace(state, heard=now)
        if not started:
            return state, []
        if state.phase is Phase.STARTING:
            state = replace(state, phase=Phase.RUNNING)
        elif state.phase is Phase.STOPPING:
            state = replace(state, served=True)
        return state, [Back()] if state.failures else []

    def _exited(self, state: State, event: Exited, now: float) -> Step:
        if not state.has_process:
            return state, []
        if state.phase is Phase.STOPPING and state.then is Then.REPLACE:
            return State(start_at=now, last_exit=state.last_exit), [Stopped()]
        if state.phase is Phase.STOPPING and state.then is Then.RETIRE:
            return State(Phase.RETIRED, state.failures, last_exit=state.last_exit), [Stopped(), Remove()]
        if state.phase is Phase.STOPPING and state.then is Then.HALT:
            return State(Phase.RETIRED, state.failures, last_exit=state.last_exit), [Stopped()]
        failures = (0 if now - state.since >= self.backoff.reset_after else state.failures) + 1
        delay = self.backoff.delay(failures)
        how = describe(event.returncode)
        last_exit = f"{ordinal(failures)} failure: {event.last_words or how}"
        return State(failures=failures, start_at=now + delay, last_exit=last_exit), [Failed(how, delay)]

    def _ask(self, state: State, then: Then, now: float) -> Step:
        """A reload's replace or retire: stop the process first, if there is one."""
        if state.phase is Phase.BACKING_OFF:
            if then is Then.REPLACE:
                return replace(state, start_at=now, failures=0), []
            return replace(state, phase=Phase.RETIRED), [Remove()]
        if state.phase is Phase.STOPPING:
            return (state if state.then is Then.HALT else replace(state, then=then)), []
        if state.phase is Phase.RETIRED:
            return state, []
        return self._terminate(state, then, now), [Terminate()]

    def _stop(self, state: State, now: float) -> Step:
        if state.phase is Phase.BACKING_OFF:
            return replace(state, phase=Phase.RETIRED), []
        if state.phase is Phase.STOPPING:
            return replace(state, then=Then.HALT), [Terminate()]
        if state.phase is Phase.RETIRED:
            return state, []
        return self._terminate(state, Then.HALT, now), [Terminate()]

    @staticmethod
    def _terminate(state: State, then: Then, now: float) -> State:
        return replace(state, phase=Phase.STOPPING, term_at=now, kill_at=None, then=then, served=state.up)


def describe(returncode: Optional[int]) -> str:
    """How a worker's process ended, in words: its signal, or its exit status and what that means."""
    if returncode is None:
        return "never started"
    if returncode < 0:
        sig = -returncode
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        extra = " (by someone, or the kernel's out-of-memory killer)" if sig == signal.SIGKILL else ""
        return f"killed by {name}{extra}"
    meaning = {
        EXIT_OK: "it should not stop on its own",
        EXIT_CONFIG: "its task files are invalid",
        EXIT_STUCK: "its watchdog",
    }
    return f"exit status {returncode}" + (f" ({meaning[returncode]})" if returncode in meaning else "")


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
