"""The single writer of a database file, with group commit.

Writes are submitted as operations; the writer folds every operation waiting at that moment
(up to `batch_max`) into one transaction, each inside a savepoint so one failing operation
does not undo the others, and resolves their futures only after the COMMIT. Events an
operation records get their `seq` inside the transaction and are handed to `on_commit`, in
`seq` order, before any caller hears back. Batching is the policy knob: `batch_max=1` is one
commit per write.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import aiosqlite
import structlog

from core.domain import Event
from core.events import Published

log = structlog.get_logger("cortexd.sqlite")
T = TypeVar("T")
JSON = dict[str, Any]


class Tx:
    """What an operation gets: the connection inside the open transaction, and `emit`."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn
        self.events: list[Published] = []

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> None:
        await self.conn.execute(sql, tuple(params))

    async def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> None:
        await self.conn.executemany(sql, [tuple(r) for r in rows])

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> Any:
        async with self.conn.execute(sql, tuple(params)) as cursor:
            return await cursor.fetchone()

    async def emit(self, event: Event) -> JSON:
        payload = event.to_json()
        del payload["seq"]
        body = json.dumps(payload, separators=(",", ":"))
        row = await self.fetchone(
            "INSERT INTO events (project_id, run_id, type, timestamp, body) "
            "VALUES (?, ?, ?, ?, ?) RETURNING seq",
            (
                event.project_id,
                event.run_id,
                event.type.value,
                payload["timestamp"],
                body,
            ),
        )
        published = {"seq": row[0], **payload}
        # The text clients get is the stored body with `seq` put first: serialised once.
        self.events.append(Published(published, f'{{"seq":{row[0]},{body[1:]}'))
        return published


Op = Callable[[Tx], Awaitable[Any]]
_Item = tuple[Op, "asyncio.Future[Any]"]


class Writer:
    def __init__(
        self,
        conn: aiosqlite.Connection,
        *,
        batch_max: int = 256,
        on_commit: Callable[[list[Published]], None] = lambda events: None,
    ) -> None:
        self._conn = conn
        self._batch_max = batch_max
        self.on_commit = on_commit
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.commits = 0
        self.ops = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sqlite-writer")

    async def close(self) -> None:
        """Commit everything submitted so far, then stop."""
        if self._task is None:
            return
        self._queue.put_nowait(None)
        await self._task
        self._task = None

    def submit(self, op: Op) -> asyncio.Future[Any]:
        if self._task is None or self._task.done():
            raise RuntimeError("the store's writer is not running")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((op, future))
        return future

    async def write(self, op: Callable[[Tx], Awaitable[T]]) -> T:
        result: T = await self.submit(op)
        return result

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            batch: list[_Item] = []
            item = first
            while True:
                if item is None:
                    stopping = True
                    break
                batch.append(item)
                if len(batch) >= self._batch_max or self._queue.empty():
                    break
                item = self._queue.get_nowait()
            if batch:
                await self._commit(batch)

    async def _commit(self, batch: list[_Item]) -> None:
        tx = Tx(self._conn)
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        try:
            await self._conn.execute("BEGIN IMMEDIATE")
            for op, future in batch:
                outcomes.append((future, *await self._apply(tx, op)))
            await self._conn.execute("COMMIT")
        except Exception as exc:  # the transaction itself failed: nothing of the batch is kept
            log.exception("batch_failed", ops=len(batch))
            if self._conn.in_transaction:
                await self._conn.execute("ROLLBACK")
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        self.commits += 1
        self.ops += len(batch)
        if tx.events:
            try:
                self.on_commit(tx.events)
            except Exception:  # a listener's bug must not stop every write of the daemon
                log.exception("on_commit_failed")
        for future, result, error in outcomes:
            if future.done():
                continue
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)

    async def _apply(self, tx: Tx, op: Op) -> tuple[Any, BaseException | None]:
        mark = len(tx.events)
        await self._conn.execute("SAVEPOINT op")
        try:
            result = await op(tx)
        except Exception as exc:
            await self._conn.execute("ROLLBACK TO op")
            await self._conn.execute("RELEASE op")
            del tx.events[mark:]
            return None, exc
        await self._conn.execute("RELEASE op")
        return result, None
