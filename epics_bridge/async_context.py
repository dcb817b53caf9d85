"""The ``t`` an ``async def`` task receives: the verbs of :class:`~epics_bridge.task_context.TaskContext`,
awaited.

``await t.get(...)`` and ``await t.put(...)`` take the same arguments, resolve the same names (a
typo raises at the call, before any await), read and write in the same batches under one deadline
per batch and raise the same :class:`~epics_bridge.io.PVError`; ``t.name``, ``t.pvs``, ``t.log`` and
``t.io`` are the same objects. Each call returns a :class:`PVOperation`, whose IO runs when it is
awaited, so ``asyncio.gather(t.get("a"), t.get("b"))`` has both batches out at once.

An operation never awaited would pass silently: a write that never happened, a "value" that is an
object. So the context keeps each operation until it is awaited, and the engine calls
:meth:`AsyncTaskContext.check_awaited` when the coroutine ends, which fails the cycle naming every
such call and its line.

Nothing here imports asyncio: a process without async tasks never loads it (~3 MB).
"""

from __future__ import annotations

import sys
from typing import Any, Awaitable, Callable, Dict, Generator, List, Mapping, Optional, Sequence, Union

from .task_context import TaskContext

__all__ = ["AsyncTaskContext", "NotAwaitedError", "PVOperation"]


class PVOperation:
    """One ``t.get``/``t.put`` of an async task: runs its IO when awaited, once."""

    __slots__ = ("_context", "_start", "call", "where")

    def __init__(self, context: AsyncTaskContext, start: Callable[[], Awaitable[Any]], call: str, where: str) -> None:
        self._context = context
        self._start: Optional[Callable[[], Awaitable[Any]]] = start
        #: The call as written, e.g. ``t.put(valve=…)``, and ``file:line`` where it was made.
        self.call, self.where = call, where
        context._unawaited[self] = None

    def __await__(self) -> Generator[Any, None, Any]:
        start, self._start = self._start, None
        if start is None:  # as a coroutine: awaiting it again would silently repeat a write
            raise RuntimeError(f"{self.call} at {self.where} was awaited already: call t.get/t.put again to repeat it")
        self._context._unawaited.pop(self, None)
        return start().__await__()

    def __repr__(self) -> str:
        return f"<{self.call} at {self.where}: a PV operation, to be awaited>"


class NotAwaitedError(TypeError):
    """An async task called ``t.get``/``t.put`` without ``await``: its read or write never ran."""

    def __init__(self, operations: Sequence[PVOperation]) -> None:
        calls = "; ".join(f"{op.call} at {op.where}" for op in operations)
        super().__init__(
            f"never awaited: {calls}. In an async def task these return an operation that runs only "
            "when awaited: write 'await t.get(...)' / 'await t.put(...)' (that read or write did not happen)"
        )


class AsyncTaskContext(TaskContext):
    """Passed to an ``async def`` task function on every cycle; see the module's docstring."""

    __slots__ = ("_unawaited",)
    #: Operations made and not awaited yet, in call order (a dict as an ordered set).
    _unawaited: Dict[PVOperation, None]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        object.__setattr__(self, "_unawaited", {})  # the context is read-only to the task

    def get(
        self,
        names: Union[str, Sequence[str], None] = None,
        timeout: Optional[float] = None,
        *,
        tag: Optional[str] = None,
    ) -> PVOperation:
        """``await t.get(name)``: one PV's value; ``await t.get([...])``: ``{name as given: value}``
        from one batch; ``await t.get(tag="inputs")``: ``{logical name: value}`` of the PVs with that
        tag. A typed PV's value comes as its declared type."""
        names = self._read_names(names, tag)
        if isinstance(names, str):
            call = f"t.get({names!r})"
            pv = self.pv(names)
            if pv not in self._typed:
                return PVOperation(self, lambda: self._aread(pv, timeout), call, _caller())

            async def read_one() -> Any:
                return self._typed_reads({pv: await self._aread(pv, timeout)})[pv]

            return PVOperation(self, read_one, call, _caller())
        listed = list(names)
        pvs = [self.pv(n) for n in listed]
        call = f"t.get({listed!r})" if tag is None else f"t.get(tag={tag!r})"

        async def read() -> Dict[str, Any]:
            values = self._typed_reads(await self._aread(pvs, timeout))
            return {n: values[pv] for n, pv in zip(listed, pvs)}

        return PVOperation(self, read, call, _caller())

    # The verb of TaskContext.put, awaited: it returns the operation instead of None.
    def put(self, values: Optional[Mapping[str, Any]] = None, /, **logical_values: Any) -> PVOperation:  # type: ignore[override]
        """``await t.put(valve=0)`` / ``await t.put({"valve": 0})``: one batch, each write acknowledged;
        a batch with a value that does not fit its typed PV raises PVValueError at the call, nothing
        of it written."""
        merged: Dict[str, Any] = {**(values or {}), **logical_values}
        data = self._typed_writes({self.pv(n): v for n, v in merged.items()})
        call = f"t.put({', '.join(f'{n}=…' for n in merged)})"
        return PVOperation(self, lambda: self._awrite(data), call, _caller())

    async def _aread(self, pvs: Union[str, List[str]], timeout: Optional[float]) -> Any:
        self._guard("get")
        values = await self.io.aget(pvs, timeout)
        self._guard("get")  # what came back may be a restarted IOC's
        return values

    async def _awrite(self, data: Mapping[str, Any]) -> None:
        self._guard("put")
        await self.io.aput(data)
        self._guard("put")

    def check_awaited(self, cause: Optional[BaseException] = None) -> None:
        """Raise :class:`NotAwaitedError` (chained to ``cause``, what the coroutine raised, if any)
        when an operation of the cycle that just ended was never awaited; forget them either way."""
        if not self._unawaited:
            return
        operations: List[PVOperation] = list(self._unawaited)
        self._unawaited.clear()
        raise NotAwaitedError(operations) from cause

    def __repr__(self) -> str:
        return f"AsyncTaskContext(name={self.name!r})"


def _caller() -> str:
    """``file:line`` of the task code that called ``t.get``/``t.put``."""
    frame = sys._getframe(2)
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"
