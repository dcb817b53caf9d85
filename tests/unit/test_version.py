"""One version, above the epics-bridge 5.0.0 on PyPI, printed by ``epics-bridge --version``."""

from __future__ import annotations

import re

import pytest

import epics_bridge
from epics_bridge import cli


def test_the_version_sorts_above_upstream_5_0_0():
    release = re.match(r"(\d+)\.(\d+)\.(\d+)", epics_bridge.__version__)
    assert release and tuple(map(int, release.groups())) > (5, 0, 0)


def test_version_option_prints_it_and_exits_0(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"epics-bridge {epics_bridge.__version__}"
