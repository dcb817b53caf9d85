"""epics-bridge: turn plain Python functions into supervised EPICS daemons over PV Access.

    from epics_bridge import bridge, TaskStatus

    @bridge.task(prefix="VAC:PUMP:01:", pvs={"pressure": "Press:RBV", "valve": "Valve:SP"})
    def interlock(t):
        if t.get("pressure") > 1e-5:
            t.put(valve=0)
            return TaskStatus.LOGIC_FAILURE

Run with ``python -m epics_bridge tasks/`` (see ``--help``).
"""

import os
import sys

# ``python -m epics_bridge`` puts the working directory first on sys.path, where a task file named
# like a standard module (json.py, select.py ...) would replace that module for every import from
# here on: the shipped unit, and anyone, may run from the task folder. While the package is being
# located for ``-m``, sys.argv[0] is "-m" (it is the module's path once it runs): only the program
# ``python -m epics_bridge...`` takes its working directory off the path. Task files are imported
# under names of their own, their folder last on the path (service/loading.py).
if sys.argv[:1] == ["-m"] and sys.path and os.path.abspath(sys.path[0] or ".") == os.getcwd():
    del sys.path[0]

from importlib import import_module  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

from . import deferred_imports  # noqa: E402

deferred_imports.install()  # first: its stand-ins must precede loguru and p4p

from .app import bridge  # noqa: E402
from .base_pv_interface import BasePVInterface  # noqa: E402
from .pv import PV  # noqa: E402
from .registry import Registry  # noqa: E402
from .status import TaskStatus  # noqa: E402
from .task import ConfigError, Task  # noqa: E402
from .version import __version__  # noqa: E402

if TYPE_CHECKING:
    from .daemon import BridgeDaemon
    from .io import BridgeIO, PVDisconnectedError, PVError, PVRejectedError, PVTimeoutError, PVValueError
    from .task_context import TaskContext, UnknownNameError

#: Names whose modules import p4p, loaded on first use: a task file (and pytest, which loads the
#: bridge_ioc plugin in every project of the environment) imports only what it touches.
_LAZY = {
    "TaskContext": ".task_context",
    "UnknownNameError": ".task_context",
    "BridgeDaemon": ".daemon",
    "BridgeIO": ".io",
    "PVError": ".io",
    "PVTimeoutError": ".io",
    "PVDisconnectedError": ".io",
    "PVRejectedError": ".io",
    "PVValueError": ".io",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'epics_bridge' has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "__version__",
    "bridge",
    "TaskStatus",
    "TaskContext",
    "Task",
    "Registry",
    "ConfigError",
    "UnknownNameError",
    "BridgeDaemon",
    "BasePVInterface",
    "PV",
    "BridgeIO",
    "PVError",
    "PVTimeoutError",
    "PVDisconnectedError",
    "PVRejectedError",
    "PVValueError",
]
