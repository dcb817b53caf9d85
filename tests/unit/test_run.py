"""``bridge.run()`` refuses a bad configuration the launcher's way: exit 2, the problems listed."""

from __future__ import annotations

import pytest

from epics_bridge.app import Bridge


def test_a_refused_option_exits_2_naming_it_and_starts_nothing(capsys):
    reg = Bridge()
    reg.task(lambda t: None, prefix="RUN:", name="one")
    with pytest.raises(SystemExit) as exited:
        reg.run([], log_dir=None, log_level="LOUD")
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--log-level" in err and "'LOUD'" in err and "choose one of DEBUG, INFO, WARNING, ERROR" in err


def test_a_class_api_daemon_with_a_bad_setting_exits_2_naming_it(capsys):
    from epics_bridge.base_pv_interface import BasePVInterface
    from epics_bridge.daemon import BridgeDaemon

    class Daemon(BridgeDaemon):
        def run_task(self, inputs=None):
            return None

    daemon = Daemon(BasePVInterface(prefixes={"main": "RUN:D:"}))
    daemon.timeout = 0
    try:
        with pytest.raises(SystemExit) as exited:
            daemon.start([], log_dir=None)
    finally:
        daemon.io.close()
    assert exited.value.code == 2
    assert "field 'timeout' must be a positive number of seconds, not 0" in capsys.readouterr().err


@pytest.mark.parametrize("tasks, interval", [(10, 0.005), (100, 0.005), (400, 0.02), (1000, 0.05)])
def test_the_gil_switch_interval_grows_with_the_tasks_of_a_process(tasks, interval):
    """So that a batch waking every loop at once does not become a storm of GIL wake-ups."""
    import sys

    from epics_bridge.engine.runner import _pace_gil

    before = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    try:
        _pace_gil(tasks)
        assert sys.getswitchinterval() == pytest.approx(interval)
    finally:
        sys.setswitchinterval(before)
