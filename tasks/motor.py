"""The motor example of epics-bridge 1.0.1's README as a decorated task.

Shows the trigger handshake, logical PV names relative to the task prefix, and a second prefix
(``{sys}``) for a PV that lives elsewhere. Trigger it with
``python -c "from p4p.client.thread import Context as C; C('pva').put('IOC:MOTOR:01:Trigger', 1)"``.
"""

from epics_bridge import TaskStatus, bridge


@bridge.task(
    prefix="IOC:MOTOR:01:",
    pvs={"position_rbv": "Pos:RBV", "velocity_sp": "Vel:SP", "temperature": "{sys}Temp:Mon"},
    prefixes={"sys": "IOC:SYS:"},
    db=("../db/motor.db", {"P": "IOC:MOTOR:01:", "S": "IOC:SYS:"}),
)
def motor(t):
    values = t.get(["velocity_sp", "temperature"])  # one round trip for both
    if values["temperature"] > 80.0:
        t.log.warning("drive too hot ({:.1f} C): not moving", values["temperature"])
        return TaskStatus.LOGIC_FAILURE
    t.put(position_rbv=values["velocity_sp"] * 0.5)
    return TaskStatus.SUCCESS


if __name__ == "__main__":
    bridge.run()
