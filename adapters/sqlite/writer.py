"""The single writer of a database file: group commit (`adapters.sql.batching`) on SQLite.

The writer owns a plain `sqlite3` connection; operations (`adapters.sql.tx.Op`) never really
wait on it and are driven to their end in one go (`run_sync`). Each operation of a batch runs
inside a savepoint, so one failing operation does not undo the others. A small batch
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

**Faults of the file system** (`store_error`). SQLite's error says what failed: a full disk
(SQLITE_FULL) is `StoreFull` (507), a file system that will not take writes (read-only, I/O
errors, a file it cannot open, another process holding the lock past the busy timeout) is
`StoreUnavailable` (503). Either one fails the whole batch, not just the operation that met
it: the next operation would meet it too, and SQLite may already have rolled the transaction
back. A corrupt file (SQLITE_CORRUPT, SQLITE_NOTADB) or a database file replaced or deleted
under the daemon (found by `verify`: the path no longer names the file the writer opened;
SQLite itself does not notice in WAL mode, and would go on writing to a file no one will
read) is `WriterDied`: the writer stops, and the daemon exits for its supervisor to start it
afresh on whatever the path holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog

from adapters.sql.batching import GroupCommit, Item, Outcome, WriterDied
from adapters.sql.tx import JSON, Dialect, Op, run_sync
from adapters.sql.tx import Tx as AnyTx
from adapters.sqlite.db import BUSY_TIMEOUT_MS, PRAGMAS
from core.domain import Event
from core.errors import StoreFull, StoreUnavailable
from core.events import Published

log = structlog.get_logger("cortexd.sqlite")
WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024
# After a full disk, writes count as back once its file system has this much room again. A
# disk filled to the brim still takes a write now and then (in space a failed one had the
# WAL file take), which must not make `/readyz` flap.
ROOM_AFTER_FULL_BYTES = 1 << 20

SQLITE = Dialect(
    now="((julianday('now') - 2440587.5) * 86400.0)",
    indexed_by=lambda index: f"INDEXED BY {index}",
    same=lambda a, b: f"{a} IS {b}",
    row_order="rowid",
    next_seq="(SELECT seq + 1 FROM sqlite_sequence WHERE name = 'events')",
)


class Tx:
    """What an operation gets: the connection inside the open transaction. Its methods finish
    at once (SQLite is in-process), so an operation is run with `run_sync`."""

    dialect = SQLITE

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.events: list[Published] = []

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> None:
        self.conn.execute(sql, tuple(params))

    async def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> None:
        self.conn.executemany(sql, [tuple(r) for r in rows])

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> Any:
        return self.conn.execute(sql, tuple(params)).fetchone()

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        return self.conn.execute(sql, tuple(params)).fetchall()

    async def emit(self, event: Event) -> JSON:
        payload = event.to_json()
        del payload["seq"]
        body = json.dumps(payload, separators=(",", ":"))
        (seq,) = self.conn.execute(
            "INSERT INTO events (project_id, run_id, type, timestamp, body) "
            "VALUES (?, ?, ?, ?, ?) RETURNING seq",
            (event.project_id, event.run_id, event.type.value, payload["timestamp"], body),
        ).fetchone()
        published = {"seq": seq, **payload}
        # The text clients get is the stored body with `seq` put first: serialised once.
        self.events.append(Published(published, f'{{"seq":{seq},{body[1:]}'))
        return published

    async def last_seq(self) -> int:
        (seq,) = self.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()
        return int(seq)

    async def lock(self, *name: str) -> None:
        """Nothing to take: the transaction holds the file's write lock (BEGIN IMMEDIATE)."""


class Writer(GroupCommit):
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
        super().__init__(
            name="sqlite-writer",
            batch_max=batch_max,
            lazy_window_s=lazy_window_s,
            on_commit=on_commit,
        )
        self._path = path
        self._inline_max = inline_max
        self._checkpoint_every = checkpoint_every
        self._since_checkpoint = 0
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._conn: sqlite3.Connection | None = None
        self._file: tuple[int, int] | None = None  # (device, inode) of the file opened
        self._wrote = False  # whether the last transaction committed changed any row

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._conn = await loop.run_in_executor(self._thread, _open, self._path)
        self._file = _identity(self._path)
        self._start()

    def cleared(self, fault: StoreUnavailable) -> bool:
        if not self._wrote:  # nothing reached the file: it may refuse writes still
            return False
        if not isinstance(fault, StoreFull):
            return True
        try:
            room = os.statvfs(self._path.parent)
        except OSError:
            return False
        return room.f_bavail * room.f_frsize >= ROOM_AFTER_FULL_BYTES

    async def verify(self) -> None:
        if self._file is not None and _identity(self._path) != self._file:
            raise WriterDied(
                f"the database file {self._path} was replaced or deleted while this daemon "
                "had it open: its writes would go to a file nobody reads"
            )

    async def close(self) -> None:
        """Commit everything submitted so far, then stop and close the connection."""
        await self._stop()
        if self._conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._conn.close)
            self._conn = None
        self._thread.shutdown(wait=True)

    async def apply(self, batch: Sequence[Item]) -> tuple[list[Outcome], list[Published]]:
        try:
            return await self._apply(batch)
        except sqlite3.Error as exc:
            fault = store_error(exc, self._path)
            if fault is None:
                raise
            raise fault from exc

    async def _apply(self, batch: Sequence[Item]) -> tuple[list[Outcome], list[Published]]:
        ops = [item.op for item in batch]
        if len(ops) <= self._inline_max and all(item.small for item in batch):
            applied = self._apply_batch(ops, wait_for_lock=False)  # None: locked
            if applied is not None:
                return applied
        loop = asyncio.get_running_loop()
        waited = await loop.run_in_executor(self._thread, self._apply_batch, ops)
        assert waited is not None  # the thread's call waits for the lock
        return waited

    async def after_commit(self, batch: Sequence[Item]) -> None:
        self._since_checkpoint += len(batch)
        if self._since_checkpoint >= self._checkpoint_every:
            self._since_checkpoint = 0
            await asyncio.get_running_loop().run_in_executor(self._thread, self._wal_checkpoint)

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
    ) -> tuple[list[Outcome], list[Published]] | None:
        """One transaction, one savepoint per operation. Without `wait_for_lock` (on the event
        loop's thread), None when another connection holds the write lock: nothing was done."""
        conn = self._conn
        if conn is None:
            raise RuntimeError("the writer's connection is not open")
        tx = Tx(conn)
        outcomes: list[Outcome] = []
        changes = conn.total_changes
        if wait_for_lock:
            _begin_waiting(conn)
        elif not _begin_now(conn):
            return None
        try:
            for op in ops:
                mark = len(tx.events)
                conn.execute("SAVEPOINT op")
                try:
                    result = run_sync(op(tx))
                except Exception as exc:
                    if isinstance(exc, sqlite3.Error) and store_error(exc, self._path):
                        raise  # the file system, not the operation: the whole batch fails
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    del tx.events[mark:]
                    outcomes.append((None, exc))
                    continue
                conn.execute("RELEASE op")
                outcomes.append((result, None))
            conn.execute("COMMIT")
            self._wrote = conn.total_changes != changes
        except BaseException:
            if conn.in_transaction:
                # SQLite may have rolled back already (after a full disk, an I/O error); a
                # failing ROLLBACK must not hide the error that made it necessary.
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        return outcomes, tx.events


_FULL = {sqlite3.SQLITE_FULL}
_UNAVAILABLE = {
    sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_BUSY,
    sqlite3.SQLITE_LOCKED,
    sqlite3.SQLITE_NOMEM,
    sqlite3.SQLITE_PROTOCOL,
}
_FATAL = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}


def store_error(exc: sqlite3.Error, path: Path) -> StoreUnavailable | None:
    """What a write that failed with `exc` tells the client and the writer: None when it is
    the operation's own error (a constraint, a bug), not the store's."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return None
    name = getattr(exc, "sqlite_errorname", str(code))
    primary = code & 0xFF
    if primary in _FULL:
        return StoreFull(f"the store's disk is full: cannot write {path} ({exc})")
    if primary in _FATAL:
        return WriterDied(f"the database {path} is damaged ({exc}, {name})")
    if primary in _UNAVAILABLE:
        return StoreUnavailable(f"the store cannot take writes: {path}: {exc} ({name})")
    return None


def probe_for(instance: str) -> Op:
    """The writer's probe on SQLite: this daemon's row of `instances` written back as it is
    (it exists while the daemon lives). Like any change it appends a page to the WAL file,
    so it fails while a real write would."""

    async def probe(tx: AnyTx) -> None:
        await tx.execute("UPDATE instances SET pid = pid WHERE id = ?", (instance,))

    return probe


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return (stat.st_dev, stat.st_ino)


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
            raise StoreUnavailable(
                f"the database is locked by another process for more than {BUSY_TIMEOUT_MS} ms"
            )
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
