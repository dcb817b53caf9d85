"""A worker's lifecycle driven by a fake clock: every transition the supervisor relies on, no process."""

from __future__ import annotations

import signal
from typing import List, Optional

import pytest

from epics_bridge.exits import EXIT_CONFIG, EXIT_OK, EXIT_STUCK
from epics_bridge.service.lifecycle import (
    KILL_GRACE,
    Action,
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
    Then,
    Tick,
    describe,
)
from epics_bridge.service.options import Options

STOP_GRACE = 5.0
#: ``--start-timeout``'s default
START_TIMEOUT = Options().start_timeout
LIFECYCLE = Lifecycle(STOP_GRACE, START_TIMEOUT)
#: A running worker's own silence limit, as the supervisor computes it from its tasks.
LIMIT = 20.0
SEGV = -signal.SIGSEGV


class Clock:
    """A worker's state and the time, moved only by the test."""

    def __init__(self, state: Optional[State] = None) -> None:
        self.now = 1000.0
        self.state = state or State()

    def at(self, now: float, event: Event) -> List[Action]:
        self.now = now
        self.state, actions = LIFECYCLE.step(self.state, event, now)
        return actions

    def later(self, seconds: float, event: Event) -> List[Action]:
        return self.at(self.now + seconds, event)


def running() -> Clock:
    clock = Clock()
    assert clock.later(0, Tick(LIMIT)) == [Spawn()]
    assert clock.later(0.5, Heard(started=True)) == []
    assert clock.state.phase is Phase.RUNNING
    return clock


def test_a_new_worker_starts_at_once_and_runs_once_it_says_so():
    clock = Clock()
    assert clock.state.phase is Phase.BACKING_OFF and clock.state.wakes_at is not None
    assert clock.later(0, Tick(LIMIT)) == [Spawn()]
    assert clock.state.phase is Phase.STARTING and not clock.state.up and not clock.state.settled
    assert clock.later(1, Heard()) == [], "a message other than 'started' is only a sign of life"
    assert clock.state.phase is Phase.STARTING
    assert clock.later(1, Heard(started=True)) == []
    assert clock.state.phase is Phase.RUNNING and clock.state.up and clock.state.settled
    assert clock.state.wakes_at is None


def test_a_crash_is_a_failure_restarted_after_the_first_delay():
    clock = running()
    crashed = clock.later(30, Exited(SEGV))
    assert crashed == [Failed("killed by SIGSEGV", 1.0)]
    assert clock.state.phase is Phase.BACKING_OFF and clock.state.failures == 1
    assert clock.state.start_at == clock.now + 1.0
    assert clock.state.last_exit == "1st failure: killed by SIGSEGV"
    assert clock.state.settled, "a failed worker does not hold back the service's READY"
    assert clock.later(0.9, Tick(LIMIT)) == [], "not before its delay"
    assert clock.later(0.1, Tick(LIMIT)) == [Spawn()]
    assert clock.state.phase is Phase.STARTING


def test_the_last_words_name_the_failure_and_a_worker_that_failed_is_back_once_started():
    clock = running()
    clock.later(5, Exited(1, last_words="ValueError: boom"))
    assert clock.state.last_exit == "1st failure: ValueError: boom"
    clock.later(1, Tick(LIMIT))
    assert clock.later(1, Heard(started=True)) == [Back()]


def test_a_process_that_cannot_be_started_fails_like_a_crash():
    clock = Clock()
    clock.later(0, Tick(LIMIT))
    assert clock.later(0, Exited(None, "cannot start a process: EAGAIN")) == [Failed("never started", 1.0)]
    assert clock.state.last_exit == "1st failure: cannot start a process: EAGAIN"


def test_failures_in_a_row_double_the_delay_up_to_the_cap():
    clock = Clock()
    delays = []
    for _ in range(8):
        clock.at(clock.state.start_at, Tick(LIMIT))
        (failed,) = clock.later(2, Exited(1))
        assert isinstance(failed, Failed)
        delays.append(failed.delay)
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60]
    assert clock.state.failures == 8 and clock.state.last_exit == "8th failure: exit status 1"


@pytest.mark.parametrize("up_for, failures", [(599.0, 3), (600.0, 1)])
def test_ten_minutes_up_forget_earlier_failures(up_for, failures):
    clock = Clock()
    for _ in range(2):
        clock.at(clock.state.start_at, Tick(LIMIT))
        clock.later(1, Exited(1))
    clock.at(clock.state.start_at, Tick(LIMIT))
    clock.later(up_for, Exited(1))
    assert clock.state.failures == failures
    assert clock.state.start_at == clock.now + Backoff().delay(failures)


def test_a_worker_silent_while_starting_is_ended_after_the_start_timeout_and_counts_as_a_failure():
    clock = Clock()
    clock.later(0, Tick(LIMIT))
    assert clock.later(START_TIMEOUT, Tick(LIMIT)) == [], "a start may take the whole start timeout"
    assert clock.later(0.5, Tick(LIMIT)) == [Terminate(silent=START_TIMEOUT + 0.5)]
    assert clock.state.phase is Phase.STOPPING and clock.state.then is Then.RESTART
    assert clock.later(1, Tick(LIMIT)) == [], "one SIGTERM"
    assert clock.later(1, Exited(-signal.SIGTERM, "silent for 60 s")) == [Failed("killed by SIGTERM", 1.0)]
    assert clock.state.last_exit == "1st failure: silent for 60 s"


def test_a_start_that_makes_progress_may_outlast_the_start_timeout():
    clock = Clock()
    clock.later(0, Tick(LIMIT))
    for _ in range(5):  # a large task file: a task registered (a message) every START_TIMEOUT - 1 s
        assert clock.later(START_TIMEOUT - 1, Tick(LIMIT)) == []
        assert clock.later(0, Heard()) == []
    assert clock.state.phase is Phase.STARTING
    assert clock.later(START_TIMEOUT + 1, Tick(LIMIT)) == [Terminate(silent=START_TIMEOUT + 1)]


def test_a_running_worker_is_silent_past_its_own_limit_and_any_message_resets_it():
    clock = running()
    assert clock.later(LIMIT, Tick(LIMIT)) == []
    assert clock.later(0, Heard()) == []
    assert clock.later(LIMIT, Tick(LIMIT)) == [], "the message counted from when it came"
    assert clock.later(1, Tick(LIMIT)) == [Terminate(silent=LIMIT + 1)]
    assert clock.state.up, "it served until its end: its tasks still count as running"


def test_a_stopping_worker_is_killed_once_after_the_stop_grace_and_kill_grace():
    clock = running()
    clock.later(0, Replace())
    sent = clock.now
    assert clock.at(sent + STOP_GRACE + KILL_GRACE, Tick(LIMIT)) == []
    assert clock.later(0.1, Tick(LIMIT)) == [Kill()]
    assert clock.state.kill_at == clock.now
    assert clock.later(10, Tick(LIMIT)) == [], "one SIGKILL"


@pytest.mark.parametrize(
    "status, how",
    [
        (EXIT_STUCK, "exit status 3 (its watchdog)"),
        (EXIT_CONFIG, "exit status 2 (its task files are invalid)"),
        (EXIT_OK, "exit status 0 (it should not stop on its own)"),
        (7, "exit status 7"),
        (-signal.SIGKILL, "killed by SIGKILL (by someone, or the kernel's out-of-memory killer)"),
        (-200, "killed by 200"),
    ],
)
def test_each_exit_status_is_a_failure_described_by_its_meaning(status, how):
    clock = running()
    assert clock.later(3, Exited(status)) == [Failed(how, 1.0)]
    assert describe(status) == how


def test_a_reload_replaces_a_running_worker_at_once_without_a_failure():
    clock = running()
    clock.later(5, Exited(1))
    clock.at(clock.state.start_at, Tick(LIMIT))
    clock.later(1, Heard(started=True))
    assert clock.later(10, Replace()) == [Terminate()]
    assert clock.state.phase is Phase.STOPPING and clock.state.then is Then.REPLACE
    assert clock.later(1, Exited(0)) == [Stopped()]
    assert clock.state.phase is Phase.BACKING_OFF and clock.state.failures == 0
    assert clock.later(0, Tick(LIMIT)) == [Spawn()]


def test_a_reload_replaces_a_backing_off_worker_now_and_forgets_its_failures():
    clock = running()
    clock.later(5, Exited(1))
    clock.later(0, Exited(1))  # an exit without a process changes nothing
    assert clock.state.failures == 1
    assert clock.later(0.2, Replace()) == []
    assert clock.state.failures == 0
    assert clock.later(0, Tick(LIMIT)) == [Spawn()]


def test_a_replace_while_stopping_for_silence_restarts_it_without_a_failure():
    clock = running()
    clock.later(LIMIT + 1, Tick(LIMIT))
    assert clock.later(0, Replace()) == [], "SIGTERM was sent already"
    assert clock.later(1, Exited(-signal.SIGTERM)) == [Stopped()]
    assert clock.state.failures == 0


def test_a_retired_worker_is_stopped_then_removed_and_never_started_again():
    clock = running()
    assert clock.later(1, Retire()) == [Terminate()]
    assert clock.state.then is Then.RETIRE
    assert clock.later(1, Exited(0)) == [Stopped(), Remove()]
    assert clock.state.phase is Phase.RETIRED
    assert clock.later(100, Tick(LIMIT)) == []


def test_a_worker_removed_and_brought_back_by_the_next_reload_before_it_ended_is_replaced():
    clock = running()
    clock.later(1, Retire())
    assert clock.state.leaving
    assert clock.later(1, Replace()) == [], "SIGTERM was sent already"
    assert not clock.state.leaving
    assert clock.later(1, Exited(0)) == [Stopped()]
    assert clock.later(0, Tick(LIMIT)) == [Spawn()]


def test_a_retired_backing_off_worker_is_removed_at_once():
    clock = running()
    clock.later(1, Exited(1))
    assert clock.later(0, Retire()) == [Remove()]
    assert clock.state.phase is Phase.RETIRED


def test_stop_terminates_every_process_and_starts_nothing_again():
    clock = running()
    assert clock.later(1, Stop()) == [Terminate()]
    assert clock.state.then is Then.HALT
    assert clock.later(0, Replace()) == [], "a reload cannot undo the service's stop"
    assert clock.later(1, Exited(0)) == [Stopped()]
    assert clock.state.phase is Phase.RETIRED
    assert clock.later(100, Tick(LIMIT)) == []


def test_stop_signals_a_worker_already_stopping_again_and_ends_a_backoff():
    clock = running()
    clock.later(1, Replace())
    assert clock.later(1, Stop()) == [Terminate()]
    assert clock.later(1, Exited(0)) == [Stopped()]
    assert clock.state.phase is Phase.RETIRED, "not started again: the service stops"
    waiting = running()
    waiting.later(1, Exited(1))
    assert waiting.later(0, Stop()) == []
    assert waiting.later(100, Tick(LIMIT)) == []
