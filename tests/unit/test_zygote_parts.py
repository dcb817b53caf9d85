"""The zygote's pieces that need no IOC: the handle on an adopted worker, and what the zygote preloads."""

from __future__ import annotations

import os
import signal
import socket
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


def test_reaping_orphans_names_the_sessions_that_still_have_a_process():
    # a child in a session of its own, as a worker is; the other session has no process left
    pid = os.posix_spawn(sys.executable, [sys.executable, "-c", "import time; time.sleep(30)"], os.environ, setsid=True)
    gone = pid + 1_000_000  # above any pid: a session whose processes have all been reaped
    try:
        assert zygote.reap_orphans({pid, gone}) == {pid}
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert zygote.reap_orphans({pid, gone}) == set()


def test_a_zygote_that_fails_a_fork_is_killed_at_once_not_waited_for():
    """Its socket ended while its process still runs (hung, say): the fork fails and the zygote
    is killed without the graceful 5 s wait, which would stall the supervisor's loop."""
    handle = zygote.Zygote(lifeline=-1, env=dict(os.environ))
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    theirs.close()
    handle.process, handle.sock = process, ours
    read, write = os.pipe()
    started = time.monotonic()
    try:
        with pytest.raises(OSError):
            handle.fork(read, write)
        assert time.monotonic() - started < 3.0
        assert process.poll() == -signal.SIGKILL
        with pytest.raises(OSError):  # and never again
            handle.fork(read, write)
    finally:
        os.close(read)
        os.close(write)
        if process.poll() is None:
            process.kill()
            process.wait()
