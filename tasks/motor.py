"""The motor example of epics-bridge 1.0.1's README as a decorated task, with typed PVs.

Shows the trigger handshake, logical PV names relative to the task prefix, a second prefix
(``{sys}``) for a PV that lives elsewhere, and typed declarations: no database of its own, since
``--ioc`` makes each record from its declaration (``epics-bridge db tasks/motor.py -o motor.db``
writes them for another IOC), reads come back as ``float``, and the drive temperature carries its
alarm levels. Trigger it with
``python -c "from p4p.client.thread import Context as C; C('pva').put('IOC:MOTOR:01:Trigger', 1)"``.
"""

from epics_bridge import PV, TaskStatus, bridge


@bridge.task(
    prefix="IOC:MOTOR:01:",
    pvs={
        "position_rbv": PV("Pos:RBV", float, units="mm", precision=3, description="Position readback"),
        "velocity_sp": PV("Vel:SP", float, units="mm/s", precision=3, limits=(0.0, 10.0), description="Velocity"),
        "temperature": PV(
            "{sys}Temp:Mon",
            float,
            units="C",
            precision=1,
            alarm=(None, None, 60.0, 80.0),
            description="Drive temperature",
        ),
    },
    prefixes={"sys": "IOC:SYS:"},
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
