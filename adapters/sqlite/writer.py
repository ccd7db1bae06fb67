"""The single writer of a database file, with group commit.

Writes are submitted as operations; the writer folds every operation waiting at that moment
(up to `batch_max`) into one transaction, each inside a savepoint so one failing operation
does not undo the others, and resolves their futures only after the COMMIT. Events an
operation records get their `seq` inside the transaction and are handed to `on_commit`, in
`seq` order, before any caller hears back. Batching is the policy knob: `batch_max=1` is one
commit per write.

The writer owns a plain `sqlite3` connection; operations are plain functions. A small batch
(up to `inline_max` operations, each submitted as `small`: a run's records, a step's checkpoint)
is committed right on the event loop's thread: a commit of a few rows in WAL mode without fsync
takes tens of microseconds, less than the two thread switches of a hop, and a lone run's
latency is a chain of such commits. Any other batch goes to the writer's thread in one hop,
where SQLite's work, done outside the GIL, overlaps the loop's; so do operations that may touch
many rows (pruning, deletes), and a small batch that finds the database locked by another
process (the loop never waits for a lock). (Through aiosqlite every statement, savepoint and release
was a round trip between the loop and its thread; measured, those hops, not SQLite, were what
bounded throughput.)

Nothing that can take long runs on the loop: SQLite's automatic WAL checkpoint (which copies
pages into the database file and fsyncs it, inside whichever COMMIT crosses the threshold) is
off for this connection, and the writer runs a PASSIVE checkpoint on its thread after every
`checkpoint_every` writes instead (and `journal_size_limit` trims the WAL file after one).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import structlog

from adapters.sqlite.db import BUSY_TIMEOUT_MS, PRAGMAS
from core.domain import Event
from core.events import Published

log = structlog.get_logger("cortexd.sqlite")
T = TypeVar("T")
JSON = dict[str, Any]
WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024


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


@dataclass(frozen=True, slots=True)
class _Item:
    op: Op
    future: asyncio.Future[Any]
    small: bool


_Outcome = tuple[Any, BaseException | None]


class Writer:
    def __init__(
        self,
        path: Path,
        *,
        batch_max: int = 256,
        inline_max: int = 4,
        checkpoint_every: int = 1000,
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
        # serves both. Nothing a caller needs before it can go on is lazy (at worst, a run's
        # end waits out the window for its last task's writes).
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

    def submit(self, op: Op, *, lazy: bool = False, small: bool = False) -> asyncio.Future[Any]:
        """Queue `op`; the future resolves once its transaction is committed. `small`: it
        writes a few rows at most, so it may be committed on the event loop's thread."""
        if self._task is None or self._task.done():
            raise RuntimeError("the store's writer is not running")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if lazy:
            self._lazy.add(future)
        self._queue.put_nowait(_Item(op, future, small))
        self._arrived.set()
        return future

    async def write(self, op: Callable[[Tx], T], *, small: bool = False) -> T:
        result: T = await self.submit(op, small=small)
        return result

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            item = await self._queue.get()
            if item is not None and item.future in self._lazy and self._queue.empty():
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), self._lazy_window_s)
            batch: list[_Item] = []
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

    async def _commit(self, batch: list[_Item]) -> None:
        loop = asyncio.get_running_loop()
        ops = [item.op for item in batch]
        applied: tuple[list[_Outcome], list[Published]] | None = None
        try:
            if len(ops) <= self._inline_max and all(item.small for item in batch):
                applied = self._apply_batch(ops, wait_for_lock=False)  # None: locked
            if applied is None:
                applied = await loop.run_in_executor(self._thread, self._apply_batch, ops)
        except Exception as exc:  # the transaction itself failed: nothing of the batch is kept
            log.exception("batch_failed", ops=len(batch))
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        assert applied is not None  # the thread's call waits for the lock
        outcomes, events = applied
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
        self._since_checkpoint += len(batch)
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

    def _apply_batch(
        self, ops: list[Op], wait_for_lock: bool = True
    ) -> tuple[list[_Outcome], list[Published]] | None:
        """One transaction, one savepoint per operation. Without `wait_for_lock` (on the event
        loop's thread), None when another connection holds the write lock: nothing was done."""
        conn = self._conn
        if conn is None:
            raise RuntimeError("the writer's connection is not open")
        tx = Tx(conn)
        outcomes: list[_Outcome] = []
        if wait_for_lock:
            _begin_waiting(conn)
        elif not _begin_now(conn):
            return None
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


def _begin_now(conn: sqlite3.Connection) -> bool:
    """BEGIN IMMEDIATE if the write lock is free; False (nothing begun) if another connection
    holds it. The writer's connection runs with busy_timeout=0: it never waits inside SQLite."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY:  # BUSY_RECOVERY, _SNAPSHOT...
            return False
        raise
    return True


def _begin_waiting(conn: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE, waiting for another process's write lock up to BUSY_TIMEOUT_MS (on the
    writer's thread). SQLite's own busy handler sleeps 1, 2, 5, 10 ms... between tries, which
    is long next to the other daemons' commits (a tenth of a millisecond) on a shared file;
    this tries again after 0.1 ms, doubling up to 5 ms."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    pause = 0.0001
    while not _begin_now(conn):
        if time.monotonic() > deadline:
            raise sqlite3.OperationalError("database is locked")
        time.sleep(pause)
        pause = min(pause * 2, 0.005)


def _open(path: Path) -> sqlite3.Connection:
    # Used from the loop's thread (small batches) and the writer's thread (large batches,
    # checkpoints), never at the same time: the writer's one task sequences every use.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for pragma in PRAGMAS:
        conn.execute(pragma)
    conn.execute("PRAGMA wal_autocheckpoint=0")  # the writer checkpoints, off the loop
    conn.execute("PRAGMA busy_timeout=0")  # it waits for other processes itself, see above
    # After a checkpoint lets the WAL start over, its file is cut back to this size.
    conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
    return conn
