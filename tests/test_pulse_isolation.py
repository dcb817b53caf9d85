"""The heartbeat's isolation with pulses sent in phase slots: a stuck loop stops its own task's
pulse, and a task whose IO blocks (a read that waits its whole timeout) holds back neither the
pulses nor the cycles of the other tasks of its process; each heartbeat thread sending its own
pulses, and through the one sender of a process of many tasks."""

from __future__ import annotations

import threading
import time
from typing import List

import pytest
from conftest import PREFIXES
from helpers import HeartbeatRecorder, Trigger, running, wait_for

from epics_bridge import Registry, TaskStatus
from epics_bridge.engine import runner

PERIOD = 0.5
#: A PV no IOC serves: a read of it waits its whole timeout.
MISSING = "TST:NOT:SERVED:PULSE"


def gaps(times: List[float]) -> List[float]:
    return [b - a for a, b in zip(times, times[1:])]


@pytest.mark.parametrize("sender", [False, True], ids=["own-pulses", "one-sender"])
def test_a_blocked_io_or_a_stuck_loop_holds_back_only_its_own_task(client, monkeypatch, sender):
    if sender:  # three tasks, through the sender of a process of many
        monkeypatch.setattr(runner, "SENDER_FROM", 1)
    blocked, stuck, healthy = PREFIXES[-2], PREFIXES[-3], PREFIXES[-4]
    release = threading.Event()
    reg = Registry()

    @reg.task(prefix=blocked, heartbeat_period=PERIOD, stall_timeout=30, timeout=3.0)
    def waits_on_io(t):
        t.get(MISSING)  # 3 s in the IO layer, then IO_FAILURE

    @reg.task(prefix=stuck, heartbeat_period=PERIOD, stall_timeout=1.0, max_stuck_cycles=1000)
    def hangs(t):
        release.wait(30)  # the loop stalls after 1 s; its pulse must stop

    @reg.task(prefix=healthy, heartbeat_period=PERIOD)
    def serves(t):
        pass

    beats = HeartbeatRecorder(client, [blocked, stuck, healthy])
    try:
        with running(reg.tasks):
            for prefix in (blocked, stuck, healthy):
                beats.wait_pulses(prefix, 2, timeout=30)
            client.put(blocked + "Trigger", 1)
            client.put(stuck + "Trigger", 1)
            started = time.monotonic()
            wait_for(lambda: time.monotonic() - started > 1.0 + 2 * PERIOD, 5, what="the stuck loop to stall")
            stuck_pulses = len(beats.pulses[stuck])
            mark = len(beats.pulses[healthy])
            served = Trigger(client, healthy)
            cycles = [served.cycle(timeout=5.0) for _ in range(10)]  # while the other loop waits on its IO
            served.close()
            wait_for(lambda: time.monotonic() - started > 3.0 + PERIOD, 10, what="the blocked read to time out")
            assert len(beats.pulses[stuck]) == stuck_pulses, "a stalled loop's heartbeat kept pulsing"
            release.set()
    finally:
        release.set()
        beats.close()
    assert cycles == [TaskStatus.SUCCESS] * 10
    healthy_gaps = gaps(beats.pulses[healthy][mark:])
    blocked_gaps = gaps(beats.pulses[blocked])
    print(f"\nlargest heartbeat gap: healthy {max(healthy_gaps):.3f} s, blocked-IO task {max(blocked_gaps):.3f} s")
    assert max(healthy_gaps) < 1.5 * PERIOD, "the healthy task's pulse was held back"
    assert max(blocked_gaps) < 1.5 * PERIOD, "a loop waiting on its IO is alive: its pulse goes on"
