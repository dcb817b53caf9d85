"""``epics-bridge new NAME --prefix PREFIX [--period S] [--async]``: a new task and its tests.

Writes, in the current folder, ``tasks/NAME.py`` (a working task with two typed example PVs),
``tests/test_NAME.py`` (passing tests on a real soft IOC through the ``bridge_ioc`` fixture) and,
when the folder has no pytest configuration yet, the ``pytest.ini`` those tests need. No database:
the PVs are declared with their types, from which ``--ioc`` and the tests' IOC make the records
(and ``epics-bridge db`` writes them for a facility's IOC). It never overwrites: if any of the
files exists, nothing is written.
"""

from __future__ import annotations

import argparse
import keyword
import sys
from pathlib import Path
from string import Template
from typing import Dict, List, NoReturn, Optional, Sequence

from ..registry import Registry
from ..task import ConfigError
from .common import fail

__all__ = ["main", "files"]

TASK = Template('''\
"""$name: $summary

Written by ``epics-bridge new``; make it yours:

- ``pvs``: the PVs the task uses, logical name -> PV relative to the prefix (``t.pvs.input`` is
  "${prefix}Input"), each declared with its type: reads come back as that type, and a write that
  does not fit (type, ``limits``) fails the cycle before anything is written. ``--ioc`` and the
  tests make a record for each; ``epics-bridge db tasks/ -o $name.db`` writes them for your IOC.
  ``writable=True`` makes a setpoint (an output record); a name ending in ``SP`` is one anyway.
- the function: one cycle's work. ``t.get``/``t.put`` take the logical names; return a TaskStatus
  (None counts as SUCCESS, False as LOGIC_FAILURE). A PV that does not answer raises PVError and
  the cycle reports IO_FAILURE.$async_hint
- $mode_hint
- ``tests/test_$name.py``: what the task must do, on a real soft IOC (``python -m pytest``).

Run it on an embedded soft IOC: ``python -m epics_bridge tasks/ --ioc``.
"""
from epics_bridge import PV, TaskStatus, bridge


@bridge.task(
    prefix="$prefix",
    pvs={
        "input": PV("Input", float, precision=3, writable=True, description="$name input"),
        "output": PV("Output", float, precision=3, description="$name output: twice the input"),
    },$period_line
)
${async_}def $name(t):
    value = ${await_}t.get("input")
    if value < 0:
        t.log.warning("input {} is negative: output left as it is", value)
        return TaskStatus.LOGIC_FAILURE
    ${await_}t.put(output=2 * value)
    return TaskStatus.SUCCESS


if __name__ == "__main__":
    bridge.run()
''')

ASYNC_HINT = """
- ``async def``: ``await`` every ``t.get``/``t.put`` (one left without ``await`` fails the cycle,
  naming its line); ``asyncio.gather`` runs several reads, writes or calls of async client
  libraries at once. A blocking call (``time.sleep``, a blocking client) stalls the whole task:
  use the awaitable versions (``asyncio.sleep``). See epics-bridge's docs/async.md."""

TESTS = Template('''\
"""tasks/$name.py on a real soft IOC: the bridge_ioc fixture (from epics-bridge) starts one serving
the task's PVs, runs the task on it and stops both when the test ends."""
from epics_bridge import TaskStatus
from tasks.$name import $name


def test_output_is_twice_the_input(bridge_ioc):
    ioc = bridge_ioc($name)
    ioc.put($name, input=2.5)
    result = ioc.cycle($name)$cycle_comment
    assert result.status == TaskStatus.SUCCESS
    assert ioc.get($name, "output") == 5.0


def test_a_negative_input_is_refused(bridge_ioc):
    ioc = bridge_ioc($name)
    ioc.put($name, input=-1.0)
    result = ioc.cycle($name)
    assert result.status == TaskStatus.LOGIC_FAILURE
    assert "negative" in result.log
    assert ioc.get($name, "output") == 0
''')

PYTEST_INI = """\
[pytest]
# written by epics-bridge new: the tests import the task files as tasks.<name>
testpaths = tests
pythonpath = .
"""
#: Where pytest finds its configuration, and the section that makes a file one.
PYTEST_CONFIGS = {
    "pytest.ini": "",
    "pyproject.toml": "[tool.pytest.ini_options]",
    "tox.ini": "[pytest]",
    "setup.cfg": "[tool:pytest]",
}


def _pytest_config(folder: Path) -> Optional[Path]:
    for name, section in PYTEST_CONFIGS.items():
        path = folder / name
        if path.is_file() and section in path.read_text(errors="replace"):
            return path
    return None


def _validate(name: str, prefix: str, period: Optional[float]) -> None:
    """NAME names a file, a module and a function; the rest is checked as @bridge.task checks it."""
    if not name.isidentifier() or keyword.iskeyword(name) or name.startswith("_"):
        raise ConfigError(
            f"NAME {name!r}: it names the file tasks/{name}.py and its function, so it must be a "
            "Python identifier not starting with '_' (e.g. vacuum_pump)"
        )

    def probe(t: object) -> None:
        """Stands for the task the files will hold."""

    try:
        Registry.make(probe, name=name, prefix=prefix, pvs={"input": "Input", "output": "Output"}, period=period)
    except ConfigError as exc:
        code = probe.__code__
        raise ConfigError(str(exc).replace(f"{code.co_filename}:{code.co_firstlineno}: ", "")) from None


def files(name: str, prefix: str, period: Optional[float], is_async: bool = False) -> Dict[str, str]:
    """The new files by path relative to the folder (``pytest.ini`` not included)."""
    timer = period is not None
    values = dict(
        name=name,
        prefix=prefix,
        async_="async " if is_async else "",
        await_="await " if is_async else "",
        async_hint=ASYNC_HINT if is_async else "",
        summary=f"runs every {period:g} s (a timer task)." if timer else "runs once per trigger (Trigger=1).",
        period_line=f"\n    period={period!r}," if timer else "",
        mode_hint=(
            f"``period={period!r}``: the task runs every {period:g} s; remove it to run on each "
            f"trigger ({prefix}Trigger = 1) instead."
            if timer
            else f"it runs when a client writes 1 to {prefix}Trigger; ``period=SECONDS`` runs it on a timer instead."
        ),
        cycle_comment="  # the next timer cycle: it reads the input put above" if timer else "",
    )
    return {
        f"tasks/{name}.py": TASK.substitute(values),
        f"tests/test_{name}.py": TESTS.substitute(values),
    }


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="epics-bridge new",
        description="Write a new task in this folder: tasks/NAME.py and tests/test_NAME.py "
        "(and pytest.ini when there is no pytest configuration). Existing files are never "
        "overwritten.",
    )
    parser.add_argument("name", metavar="NAME", help="the task's name: its file, function and log file")
    parser.add_argument("--prefix", required=True, help="the task's PV prefix, e.g. VAC:PUMP:01:")
    parser.add_argument(
        "--period", type=float, metavar="SECONDS", help="run on a timer every SECONDS instead of on each trigger"
    )
    parser.add_argument(
        "--async",
        dest="is_async",
        action="store_true",
        help="an 'async def' task: await t.get/t.put and async client libraries inside a cycle (docs/async.md)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str], folder: Optional[Path] = None) -> NoReturn:
    args = _parse(argv)
    folder = Path.cwd() if folder is None else folder
    try:
        _validate(args.name, args.prefix, args.period)
    except ConfigError as exc:
        fail(f"epics-bridge new: {exc}")
    wanted = files(args.name, args.prefix, args.period, args.is_async)
    existing = [path for path in wanted if (folder / path).exists()]
    if existing:
        fail(
            f"epics-bridge new: {', '.join(existing)} already exist{'s' if len(existing) == 1 else ''} in "
            f"{folder}; nothing was written (choose another NAME, or remove the file)"
        )
    config = _pytest_config(folder)
    if config is None:
        wanted["pytest.ini"] = PYTEST_INI
    for path, text in wanted.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(text)
    print(_summary(args.name, list(wanted), config))
    sys.exit(0)


def _summary(name: str, written: List[str], config: Optional[Path]) -> str:
    lines = ["wrote " + ", ".join(written)]
    if config is not None and "pythonpath" not in config.read_text(errors="replace"):
        lines.append(
            f"kept your pytest configuration {config.name}: the tests import tasks.{name}, so it needs "
            "'pythonpath = .' (or run them with python -m pytest from this folder)"
        )
    lines += [
        "next:",
        "  python -m pytest                        # the task's tests, on a real soft IOC",
        "  python -m epics_bridge tasks/ --ioc     # run it on an embedded soft IOC (Ctrl-C stops)",
    ]
    return "\n".join(lines)
