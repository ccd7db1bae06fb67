"""Opening the database: one writer connection, one reader connection, pragmas, migrations."""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiosqlite
import structlog

from adapters.sql.migrations import numbered_migrations, refuse_newer

log = structlog.get_logger("cortexd.sqlite")

BUSY_TIMEOUT_MS = 5000  # how long a write waits for another process's lock

PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    # In WAL mode NORMAL loses no committed transaction on a process crash (kill -9);
    # only a power loss can drop the last ones. FULL costs an fsync per commit.
    "PRAGMA synchronous=NORMAL",
    f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}",
    "PRAGMA foreign_keys=ON",
)


async def connect(path: Path) -> aiosqlite.Connection:
    """A connection in autocommit mode: cortexd writes its own BEGIN/COMMIT."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = await aiosqlite.connect(path, isolation_level=None)
    for pragma in PRAGMAS:
        await conn.execute(pragma)
    return conn


async def read_all(conn: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> list[Any]:
    """One query, run to its end in one call on the connection's thread. Several coroutines
    share a reader connection: a statement left open across an await (fetched row by row)
    would hold its read transaction, and every other query on the connection meanwhile would
    see that old snapshot (a graph just created, not found)."""
    return list(await conn.execute_fetchall(sql, tuple(params)))


def migrations() -> list[tuple[int, str, str]]:
    return numbered_migrations("adapters.sqlite")


async def migrate(conn: aiosqlite.Connection) -> list[str]:
    """Apply the numbered migrations not yet recorded, each in its own transaction.
    Idempotent: a second call applies nothing. Returns the names applied."""
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    async with conn.execute("SELECT version FROM schema_migrations") as cursor:
        done = {row[0] for row in await cursor.fetchall()}
    refuse_newer(done, migrations(), "the database file")
    applied = []
    for version, name, sql in migrations():
        if version in done:
            continue
        record = (
            "INSERT INTO schema_migrations (version, name, applied_at) "
            f"VALUES ({version}, '{name}', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));"
        )
        await conn.executescript(f"BEGIN IMMEDIATE;\n{sql}\n{record}\nCOMMIT;")
        applied.append(name)
        log.info("migration_applied", migration=name)
    return applied


async def prepare_database(path: Path) -> None:
    """Migrations, then LangGraph's own tables: on a connection of their own, closed before
    the Writer opens the file's one writing connection. Several daemons may start on one file
    at once: the whole of it runs under an exclusive lock on `<database>.migrate.lock`, so
    each migration is applied once, by whichever daemon comes first."""
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = await asyncio.to_thread(_lock_exclusively, path.with_name(path.name + ".migrate.lock"))
    try:
        conn = await connect(path)
        try:
            await migrate(conn)
            await AsyncSqliteSaver(conn).setup()
        finally:
            await conn.close()
    finally:
        os.close(lock)  # lets go of the lock


def _lock_exclusively(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # waits for another daemon's migrations
    except BaseException:
        os.close(fd)
        raise
    return fd
