"""epics-bridge: turn plain Python functions into supervised EPICS daemons over PV Access.

    from epics_bridge import bridge, TaskStatus

    @bridge.task(prefix="VAC:PUMP:01:", pvs={"pressure": "Press:RBV", "valve": "Valve:SP"})
    def interlock(t):
        if t.get("pressure") > 1e-5:
            t.put(valve=0)
            return TaskStatus.LOGIC_FAILURE

Run with ``python -m epics_bridge tasks/`` (see ``--help``).
"""
from .base_pv_interface import BasePVInterface
from .context import TaskContext
from .daemon import BridgeDaemon
from .io import BridgeIO, PVDisconnectedError, PVError, PVRejectedError, PVTimeoutError
from .registry import ConfigError, Registry, Task, bridge
from .status import TaskStatus

#: The one definition of the version: pyproject.toml reads it (setuptools' dynamic version).
__version__ = "6.0.0.dev0"

__all__ = [
    "bridge", "TaskStatus", "TaskContext", "Task", "Registry", "ConfigError",
    "BridgeDaemon", "BasePVInterface", "BridgeIO",
    "PVError", "PVTimeoutError", "PVDisconnectedError", "PVRejectedError",
]
