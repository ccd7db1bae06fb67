"""Connecting to PostgreSQL, and its migrations.

Every connection cortexd opens is in autocommit mode (it writes its own BEGIN/COMMIT), with
TCP keepalives so that a connection whose server vanished (a host gone, a partition) fails
within seconds rather than hanging for the kernel's two hours. Migrations are numbered SQL
files like SQLite's, each applied in its own transaction, all of them under a session
advisory lock: daemons starting at once on an empty database wait for the first one's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import psycopg
import structlog
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from adapters.sql.migrations import numbered_migrations, refuse_newer

log = structlog.get_logger("cortexd.postgres")

# The advisory lock key (one bigint) of cortexd's migrations in a database; instance locks
# are keyed by a hash of the instance id (adapters/postgres/liveness.py).
MIGRATION_LOCK = 0x636F72746578_01  # "cortex", 1
CONNECT_TIMEOUT_S = 5
# The `application_name` of each daemon's writer connection: what the others look for in
# `pg_stat_activity` to end the transaction of a stalled one (adapters/postgres/stalls.py).
WRITER_NAME = "cortexd-writer"
# What every connection gets, unless the URL says otherwise.
_DEFAULTS: Mapping[str, Any] = {
    "connect_timeout": CONNECT_TIMEOUT_S,
    "application_name": "cortexd",
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 3,
    "keepalives_count": 3,
}


class StoreUnreachable(RuntimeError):
    """The database named by `[storage] url` cannot be reached (at start-up)."""


def conninfo(url: str, **extra: Any) -> str:
    """The URL with cortexd's connection defaults added where it does not set them."""
    given = conninfo_to_dict(url)
    return make_conninfo(url, **{k: v for k, v in {**_DEFAULTS, **extra}.items() if k not in given})


def redact(url: str) -> str:
    """The URL as it may be shown: any password replaced by `***`."""
    if not url:
        return url
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<a URL that is not a valid libpq URI>"
    if "password" not in params and not re.search(r"//[^/@]*:[^/@]*@", url):
        return url
    redacted = re.sub(r"(//[^/:@]*):[^/@]*@", r"\1:***@", url)
    return re.sub(r"(password=)[^&\s]*", r"\1***", redacted)


def describe(url: str) -> str:
    """Where the URL points, without any secret: host:port/dbname."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<invalid URL>"
    host = params.get("host") or params.get("hostaddr") or "localhost"
    return f"{host}:{params.get('port') or 5432}/{params.get('dbname') or params.get('user') or ''}"


def reason(exc: BaseException) -> str:
    """A connection error in one line, without a password it may quote."""
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    text = re.sub(r"(//[^/:@\s]*):[^/@\s]*@", r"\1:***@", lines[0])
    return re.sub(r"(password\s*=\s*)\S+", r"\1***", text)


async def connect(url: str, **extra: Any) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(conninfo(url, **extra), autocommit=True)


# The server's side of a connection that holds what others wait for (the session's instance
# lock, the writer's row locks): its keepalives, so that the server ends the session of a
# daemon whose host vanished within ~20 s, not the operating system's two hours (libpq's
# `keepalives_*` set only the daemon's side). Users may set these (no superuser needed).
SERVER_KEEPALIVES = (
    "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 3; SET tcp_keepalives_count = 3"
)


def migrations() -> list[tuple[int, str, str]]:
    return numbered_migrations("adapters.postgres")


async def prepare_database(url: str) -> list[str]:
    """Apply the numbered migrations not yet recorded, under the migration lock. A clear
    StoreUnreachable when the server cannot be reached. Returns the names applied."""
    try:
        conn = await connect(url)
    except psycopg.OperationalError as exc:
        raise StoreUnreachable(
            f"cannot connect to PostgreSQL at {describe(url)}: {reason(exc)}"
        ) from exc
    try:
        await conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        try:
            return await _migrate(conn)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
    finally:
        await conn.close()


async def _migrate(conn: psycopg.AsyncConnection[Any]) -> list[str]:
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
    )
    cursor = await conn.execute("SELECT version FROM schema_migrations")
    done = {row[0] for row in await cursor.fetchall()}
    refuse_newer(done, migrations(), "the database")
    applied = []
    for version, name, sql in migrations():
        if version in done:
            continue
        async with conn.transaction():
            await conn.execute(sql.encode("utf-8"))  # several statements: the simple protocol
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (%s, %s, now())",
                (version, name),
            )
        applied.append(name)
        log.info("migration_applied", migration=name)
    return applied
