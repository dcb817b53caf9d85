"""The zygote's pieces that need no IOC: the handle on an adopted worker, and what the zygote preloads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from epics_bridge.service import zygote


def child(code: str) -> int:
    """A child of this process running ``code`` (a stand-in for an adopted worker); spawned, not
    forked, and with no ``Popen`` that could reap it first."""
    return os.posix_spawn(sys.executable, [sys.executable, "-c", code], os.environ)


def adopted(code: str) -> zygote.Adopted:
    read, write = os.pipe()
    os.close(read)
    return zygote.Adopted(child(code), write)


def test_an_adopted_process_reports_its_exit_status_like_popen():
    handle = adopted("import os; os._exit(7)")
    assert handle.wait(timeout=10) == 7
    assert handle.poll() == 7
    handle.stdin.close()


def test_waiting_on_an_adopted_process_times_out_then_a_kill_reports_the_signal():
    handle = adopted("import time; time.sleep(30)")
    assert handle.poll() is None
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        handle.wait(timeout=0.2)
    assert time.monotonic() - started >= 0.2
    handle.kill()
    assert handle.wait(timeout=10) == -signal.SIGKILL
    handle.stdin.close()


def test_what_the_zygote_preloads_never_brings_p4p_in():
    """Forking after p4p is imported is undefined behaviour for EPICS: the preload must stay clear of it."""
    code = (
        "import sys; from epics_bridge.service import zygote; "
        "[__import__(m) for m in zygote.PRELOAD]; print(zygote.FORBIDDEN in sys.modules, 'numpy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["False", "True"], out.stderr
