"""The whole path once: a task on the session IOC answers the handshake with the right status."""

from helpers import Trigger, running, wait_heartbeat

from epics_bridge import Registry, TaskStatus


def test_trigger_runs_task_and_status_is_final_at_acknowledge(prefix, client):
    reg = Registry()
    calls = []

    @reg.task(prefix=prefix)
    def noop(t):
        calls.append(t.name)
        return TaskStatus.LOGIC_FAILURE

    with running(reg.tasks):
        wait_heartbeat(client, prefix)
        trig = Trigger(client, prefix)
        assert trig.cycle() == TaskStatus.LOGIC_FAILURE
        assert calls == ["noop"]
        trig.close()
