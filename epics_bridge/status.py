"""The result of one cycle, as the IOC's TaskStatus mbbi shows it."""

from __future__ import annotations

from enum import IntEnum


class TaskStatus(IntEnum):
    """Values match the states of ``$(P)TaskStatus`` in ``db/bridge.db``.

    DONE and ERROR are aliases kept for code written against epics-bridge 1.0.1's README.
    """

    SUCCESS = 0
    LOGIC_FAILURE = 1
    IO_FAILURE = 2
    EXCEPTION = 3
    SKIPPED = 4

    DONE = 0
    ERROR = 1


def status_of(result: object) -> TaskStatus:
    """Map what a task function returned to a status.

    Anything else than a TaskStatus, None or a bool is a programming error the operator must
    see, so it raises instead of guessing (the cycle turns that into EXCEPTION).
    """
    if result is None:
        return TaskStatus.SUCCESS
    if isinstance(result, bool):
        return TaskStatus.SUCCESS if result else TaskStatus.LOGIC_FAILURE
    if isinstance(result, TaskStatus):
        return result
    if isinstance(result, int) and result in TaskStatus._value2member_map_:
        return TaskStatus(result)
    if hasattr(result, "__await__"):
        close = getattr(result, "close", None)
        if callable(close):  # a coroutine: closed, so Python does not also warn it was never awaited
            close()
        raise TypeError(
            f"a task returned {type(result).__name__} {result!r}, which nothing awaits: declare the task "
            "function 'async def' and the engine runs it on the task's event loop"
        )
    raise TypeError(f"a task must return a TaskStatus, True/False or None, not {type(result).__name__} {result!r}")
