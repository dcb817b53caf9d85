"""epics-bridge: turn plain Python functions into supervised EPICS daemons over PV Access.

    from epics_bridge import bridge, TaskStatus

    @bridge.task(prefix="VAC:PUMP:01:", pvs={"pressure": "Press:RBV", "valve": "Valve:SP"})
    def interlock(t):
        if t.get("pressure") > 1e-5:
            t.put(valve=0)
            return TaskStatus.LOGIC_FAILURE

Run with ``python -m epics_bridge tasks/`` (see ``--help``).
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from . import lean_imports  # noqa: F401 - first: its stand-ins must precede loguru and p4p
from .base_pv_interface import BasePVInterface
from .registry import ConfigError, Registry, Task, bridge
from .status import TaskStatus

if TYPE_CHECKING:
    from .context import TaskContext, UnknownNameError
    from .daemon import BridgeDaemon
    from .io import BridgeIO, PVDisconnectedError, PVError, PVRejectedError, PVTimeoutError

#: Names whose modules import p4p, loaded on first use: a task file (and pytest, which loads the
#: bridge_ioc plugin in every project of the environment) imports only what it touches.
_LAZY = {
    "TaskContext": ".context",
    "UnknownNameError": ".context",
    "BridgeDaemon": ".daemon",
    "BridgeIO": ".io",
    "PVError": ".io",
    "PVTimeoutError": ".io",
    "PVDisconnectedError": ".io",
    "PVRejectedError": ".io",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'epics_bridge' has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


#: The one definition of the version: pyproject.toml reads it (setuptools' dynamic version).
__version__ = "6.0.0.dev0"

__all__ = [
    "bridge",
    "TaskStatus",
    "TaskContext",
    "Task",
    "Registry",
    "ConfigError",
    "UnknownNameError",
    "BridgeDaemon",
    "BasePVInterface",
    "BridgeIO",
    "PVError",
    "PVTimeoutError",
    "PVDisconnectedError",
    "PVRejectedError",
]
