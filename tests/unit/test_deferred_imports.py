"""The stand-ins of epics_bridge.deferred_imports: a worker's imports leave out setuptools and asyncio,
and code that does use either still gets the real thing. Each case runs in a fresh interpreter,
since the stand-ins act at first import."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_worker_imports_neither_setuptools_nor_asyncio_nor_ssl():
    out = run(
        """
        import sys
        import epics_bridge.service.worker, p4p.client.thread
        from epics_bridge import Registry
        from epics_bridge.service.inprocess import in_process
        from epics_bridge.service.options import Options
        from loguru import logger

        reg = Registry()
        reg.task(lambda t: None, prefix="LEAN:", name="lean")
        in_process(reg.tasks, Options.of({"log_dir": None, "log_pvs": False}))  # a worker's set-up, no metrics
        logger.info("a line")
        print(sorted(m for m in ("setuptools", "asyncio", "ssl") if m in sys.modules))
        """
    )
    assert out.strip() == "[]"


def test_a_coroutine_sink_still_gets_its_loop():
    out = run(
        """
        import asyncio
        import epics_bridge
        from loguru import logger

        async def sink(message):
            print("sink:", message.record["message"])

        async def main():
            logger.remove()
            logger.add(sink)
            logger.info("through the loop")
            await logger.complete()

        asyncio.run(main())
        """
    )
    assert out.strip() == "sink: through the loop"


def test_setuptools_dso_is_whole_when_used():
    out = run(
        """
        import epics_bridge, p4p.client.thread
        import setuptools_dso
        print(setuptools_dso.DSO.__name__, callable(setuptools_dso.setup))
        """
    )
    assert out.strip() == "DSO True"
