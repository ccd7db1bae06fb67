"""This daemon's own session on PostgreSQL: the proof that it lives, and its ear for the others.

One dedicated autocommit connection (never through a pool, never through pgbouncer's
transaction mode: both would lose session state) holds
- a session advisory lock keyed by this instance's id: the server lets go of it when the
  session ends, however the process ended (kill -9 included: the kernel closes its socket), so
  a lock that another session can take is a dead instance (`PgLiveness`); a stopped (SIGSTOP)
  or stalled daemon keeps its session, and only its leases expiring free its runs;
- `LISTEN cortexd_events`: the other daemons' commits wake this one's tail.

A LISTEN connection can die silently (graphile-worker #541, pgqueuer #253): this one has TCP
keepalives, and when no notification came for `health_s` it runs a query to prove itself.
After any drop it connects again (backing off), takes its lock and LISTENs again, and wakes
the tail, which reads the log from its last seq: what was committed meanwhile is not missed.

After a drop, liveness is trusted again only once this session has been back for `grace_s`:
a database restart ends every daemon's session at once, and the first one back must not take
the others for dead (nor their leases, which could not be renewed meanwhile, for expired)
before they had the time to come back too. At a daemon's start there is no such wait: it
takes back at once what a daemon killed before it left.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from typing import Any

import psycopg
import structlog

from adapters.postgres.db import SERVER_KEEPALIVES, StoreUnreachable, connect, describe, reason
from adapters.postgres.store import Pool, unavailable
from adapters.postgres.tx import CHANNEL
from core.background import Background

log = structlog.get_logger("cortexd.postgres")
RETRY_MAX_S = 2.0


def instance_key(instance: str) -> int:
    """The advisory lock key (a signed bigint) of an instance id."""
    digest = hashlib.blake2b(instance.encode(), digest_size=8, person=b"cortexd").digest()
    return int.from_bytes(digest, "big", signed=True)


class Session:
    def __init__(
        self,
        url: str,
        instance: str,
        on_wake: Callable[[], None],
        *,
        health_s: float = 5.0,
        grace_s: float = 5.0,
    ) -> None:
        self._url = url
        self._key = instance_key(instance)
        self._on_wake = on_wake
        self._health_s = health_s
        self._grace_s = grace_s
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._up_since: float | None = None
        self._restored = False  # the session was lost and opened again since the start
        self._background = Background("postgres-session")
        # The server process of this daemon's own writer: its commits reach this daemon's
        # feed straight from the writer (`EventFeed.committed`), so their NOTIFY needs no read.
        self.own_writer: Callable[[], int | None] = lambda: None
        self.reconnects = 0
        self.notifications = 0

    async def start(self) -> None:
        """Take this instance's lock (a clear error if the database cannot be reached)."""
        try:
            self._conn = await self._open()
        except psycopg.OperationalError as exc:
            raise StoreUnreachable(
                f"cannot connect to PostgreSQL at {describe(self._url)}: {reason(exc)}"
            ) from exc
        self._background.start(self._run())

    async def stop(self) -> None:
        await self._background.stop()
        if self._conn is not None:
            await self._conn.close()  # the lock goes with the session
            self._conn = None
        self._up_since = None

    def trusted(self) -> bool:
        """Whether this session has been up long enough to judge the others' sessions."""
        if self._up_since is None:
            return False
        return not self._restored or time.monotonic() - self._up_since >= self._grace_s

    def is_up(self) -> bool:
        """Whether the session is connected now (the server is there, as far as it knows)."""
        return self._up_since is not None

    async def _open(self) -> psycopg.AsyncConnection[Any]:
        conn = await connect(self._url, application_name="cortexd-session")
        try:
            # A drop this daemon did not notice yet may leave its old session holding the
            # lock until the server notices: wait for it, a little at a time.
            pause = 0.05
            while True:
                cursor = await conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key,))
                row = await cursor.fetchone()
                if row is not None and row[0]:
                    break
                await asyncio.sleep(pause)
                pause = min(pause * 2, RETRY_MAX_S)
            await conn.execute(SERVER_KEEPALIVES.encode())  # several statements: simple protocol
            await conn.execute(f"LISTEN {CHANNEL}")
        except BaseException:
            await conn.close()
            raise
        self._up_since = time.monotonic()
        return conn

    async def _run(self) -> None:
        pause = 0.1
        while True:
            conn = self._conn
            try:
                if conn is None:
                    conn = self._conn = await self._open()
                    self._restored = True
                    self.reconnects += 1
                    log.info("store_session_restored", reconnects=self.reconnects)
                    self._on_wake()  # what was committed while it was away
                    pause = 0.1
                await self._listen(conn)
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                log.warning("store_session_lost", error=reason(exc))
                self._up_since = None
                if conn is not None:
                    await conn.close()
                self._conn = None
                await asyncio.sleep(pause)
                pause = min(pause * 2, RETRY_MAX_S)

    async def _listen(self, conn: psycopg.AsyncConnection[Any]) -> None:
        woke = False
        async for notify in conn.notifies(timeout=self._health_s):
            self.notifications += 1
            woke = True
            if notify.pid != self.own_writer():
                self._on_wake()
        if not woke:
            await conn.execute("SELECT 1")  # silent for a while: prove the connection


class PgLiveness:
    """An instance is dead when its session's lock can be taken (and is let go at once)."""

    def __init__(self, pool: Pool, session: Session) -> None:
        self._pool = pool
        self._session = session

    async def is_dead(self, instance: str) -> bool:
        if not self._session.trusted():
            return False
        key = instance_key(instance)
        try:
            async with self._pool.connection() as conn:
                cursor = await conn.execute("SELECT pg_try_advisory_lock(%s)", (key,))
                row = await cursor.fetchone()
                if row is None or not row[0]:
                    return False
                await conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise unavailable(exc) from exc
        return True
