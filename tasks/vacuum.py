"""A timer-driven interlock: every second, close the gate valve when the pressure is too high.

Shows ``period=`` (no Trigger; runs on a fixed one-second grid) and a LOGIC_FAILURE status that
the IOC's TaskStatus record turns into a MINOR alarm for the operators.
"""

from epics_bridge import TaskStatus, bridge


@bridge.task(
    prefix="VAC:PUMP:01:",
    pvs={"pressure": "Press:RBV", "valve": "Valve:SP", "limit": "Limit:SP"},
    period=1.0,
    db="../db/vacuum.db",  # loaded with P=VAC:PUMP:01:, the task's prefix
)
def interlock(t):
    v = t.get(["pressure", "limit", "valve"])
    if v["pressure"] > v["limit"]:
        if v["valve"]:
            t.log.warning("pressure {:.2e} mbar above {:.2e}: closing the valve", v["pressure"], v["limit"])
            t.put(valve=0)
        return TaskStatus.LOGIC_FAILURE
    return TaskStatus.SUCCESS


if __name__ == "__main__":
    bridge.run()
