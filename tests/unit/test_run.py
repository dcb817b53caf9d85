"""``bridge.run()`` refuses a bad configuration the launcher's way: exit 2, the problems listed."""
from __future__ import annotations

import pytest

from epics_bridge.registry import Registry


def test_a_refused_option_exits_2_naming_it_and_starts_nothing(capsys):
    reg = Registry()
    reg.task(lambda t: None, prefix="RUN:", name="one")
    with pytest.raises(SystemExit) as exited:
        reg.run(log_dir=None, log_level="LOUD")
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "epics-bridge: nothing started:" in err and "--log-level 'LOUD'" in err
