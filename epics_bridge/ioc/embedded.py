"""``--ioc``: serve the tasks' PVs from a soft IOC started by the launcher, for a first run or a demo.

It loads ``db/bridge.db`` (and the log PVs of ``db/bridge-logs.db``) once per task prefix, each
task's own ``db=`` files, and a record for every typed PV (``PV(name, float, ...)``) that none of
those files defines, so a task declared with typed PVs needs no database of its own. It serves
them over PV Access and Channel Access (so ``caget`` and Phoebus's default protocol see the first
run too), listens on loopback unless EPICS_PVAS_* says otherwise (the CA ports:
EPICS_CAS_SERVER_PORT, EPICS_CAS_BEACON_PORT), and dies with the launcher (its stdin is a pipe
from us: when we vanish it reads end-of-file and exits), so a crashed or killed launcher leaves no
IOC behind.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

from ..engine.hooks import Hooks
from ..records import database, parse_db
from ..task import ConfigError, Task
from .softioc import Database, IOCError, SoftIOC, db_dir, free_ca_port, free_port

__all__ = ["Announce", "databases", "embedded_ioc", "start"]

#: The PVA defaults: used when free, so that a client with no settings at all finds the IOC.
DEFAULT_SERVER_PORT = 5075
DEFAULT_BROADCAST_PORT = 5076
#: The CA defaults (server, repeater/beacons), on the same terms.
DEFAULT_CA_SERVER_PORT = 5064
DEFAULT_CA_REPEATER_PORT = 5065
_WILDCARD = "0.0.0.0"
#: Loaded per task prefix; bridge-logs.db (the log PVs) is optional, so only when installed.
STANDARD_DBS = ("bridge.db", "bridge-logs.db")


def _port(variable: str, default: int, kinds: Sequence[int], interface: str) -> int:
    """``variable`` if set, else ``default`` when it is free for every socket kind, else a free port."""
    value = os.environ.get(variable)
    if value:
        if not value.isdigit() or not 0 < int(value) < 65536:
            raise ConfigError(f"--ioc: {variable}={value!r} is not a port number")
        return int(value)
    try:
        for kind in kinds:
            with socket.socket(socket.AF_INET, kind) as s:
                s.bind((interface, default))
        return default
    except OSError:
        return free_ca_port(interface) if len(kinds) > 1 else free_port(kinds[0], interface)


def databases(tasks: Sequence[Task]) -> List[Database]:
    """The standard records (and the optional log PVs) for every task prefix, then each task's own
    files (a file+macros pair loads once), then the records of the typed PVs none of them defines
    (ConfigError for a typed PV no record can be made for)."""
    standard = [db_dir() / name for name in STANDARD_DBS if (db_dir() / name).is_file()]
    wanted = [Database(path, {"P": task.prefix}) for task in tasks for path in standard]
    wanted += [Database(path, macros) for task in tasks for path, macros in task.db]
    unique: Dict[Tuple[Path, str], Database] = {}
    for db in wanted:  # two tasks may name the same shared database
        unique.setdefault((db.path.resolve(), db.macro_string), db)
    loaded = list(unique.values())
    typed = _typed_records(tasks, loaded)
    return loaded if typed is None else [*loaded, typed]


def _typed_records(tasks: Sequence[Task], loaded: Sequence[Database]) -> Optional[Database]:
    """The generated database of the typed PVs that ``loaded`` does not define, or None. Its file is
    named by its content, so the same tasks give the same Database (a reload compares them)."""
    if not any(pv.typed for task in tasks for pv in task.pvs.declarations.values()):
        return None
    defined: Set[str] = set()
    for db in loaded:
        defined |= parse_db(db.path, _macros(db)).keys()
    text = database(tasks, macros=False, skip=defined)
    if not text:
        return None
    path = _generated_dir() / f"typed-{hashlib.sha256(text.encode()).hexdigest()[:16]}.db"
    if not path.is_file():
        path.write_text(text)
    return Database(path, "")


def _macros(db: Database) -> Dict[str, str]:
    """The database's macros by name, given as a mapping or as softIoc's ``"P=A:,N=2"``."""
    if not isinstance(db.macros, str):
        return {str(name): str(value) for name, value in db.macros.items()}
    pairs = (item.split("=", 1) for item in db.macros.split(",") if "=" in item)
    return {name.strip(): value for name, value in pairs}


@functools.cache
def _generated_dir() -> Path:
    """This process's folder of generated databases, removed when it exits; the IOC, which stops
    before, reads them when it starts or restarts."""
    folder = Path(tempfile.mkdtemp(prefix="epics-bridge-records-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def client_env(ioc: SoftIOC) -> Dict[str, str]:
    """The EPICS_PVA_* and EPICS_CA_* a client on this host needs; a wildcard listener is reached on
    loopback. ``EPICS_PVA_NAME_SERVERS`` searches over the IOC's own TCP port: a UDP search port is
    shared with any other server on the host that uses it, and a search may reach that one only."""
    env = dict(ioc.client_env)
    if ioc.interface == _WILDCARD:
        env.update({name: "127.0.0.1" for name in ("EPICS_PVA_ADDR_LIST", "EPICS_CA_ADDR_LIST") if name in env})
    host = "127.0.0.1" if ioc.interface == _WILDCARD else ioc.interface
    env["EPICS_PVA_NAME_SERVERS"] = f"{host}:{ioc.server_port}"
    return env


def embedded_ioc(tasks: Sequence[Task], output: Optional[Path]) -> SoftIOC:
    """The IOC for ``tasks``, its addresses chosen (ConfigError for a bad EPICS_PVAS_* or EPICS_CAS_*
    port); not started."""
    interface = (os.environ.get("EPICS_PVAS_INTF_ADDR_LIST") or "127.0.0.1").split()[0]
    tcp, udp = socket.SOCK_STREAM, socket.SOCK_DGRAM
    return SoftIOC(
        databases(tasks),
        interface=interface,
        server_port=_port("EPICS_PVAS_SERVER_PORT", DEFAULT_SERVER_PORT, (tcp,), interface),
        broadcast_port=_port("EPICS_PVAS_BROADCAST_PORT", DEFAULT_BROADCAST_PORT, (udp,), interface),
        channel_access=True,
        ca_server_port=_port("EPICS_CAS_SERVER_PORT", DEFAULT_CA_SERVER_PORT, (tcp, udp), interface),
        ca_repeater_port=_port("EPICS_CAS_BEACON_PORT", DEFAULT_CA_REPEATER_PORT, (udp,), interface),
        output=output,
    )


def start(ioc: SoftIOC) -> SoftIOC:
    """Start the IOC and point this process's PVA clients at it (before any context exists)."""
    output = ioc.output
    try:
        ioc.start()
    except IOCError as exc:
        where = f"{output}" if output else "the output above"
        raise IOCError(
            f"--ioc: {exc} (databases: {', '.join(str(d.path) for d in ioc.databases)}; IOC output in {where})"
        ) from None
    os.environ.update(client_env(ioc))
    return ioc


def how_to_reach(ioc: SoftIOC, tasks: Sequence[Task]) -> str:
    """A ready-to-paste client setup, and commands that trigger one task and read its result."""
    lines = [
        f"embedded soft IOC (pid {ioc.pid}) serves {len(tasks)} task(s) on {ioc.interface}:{ioc.server_port} "
        f"(PV Access) and {ioc.interface}:{ioc.ca_server_port} (Channel Access); it stops with this process. "
        "From another shell:",
        "  export " + " ".join(f"{k}={v}" for k, v in client_env(ioc).items()),
    ]
    if ioc.interface == _WILDCARD:
        lines.append("  (from another host: EPICS_PVA_ADDR_LIST and EPICS_CA_ADDR_LIST=<this host's address>)")
    triggered = [t for t in tasks if t.mode == "trigger"]
    target = next((t for t in triggered if t.name == "motor"), triggered[0] if triggered else None)
    if target is not None:
        pvs = target.pvs
        lines += [
            f"  python -c \"from p4p.client.thread import Context as C; C('pva').put('{pvs.trigger}', 1)\"",
            f'  python -c "from p4p.client.thread import Context as C; '
            f"print(C('pva').get(['{pvs.task_status}', '{pvs.task_duration}']))\"",
        ]
    return "\n".join(lines)


class Announce(Hooks):
    """Prints :func:`how_to_reach` once every task runs, so it is the last thing on the screen."""

    def __init__(self, ioc: SoftIOC) -> None:
        self.ioc = ioc

    def started(self, tasks: List[Task]) -> None:
        print(how_to_reach(self.ioc, tasks), file=sys.stderr, flush=True)
