"""The unit tier: pure logic on the in-memory IO, no IOC and no subprocess."""

from __future__ import annotations

from typing import Iterator, List

import pytest
from loguru import logger


class LoguruCapture:
    """Lines logged through loguru while a test ran."""

    def __init__(self) -> None:
        self.lines: List[str] = []

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def caplog_loguru() -> Iterator[LoguruCapture]:
    capture = LoguruCapture()
    sink = logger.add(
        lambda message: capture.lines.append(message.rstrip("\n")),
        level="DEBUG",
        format="{level} | {extra} | {message}",
    )
    try:
        yield capture
    finally:
        logger.remove(sink)
