"""Group commit, the same on both databases: a store's single writer.

Writes are submitted as operations; the writer folds every operation waiting at that moment
(up to `batch_max`) into one transaction and resolves their futures only after the COMMIT,
each with its own outcome (an operation that fails leaves the others of its batch done).
Events an operation records get their `seq` inside the transaction and are handed to
`on_commit`, in `seq` order, before any caller hears back. Batching is the policy knob:
`batch_max=1` is one commit per write. How a batch becomes a transaction is the database's
part (`apply`).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from adapters.sql.tx import Op, Tx
from core.events import Published

log = structlog.get_logger("cortexd.store")
T = TypeVar("T")

Outcome = tuple[Any, BaseException | None]


@dataclass(frozen=True, slots=True)
class Item:
    op: Op
    future: asyncio.Future[Any]
    small: bool


class GroupCommit(abc.ABC):
    def __init__(
        self,
        *,
        name: str,
        batch_max: int = 256,
        lazy_window_s: float = 0.005,
        on_commit: Callable[[list[Published]], None] = lambda events: None,
    ) -> None:
        self._name = name
        self._batch_max = batch_max
        # A lazy write (a node's "running" record, a progress report, a task's writes) waits
        # up to this long for company before it is committed alone: the write that follows it
        # (the node's writes, the step's checkpoint) usually comes within it, and one commit
        # serves both. Nothing a caller needs before it can go on is lazy (at worst, a run's
        # end waits out the window for its last task's writes).
        self._lazy_window_s = lazy_window_s
        self._lazy: set[asyncio.Future[Any]] = set()
        self._arrived = asyncio.Event()
        self.on_commit = on_commit
        self._queue: asyncio.Queue[Item | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.commits = 0
        self.ops = 0

    @abc.abstractmethod
    async def apply(self, batch: Sequence[Item]) -> tuple[list[Outcome], list[Published]]:
        """One transaction for the batch: each operation's outcome, and the events committed.
        Raises (nothing of the batch kept) when the transaction itself fails."""

    @abc.abstractmethod
    async def after_commit(self, batch: Sequence[Item]) -> None:
        """The database's upkeep after a batch committed (SQLite: its WAL checkpoint)."""

    def _start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._name)

    async def _stop(self) -> None:
        """Commit everything submitted so far, then stop."""
        if self._task is not None:
            self._queue.put_nowait(None)
            await self._task
            self._task = None

    def submit(self, op: Op, *, lazy: bool = False, small: bool = False) -> asyncio.Future[Any]:
        """Queue `op`; the future resolves once its transaction is committed. `small`: it
        writes a few rows at most."""
        if self._task is None or self._task.done():
            raise RuntimeError("the store's writer is not running")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if lazy:
            self._lazy.add(future)
        self._queue.put_nowait(Item(op, future, small))
        self._arrived.set()
        return future

    async def write(self, op: Callable[[Tx], Any], *, small: bool = False) -> Any:
        return await self.submit(op, small=small)

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            item = await self._queue.get()
            if item is not None and item.future in self._lazy and self._queue.empty():
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), self._lazy_window_s)
            batch: list[Item] = []
            while True:
                if item is None:
                    stopping = True
                    break
                self._lazy.discard(item.future)
                if not item.future.cancelled():  # its caller gave up before it ran
                    batch.append(item)
                if len(batch) >= self._batch_max or self._queue.empty():
                    break
                item = self._queue.get_nowait()
            if batch:
                await self._commit(batch)

    async def _commit(self, batch: list[Item]) -> None:
        try:
            outcomes, events = await self.apply(batch)
        except Exception as exc:  # the transaction itself failed: nothing of the batch is kept
            log.warning("batch_failed", ops=len(batch), error=repr(exc))
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        self.commits += 1
        self.ops += len(batch)
        if events:
            try:
                self.on_commit(events)
            except Exception:  # a listener's bug must not stop every write of the daemon
                log.exception("on_commit_failed")
        for item, (result, error) in zip(batch, outcomes, strict=True):
            future = item.future
            if future.done():
                continue
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)
        await self.after_commit(batch)
