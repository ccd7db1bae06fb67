"""The single writer of a database file, with group commit.

Writes are submitted as operations; the writer folds every operation waiting at that moment
(up to `batch_max`) into one transaction, each inside a savepoint so one failing operation
does not undo the others, and resolves their futures only after the COMMIT. Events an
operation records get their `seq` inside the transaction and are handed to `on_commit`, in
`seq` order, before any caller hears back. Batching is the policy knob: `batch_max=1` is one
commit per write.

The writer owns a plain `sqlite3` connection; operations are plain functions. A small batch
(up to `inline_max` operations: a lone run's step, a request's write) is committed right on the
event loop's thread: a commit of a few rows in WAL mode without fsync takes tens of
microseconds, less than the two thread switches of a hop, and a lone run's latency is a chain of
such commits. A larger batch goes to the writer's thread in one hop, where SQLite's work, done
outside the GIL, overlaps the loop's. (Through aiosqlite every statement, savepoint and release
was a round trip between the loop and its thread; measured, those hops, not SQLite, were what
bounded throughput.)

Nothing that can take long runs on the loop: SQLite's automatic WAL checkpoint (which copies
pages into the database file and fsyncs it, inside whichever COMMIT crosses the threshold) is
off for this connection, and the writer runs a PASSIVE checkpoint on its thread every
`checkpoint_every` commits instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import structlog

from adapters.sqlite.db import PRAGMAS
from core.domain import Event
from core.events import Published

log = structlog.get_logger("cortexd.sqlite")
T = TypeVar("T")
JSON = dict[str, Any]


class Tx:
    """What an operation gets: the connection inside the open transaction, and `emit`."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.events: list[Published] = []

    def execute(self, sql: str, params: Iterable[Any] = ()) -> None:
        self.conn.execute(sql, tuple(params))

    def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> None:
        self.conn.executemany(sql, [tuple(r) for r in rows])

    def fetchone(self, sql: str, params: Iterable[Any] = ()) -> Any:
        return self.conn.execute(sql, tuple(params)).fetchone()

    def emit(self, event: Event) -> JSON:
        payload = event.to_json()
        del payload["seq"]
        body = json.dumps(payload, separators=(",", ":"))
        (seq,) = self.fetchone(
            "INSERT INTO events (project_id, run_id, type, timestamp, body) "
            "VALUES (?, ?, ?, ?, ?) RETURNING seq",
            (event.project_id, event.run_id, event.type.value, payload["timestamp"], body),
        )
        published = {"seq": seq, **payload}
        # The text clients get is the stored body with `seq` put first: serialised once.
        self.events.append(Published(published, f'{{"seq":{seq},{body[1:]}'))
        return published


Op = Callable[[Tx], Any]
_Item = tuple[Op, "asyncio.Future[Any]"]
_Outcome = tuple[Any, BaseException | None]


class Writer:
    def __init__(
        self,
        path: Path,
        *,
        batch_max: int = 256,
        inline_max: int = 4,
        checkpoint_every: int = 256,
        lazy_window_s: float = 0.005,
        on_commit: Callable[[list[Published]], None] = lambda events: None,
    ) -> None:
        self._path = path
        self._batch_max = batch_max
        self._inline_max = inline_max
        self._checkpoint_every = checkpoint_every
        self._since_checkpoint = 0
        # A lazy write (a node's "running" record, a progress report, a task's writes) waits
        # up to this long for company before it is committed alone: the write that follows it
        # (the node's writes, the step's checkpoint) usually comes within it, and one commit
        # serves both. Nothing a run waits on is lazy.
        self._lazy_window_s = lazy_window_s
        self._lazy: set[asyncio.Future[Any]] = set()
        self._arrived = asyncio.Event()
        self.on_commit = on_commit
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._conn: sqlite3.Connection | None = None
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.commits = 0
        self.ops = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._conn = await loop.run_in_executor(self._thread, _open, self._path)
        self._task = asyncio.create_task(self._run(), name="sqlite-writer")

    async def close(self) -> None:
        """Commit everything submitted so far, then stop and close the connection."""
        if self._task is not None:
            self._queue.put_nowait(None)
            await self._task
            self._task = None
        if self._conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._conn.close)
            self._conn = None
        self._thread.shutdown(wait=True)

    def submit(self, op: Op, *, lazy: bool = False) -> asyncio.Future[Any]:
        if self._task is None or self._task.done():
            raise RuntimeError("the store's writer is not running")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if lazy:
            self._lazy.add(future)
        self._queue.put_nowait((op, future))
        self._arrived.set()
        return future

    async def write(self, op: Callable[[Tx], T]) -> T:
        result: T = await self.submit(op)
        return result

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            item = await self._queue.get()
            if item is not None and item[1] in self._lazy and self._queue.empty():
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), self._lazy_window_s)
            batch: list[_Item] = []
            while True:
                if item is None:
                    stopping = True
                    break
                self._lazy.discard(item[1])
                if not item[1].cancelled():  # its caller gave up before it ran
                    batch.append(item)
                if len(batch) >= self._batch_max or self._queue.empty():
                    break
                item = self._queue.get_nowait()
            if batch:
                await self._commit(batch)

    async def _commit(self, batch: list[_Item]) -> None:
        loop = asyncio.get_running_loop()
        ops = [op for op, _ in batch]
        try:
            if len(ops) <= self._inline_max:
                outcomes, events = self._apply_batch(ops)
            else:
                outcomes, events = await loop.run_in_executor(self._thread, self._apply_batch, ops)
        except Exception as exc:  # the transaction itself failed: nothing of the batch is kept
            log.exception("batch_failed", ops=len(batch))
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        self.commits += 1
        self.ops += len(batch)
        if events:
            try:
                self.on_commit(events)
            except Exception:  # a listener's bug must not stop every write of the daemon
                log.exception("on_commit_failed")
        for (_, future), (result, error) in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)
        self._since_checkpoint += 1
        if self._since_checkpoint >= self._checkpoint_every:
            self._since_checkpoint = 0
            await loop.run_in_executor(self._thread, self._wal_checkpoint)

    def _wal_checkpoint(self) -> None:
        """On the writer's thread: copy what the WAL holds into the database file, as far as
        readers allow (PASSIVE waits for nobody), so the WAL is reused instead of growing."""
        if self._conn is None:
            return
        try:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error:  # retried at the next one; nothing committed depends on it
            log.exception("wal_checkpoint_failed")

    def _apply_batch(self, ops: list[Op]) -> tuple[list[_Outcome], list[Published]]:
        """On the writer's thread: one transaction, one savepoint per operation."""
        conn = self._conn
        if conn is None:
            raise RuntimeError("the writer's connection is not open")
        tx = Tx(conn)
        outcomes: list[_Outcome] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for op in ops:
                mark = len(tx.events)
                conn.execute("SAVEPOINT op")
                try:
                    result = op(tx)
                except Exception as exc:
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    del tx.events[mark:]
                    outcomes.append((None, exc))
                    continue
                conn.execute("RELEASE op")
                outcomes.append((result, None))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return outcomes, tx.events


def _open(path: Path) -> sqlite3.Connection:
    # Used from the loop's thread (small batches) and the writer's thread (large batches,
    # checkpoints), never at the same time: the writer's one task sequences every use.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for pragma in PRAGMAS:
        conn.execute(pragma)
    conn.execute("PRAGMA wal_autocheckpoint=0")  # the writer checkpoints, off the loop
    return conn
