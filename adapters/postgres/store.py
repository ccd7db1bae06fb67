"""The Store port on PostgreSQL: the shared store (`adapters.sql.store`) reading through a pool
of connections and writing through the one `PgWriter`; LangGraph's checkpoints through the
shared saver, whose read path is given a connection-like object over the same pool."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from types import TracebackType
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from adapters.postgres.db import reason
from adapters.postgres.stalls import end_stalled
from adapters.postgres.tx import POSTGRES, pg_sql
from adapters.postgres.writer import PgWriter
from adapters.sql.checkpoints import GroupCommitSaver, SqlCheckpoints
from adapters.sql.store import SqlStore
from core.domain import Run
from core.errors import StoreUnavailable
from core.ports import Change

Pool = AsyncConnectionPool[psycopg.AsyncConnection[Any]]


def always() -> bool:
    return True


class PgReads:
    """Each query on a connection of the pool, run to its end. While `available` says the
    server is away (this daemon's session lost it), a read fails at once rather than wait
    for the pool's connection timeout."""

    def __init__(self, pool: Pool, available: Callable[[], bool] = always) -> None:
        self._pool = pool
        self._available = available

    async def all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        if not self._available():
            raise StoreUnavailable("the database is unavailable: this daemon lost its session")
        # Once more on another connection when the first was found broken: after a restart
        # of the server, the pool's idle connections are dead and only a use tells.
        for attempt in (1, 2):
            try:
                async with self._pool.connection() as conn:
                    try:
                        cursor = await conn.execute(pg_sql(sql), tuple(params))
                        return await cursor.fetchall()
                    except (psycopg.OperationalError, psycopg.InterfaceError):
                        if attempt == 1 and conn.broken:
                            continue  # the pool drops it on its return
                        raise
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                raise unavailable(exc) from exc
        raise AssertionError("unreachable")


def unavailable(exc: BaseException) -> BaseException:
    """What a failed use of the pool means to the caller. psycopg_pool turns a cancellation
    of a task waiting for a connection into its PoolTimeout (an OperationalError): raised as
    the cancellation it was, or the task that was told to stop would go on (a stop hangs)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        return asyncio.CancelledError()
    return StoreUnavailable(f"the database is unavailable: {reason(exc)}")


class PgStore(SqlStore):
    def __init__(
        self,
        writer: PgWriter,
        pool: Pool,
        available: Callable[[], bool] = always,
        *,
        stalled_after_s: float | None = None,
    ) -> None:
        """`stalled_after_s`: before each renewal of this daemon's leases, another daemon's
        writer that has been waiting in a transaction that long is ended
        (`adapters/postgres/stalls.py`); None: never (a test's store)."""
        super().__init__(writer, PgReads(pool, available), POSTGRES)
        self._pool = pool
        self._available = available
        self.writer = writer
        self._stalled_after_s = stalled_after_s
        # Whether this daemon may judge the others now (see adapters/postgres/session.py):
        # until its session has been back for a while, it takes nothing back from them.
        self.trusted: Callable[[], bool] = lambda: True
        self.stalled_ended = 0  # other daemons' writers ended (`end_stalled`)

    async def renew_leases(self, owner: str, lease_s: float) -> dict[str, int]:
        # First: a stalled writer may hold what this renewal needs (the head, between its
        # flush and its COMMIT), and what the recovery after it is to take back.
        # While the server is away (the session lost it), the renewal fails at once.
        if self._stalled_after_s is not None and self._available():
            await self.end_stalled(self._stalled_after_s)
        return await super().renew_leases(owner, lease_s)

    async def recover_runs(
        self, dead: Sequence[str], max_recoveries: int, recover: Change, give_up: Change
    ) -> list[Run]:
        if not self.trusted():
            return []
        return await super().recover_runs(dead, max_recoveries, recover, give_up)

    async def end_stalled(self, after_s: float) -> int:
        """End other daemons' writers stalled in a transaction for `after_s`; how many."""
        try:
            async with self._pool.connection() as conn:
                ended = await end_stalled(conn, self.writer.backend_pid() or 0, after_s)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise unavailable(exc) from exc
        self.stalled_ended += ended
        return ended


class _Cursor:
    """What LangGraph's SQLite saver does with an aiosqlite cursor, on a pool connection."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._lease: Any = None
        self._cursor: psycopg.AsyncCursor[Any] | None = None

    async def __aenter__(self) -> _Cursor:
        self._lease = self._pool.connection()
        try:
            conn = await self._lease.__aenter__()
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise unavailable(exc) from exc
        self._cursor = conn.cursor()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._cursor is not None:
            await self._cursor.close()
        await self._lease.__aexit__(kind, error, trace)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> _Cursor:
        assert self._cursor is not None
        await self._cursor.execute(pg_sql(sql), tuple(params))
        return self

    async def fetchone(self) -> Any:
        assert self._cursor is not None
        return await self._cursor.fetchone()

    async def fetchall(self) -> list[Any]:
        assert self._cursor is not None
        return await self._cursor.fetchall()

    def __aiter__(self) -> AsyncIterator[Any]:
        assert self._cursor is not None
        return self._cursor.__aiter__()


class _Query:
    """`conn.execute(sql, params)` used as `async with ... as cursor`."""

    def __init__(self, pool: Pool, sql: str, params: Sequence[Any]) -> None:
        self._cursor = _Cursor(pool)
        self._sql = sql
        self._params = params

    async def __aenter__(self) -> _Cursor:
        cursor = await self._cursor.__aenter__()
        try:
            return await cursor.execute(self._sql, self._params)
        except BaseException as exc:
            await self._cursor.__aexit__(type(exc), exc, exc.__traceback__)
            raise

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self._cursor.__aexit__(kind, error, trace)


class SaverConnection:
    """The part of aiosqlite's Connection that the saver's read path uses, over the pool.
    Every `cursor()` is a pool connection of its own: reads run side by side (LangGraph's
    Postgres saver would hold one lock per process around each of them)."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    def cursor(self) -> _Cursor:
        return _Cursor(self._pool)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Query:
        return _Query(self._pool, sql, params)


class _NoLock:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


def pg_checkpoints(
    writer: PgWriter, pool: Pool, available: Callable[[], bool] = always
) -> SqlCheckpoints:
    saver = GroupCommitSaver(writer, SaverConnection(pool), lock=_NoLock())
    return SqlCheckpoints(saver, PgReads(pool, available))
