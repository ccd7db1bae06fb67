"""Group commit, the same on both databases: a store's single writer.

Writes are submitted as operations; the writer folds every operation waiting at that moment
(up to `batch_max`) into one transaction and resolves their futures only after the COMMIT,
each with its own outcome (an operation that fails leaves the others of its batch done).
Events an operation records get their `seq` inside the transaction and are handed to
`on_commit`, in `seq` order, before any caller hears back. Batching is the policy knob:
`batch_max=1` is one commit per write. How a batch becomes a transaction is the database's
part (`apply`).

**Faults.** A batch whose transaction fails because of the store (disk full, read-only or
failing file system, database away: `StoreUnavailable`) marks the writer *faulty* (`fault`,
what `/readyz` reports) until a commit succeeds again and `cleared` agrees (on SQLite a
commit must have written something: an empty one proves nothing on a read-only file system;
and a nearly full disk takes a small write now and then, which is no recovery). While it is
faulty the writer probes the store every `PROBE_EVERY_S` with a write of its own (`probe`),
so it finds the store back without any traffic. A fault the writer cannot survive
(`WriterDied`: its database file replaced or corrupt, or a bug in this loop) ends it: every
write waiting and every later one is answered `WriterDied` (a 503), and `died()` returns, on
which the daemon exits non-zero rather than serve without a writer.
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
from core.errors import StoreUnavailable
from core.events import Published

log = structlog.get_logger("cortexd.store")
T = TypeVar("T")

Outcome = tuple[Any, BaseException | None]
# While the store fails, how often the writer tries a write of its own (and, always, how often
# it checks that its database is still the one it opened).
PROBE_EVERY_S = 1.0


class WriterDied(StoreUnavailable):
    """The store's writer stopped for good (its database replaced or corrupt, or a bug): no
    write can be taken any more; the daemon exits so that its supervisor starts it afresh."""


class _Tick:
    """The queue's marker that a probe interval passed."""


_TICK = _Tick()


async def _probe_nothing(tx: Tx) -> None:
    """A transaction with nothing in it: on a database across a network, a round trip."""


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
        self._queue: asyncio.Queue[Item | _Tick | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.commits = 0
        self.ops = 0
        # The store's fault as of the last transaction (None: its last commit went through).
        self.fault: StoreUnavailable | None = None
        self.death: WriterDied | None = None
        self._dead = asyncio.Event()
        self._current: list[Item] = []  # the batch being committed
        # The write that tells whether the store takes writes again, tried every
        # PROBE_EVERY_S while it does not. It must make the database write where a real
        # write would (SQLite: a row, so a page of the WAL file).
        self.probe: Op = _probe_nothing

    @abc.abstractmethod
    async def apply(self, batch: Sequence[Item]) -> tuple[list[Outcome], list[Published]]:
        """One transaction for the batch: each operation's outcome, and the events committed.
        Raises (nothing of the batch kept) when the transaction itself fails."""

    @abc.abstractmethod
    async def after_commit(self, batch: Sequence[Item]) -> None:
        """The database's upkeep after a batch committed (SQLite: its WAL checkpoint)."""

    def cleared(self, fault: StoreUnavailable) -> bool:
        """Whether the commit that just went through ends `fault`: by default it does."""
        return True

    async def verify(self) -> None:
        """Raise `WriterDied` if the writer cannot go on (checked every `PROBE_EVERY_S`). A
        database across a network has no file to lose: by default nothing to check."""
        return None

    @property
    def healthy(self) -> bool:
        return self.fault is None and self.death is None

    async def died(self) -> WriterDied:
        """Return once the writer has stopped for good (never, while it works)."""
        await self._dead.wait()
        assert self.death is not None
        return self.death

    def _start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._name)
        self._ticker = asyncio.create_task(self._tick_every(), name=f"{self._name}-probe")

    async def _stop(self) -> None:
        """Commit everything submitted so far, then stop."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self._task is not None:
            self._queue.put_nowait(None)
            await self._task
            self._task = None

    def submit(self, op: Op, *, lazy: bool = False, small: bool = False) -> asyncio.Future[Any]:
        """Queue `op`; the future resolves once its transaction is committed. `small`: it
        writes a few rows at most."""
        if self.death is not None:
            raise self.death
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

    async def _tick_every(self) -> None:
        while True:
            await asyncio.sleep(PROBE_EVERY_S)
            self._queue.put_nowait(_TICK)

    async def _run(self) -> None:
        try:
            await self._serve()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a fault it cannot survive, or a bug: it stops here
            self._die(exc)
            if not isinstance(exc, Exception):
                raise

    async def _serve(self) -> None:
        stopping = False
        while not stopping:
            item = await self._queue.get()
            if isinstance(item, Item) and item.future in self._lazy and self._queue.empty():
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), self._lazy_window_s)
            batch: list[Item] = []
            tick = False
            while True:
                if item is None:
                    stopping = True
                    break
                if isinstance(item, _Tick):
                    tick = True
                else:
                    self._lazy.discard(item.future)
                    if not item.future.cancelled():  # its caller gave up before it ran
                        batch.append(item)
                if len(batch) >= self._batch_max or self._queue.empty():
                    break
                item = self._queue.get_nowait()
            if batch:
                self._current = batch
                await self._commit(batch)
                self._current = []
            if tick and not stopping:
                await self._tick()

    async def _tick(self) -> None:
        await self.verify()
        if self.fault is None:
            return
        probe = Item(self.probe, asyncio.get_running_loop().create_future(), small=True)
        await self._commit([probe])
        if not probe.future.cancelled():
            probe.future.exception()  # its outcome is the fault's, kept or cleared

    def _die(self, exc: BaseException) -> None:
        if isinstance(exc, WriterDied):
            death = exc
        else:
            death = WriterDied(f"the store's writer failed: {exc!r}")
        self.death = death
        log.critical("store_writer_died", error=str(death), exc_info=exc)
        waiting = list(self._current)
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, Item):
                waiting.append(item)
        for item in waiting:
            if not item.future.done():
                item.future.set_exception(death)
        if self._ticker is not None:
            self._ticker.cancel()
        self._dead.set()

    async def _commit(self, batch: list[Item]) -> None:
        try:
            outcomes, events = await self.apply(batch)
        except Exception as exc:  # the transaction itself failed: nothing of the batch is kept
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            if isinstance(exc, WriterDied):
                raise
            if isinstance(exc, StoreUnavailable):
                self._faulty(exc)
            else:
                log.warning("batch_failed", ops=len(batch), error=repr(exc))
            return
        if self.fault is not None and self.cleared(self.fault):
            log.info("store_writes_recovered", after=str(self.fault))
            self.fault = None
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

    def _faulty(self, exc: StoreUnavailable) -> None:
        if self.fault is None or str(self.fault) != str(exc):
            # Once per fault, not once per write: a full disk fails every write until freed.
            log.error("store_writes_failing", error=str(exc), kind=type(exc).__name__)
        self.fault = exc
