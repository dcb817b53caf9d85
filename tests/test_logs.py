"""Unit tests of pure logic in the logging setup: option checks, file-name collisions, fitting lines
into a log PV. (Logging on a real IOC is in test_observability.py.)"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import pytest
from helpers import reset_logging
from loguru import logger

from epics_bridge import ConfigError, Registry
from epics_bridge.observe.logpvs import fit
from epics_bridge.observe.logs import PROCESS_LOG, LogConfig, _check_writable, configure
from epics_bridge.service.options import Options


def tasks(*names: str):
    reg = Registry()
    for n, name in enumerate(names):
        reg.task(lambda t: None, prefix=f"UNIT:{n}:", name=name)
    return reg.tasks


@pytest.fixture
def restore_logging() -> Iterator[None]:
    yield
    reset_logging()


def log_config(directory: Path, **options: object) -> LogConfig:
    """The log configuration the launcher would make of these options, without the console."""
    return replace(Options.of({"log_dir": directory, **options}).log_config(), console=False)


@pytest.mark.parametrize(
    "option, value",
    [
        ("--log-level", "LOUD"),
        ("--p4p-log-level", "chatty"),
        ("--log-rotation", "often"),
        ("--log-retention", "forever-ish"),
    ],
)
def test_a_bad_log_option_is_a_config_error_naming_it(option, value):
    with pytest.raises(ConfigError, match=re.escape(option) + ".*" + re.escape(repr(value))):
        Options.of({option[2:].replace("-", "_"): value})


def test_a_log_folder_that_cannot_be_written_changes_nothing(tmp_path, restore_logging):
    seen = []
    logger.remove()
    logger.add(seen.append, format="{message}")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=re.escape(f"--log-dir '{blocker / 'logs'}' is not writable")):
        configure(tasks("pump"), log_config(blocker / "logs"))
    logger.info("still the old handler")
    assert seen == ["still the old handler\n"]


@pytest.mark.parametrize(
    "names, culprit",
    [
        (("epics-bridge",), "epics-bridge"),
        (("epics-bridge.pump",), "epics-bridge.pump"),
        (("pump", "pump.backup"), "pump.backup"),
    ],
)
def test_task_names_whose_files_collide_are_refused(names, culprit, tmp_path, restore_logging):
    with pytest.raises(ConfigError, match=rf"task '{culprit}': its log file"):
        configure(tasks(*names), log_config(tmp_path))


def test_dotted_names_that_do_not_collide_are_fine(tmp_path, restore_logging):
    configure(tasks("pump.a", "pump.b", "pumps"), log_config(tmp_path))
    assert {p.name for p in tmp_path.iterdir()} >= {"pump.a.log", "pump.b.log", "pumps.log", PROCESS_LOG}


def test_processes_checking_one_log_dir_at_once_all_pass(tmp_path: Path):
    """The supervisor and its workers check --log-dir together; one's check must not fail another's."""
    directory, errors = tmp_path / "logs", []
    start = threading.Barrier(8)

    def check() -> None:
        start.wait()
        for _ in range(300):
            try:
                _check_writable(directory)
            except ConfigError as exc:
                errors.append(exc)

    threads = [threading.Thread(target=check) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:3]
    assert list(directory.iterdir()) == [], "no probe left behind"


def test_levels_are_case_insensitive_and_p4p_stays_at_warning_unless_asked(tmp_path: Path, restore_logging):
    configure(tasks("pump"), log_config(tmp_path, log_level="debug"))
    assert logging.getLogger("p4p").level == logging.WARNING
    configure(tasks("pump"), log_config(tmp_path, p4p_log_level="info"))
    assert logging.getLogger("p4p").level == logging.INFO


def test_fit_keeps_the_newest_whole_lines_that_fit_oldest_first():
    lines = ["aaaa", "bbbb", "cccc"]
    assert fit(lines, None) == "aaaa\nbbbb\ncccc"
    assert fit(lines, 14) == "aaaa\nbbbb\ncccc"
    assert fit(lines, 13) == "bbbb\ncccc"
    assert fit(lines, 9) == "bbbb\ncccc"
    assert fit(lines, 8) == "cccc"
    assert fit([], 10) == ""


def test_fit_counts_utf8_bytes_and_cuts_a_lone_long_line_at_its_end():
    assert fit(["x", "µµ"], 5) == "µµ"  # 4 bytes: the older line and its newline do not fit too
    assert fit(["µµµ"], 3) == "µ"  # never half a character
    assert fit(["0123456789"], 4) == "0123"
