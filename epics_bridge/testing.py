"""The pytest plugin: ``bridge_ioc`` runs your own tasks on a real soft IOC inside a test.

Installed with the package and registered through the ``pytest11`` entry point, so a project that
only has task files, their databases and tests needs no conftest::

    def test_interlock_closes_the_valve(bridge_ioc):
        ioc = bridge_ioc(interlock)
        ioc.put(interlock, pressure=1e-4)
        assert ioc.cycle(interlock).status == TaskStatus.LOGIC_FAILURE
        assert ioc.get(interlock, "valve") == 0

pytest loads this module in every project of the environment, so it imports nothing heavy: the
IOC, p4p and the engine (:mod:`epics_bridge.ioc.harness`) are imported when the fixture is used.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator

import pytest

if TYPE_CHECKING:
    from .ioc.harness import BridgeIOC, Settings, TaskRef

__all__ = ["bridge_ioc"]

#: (name, default, help) of the options taking seconds: ``--bridge-ioc-NAME`` or the ini key
#: ``bridge_ioc_NAME``; the command line wins.
SECONDS = (
    ("start_timeout", "30", "seconds the soft IOC may take to start and answer a first get (default 30)"),
    ("cycle_timeout", "10", "seconds ioc.cycle() waits for a cycle, on top of a timer task's period (default 10)"),
)
EXTERNAL_HELP = (
    "start no IOC: use the one the EPICS_PVA_* environment points at (it must already serve "
    "every task's records, bridge.db included)"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("epics-bridge", "bridge_ioc: your tasks on a real soft IOC")
    for name, default, help_ in SECONDS:
        group.addoption(f"--bridge-ioc-{name.replace('_', '-')}", dest=f"bridge_ioc_{name}", metavar="S", help=help_)
        parser.addini(f"bridge_ioc_{name}", help_, default=default)
    group.addoption(
        "--bridge-ioc-external", dest="bridge_ioc_external", action="store_true", default=None, help=EXTERNAL_HELP
    )
    parser.addini("bridge_ioc_external", EXTERNAL_HELP, type="bool", default=False)


def _settings(config: pytest.Config) -> Settings:
    """The fixture's options from the command line, else the ini file."""
    from .ioc.harness import Settings

    values: Dict[str, Any] = {}
    for name, _, _ in SECONDS:
        raw = config.getoption(f"bridge_ioc_{name}") or config.getini(f"bridge_ioc_{name}")
        try:
            values[name] = float(raw)
        except ValueError:
            raise pytest.UsageError(
                f"--bridge-ioc-{name.replace('_', '-')} / bridge_ioc_{name}: {raw!r} is not a number of seconds"
            ) from None
        if values[name] <= 0:
            raise pytest.UsageError(f"--bridge-ioc-{name.replace('_', '-')} / bridge_ioc_{name}: must be > 0")
    flag = config.getoption("bridge_ioc_external")
    values["external"] = bool(config.getini("bridge_ioc_external") if flag is None else flag)
    return Settings(**values)


@pytest.fixture
def bridge_ioc(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., BridgeIOC]]:
    """``bridge_ioc(*tasks)`` -> a running :class:`~epics_bridge.ioc.harness.BridgeIOC`: a fresh soft
    IOC serving ``tasks`` (decorated functions or task names) and the tasks running on it. Every
    IOC and task started in the test is stopped when it ends, whatever the outcome."""
    settings = _settings(request.config)
    with ExitStack() as stack:

        def start(*tasks: TaskRef) -> BridgeIOC:
            from .app import bridge
            from .ioc.harness import BridgeIOC

            return BridgeIOC.start(tasks, bridge, settings, stack, tmp_path, monkeypatch)

        yield start
