"""``--ioc``: serve the tasks' PVs from a soft IOC started by the launcher, for a first run or a demo.

It loads ``db/bridge.db`` once per task prefix plus each task's own ``db=`` files, listens on
loopback unless EPICS_PVAS_* says otherwise, and dies with the launcher.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import List, Optional, Sequence

from .registry import Task
from .softioc import Database, SoftIOC, db_dir, free_port

__all__ = ["start_embedded_ioc"]


def _port(variable: str, default: int, kind: int, interface: str) -> int:
    if os.environ.get(variable):
        return int(os.environ[variable])
    try:  # the standard port if it is free, so plain clients find the IOC with defaults
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind((interface, default))
        return default
    except OSError:
        return free_port(kind, interface)


def databases(tasks: Sequence[Task]) -> List[Database]:
    bridge_db = db_dir() / "bridge.db"
    dbs = [Database(bridge_db, {"P": task.prefix}) for task in tasks]
    for task in tasks:
        dbs += [Database(path, macros) for path, macros in task.db]
    return dbs


def start_embedded_ioc(tasks: Sequence[Task], output: Optional[Path]) -> SoftIOC:
    """Start the IOC and point this process's PVA clients at it (before any context exists)."""
    interface = os.environ.get("EPICS_PVAS_INTF_ADDR_LIST", "127.0.0.1").split()[0]
    ioc = SoftIOC(
        databases(tasks),
        interface=interface,
        server_port=_port("EPICS_PVAS_SERVER_PORT", 5075, socket.SOCK_STREAM, interface),
        broadcast_port=_port("EPICS_PVAS_BROADCAST_PORT", 5076, socket.SOCK_DGRAM, interface),
        output=output,
    ).start()
    os.environ.update(ioc.client_env)
    return ioc


def how_to_reach(ioc: SoftIOC, tasks: Sequence[Task]) -> str:
    """A ready-to-paste client setup and a command that triggers one task."""
    env = " ".join(f"{k}={v}" for k, v in ioc.client_env.items())
    target = next((t for t in tasks if t.name == "motor"), None) or next(
        (t for t in tasks if t.mode == "trigger"), tasks[0])
    return (
        f"embedded soft IOC (pid {ioc.pid}) serving {len(tasks)} task(s) on "
        f"{ioc.interface}:{ioc.server_port}\n"
        f"  export {env}\n"
        f"  python -c \"from p4p.client.thread import Context as C; C('pva').put('{target.pvs.trigger}', 1)\""
    )
