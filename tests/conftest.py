"""Fixtures: a real soft IOC (epicscorelibs + pvxslibs) in a subprocess, on loopback, own ports."""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path
from typing import Callable, Iterator, List

import pytest

from epics_bridge.ioc.softioc import Database, SoftIOC

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/helpers.py

#: Task prefixes served by the session IOC, handed out one per test by the ``prefix`` fixture.
PREFIXES = [f"TST:{n:02d}:" for n in range(80)]
#: Prefix of tests/db/values.db in the session IOC.
VALUES = "TST:V:"
_next_prefix = itertools.count()


def bridge_dbs(*prefixes: str) -> List[Database]:
    return [Database(ROOT / "db" / "bridge.db", {"P": p}) for p in prefixes]


@pytest.fixture(scope="session")
def ioc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftIOC]:
    """The session's IOC; this process's PVA clients are pointed at it (and only at it)."""
    dbs = bridge_dbs(*PREFIXES) + [Database(ROOT / "tests" / "db" / "values.db", {"P": VALUES})]
    log = tmp_path_factory.mktemp("ioc") / "ioc.log"
    saved = {k: os.environ.get(k) for k in SoftIOC(dbs).client_env}
    with SoftIOC(dbs, output=log) as soft_ioc:
        os.environ.update(soft_ioc.client_env)
        yield soft_ioc
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def prefix(ioc: SoftIOC) -> str:
    """A task prefix of the session IOC that no other test uses, with Busy/Trigger cleared."""
    n = next(_next_prefix)
    if n >= len(PREFIXES):
        pytest.fail("tests/conftest.py: raise the number of PREFIXES")
    return PREFIXES[n]


@pytest.fixture
def client(ioc: SoftIOC):
    """A raw p4p client (``nt=False``) on the session IOC."""
    from p4p.client.thread import Context

    ctx = Context("pva", nt=False)
    yield ctx
    ctx.close()


@pytest.fixture
def io(ioc: SoftIOC):
    """A BridgeIO with its own p4p context on the session IOC."""
    from epics_bridge.io import BridgeIO

    bridge_io = BridgeIO()
    yield bridge_io
    bridge_io.close()


@pytest.fixture
def make_ioc(tmp_path: Path) -> Iterator[Callable[..., SoftIOC]]:
    """Start private IOCs (for fault tests that kill or freeze them); all stopped at teardown."""
    started: List[SoftIOC] = []

    def make(*prefixes: str, extra: List[Database] = (), **kwargs) -> SoftIOC:
        soft_ioc = SoftIOC(bridge_dbs(*prefixes) + list(extra), output=tmp_path / f"ioc{len(started)}.log", **kwargs)
        started.append(soft_ioc)
        return soft_ioc.start()

    yield make
    for soft_ioc in started:
        soft_ioc.stop()
