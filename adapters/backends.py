"""The two stores, each opened with everything around it: `[storage] url` unset is SQLite at
`[storage] path`, a `postgresql://` URL is PostgreSQL (DESIGN §8). Both hand the composition
root (`adapters/daemon.py`) the same parts; what is opened is closed by `opened`, in reverse.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from adapters.config import Settings
from adapters.sql.batching import GroupCommit
from adapters.sql.checkpoints import SqlCheckpoints
from adapters.sql.plugin_env import SqlEventLog, SqlPluginState
from adapters.sql.store import SqlStore
from adapters.sql.tx import Reads
from core.errors import StoreUnavailable
from core.events import EventBus, Published
from core.feed import EventFeed
from core.ports import Liveness

log = structlog.get_logger("cortexd.daemon")
POOL_WAIT_S = 5.0


@dataclass
class Backend:
    kind: str  # "sqlite" | "postgres"
    where: str  # the file, or host:port/dbname (never a password)
    store: SqlStore
    writer: GroupCommit
    checkpoints: SqlCheckpoints
    liveness: Liveness
    feed: EventFeed
    reads: Reads
    # Run every second while the daemon serves (SQLite: whom to wake), or None.
    refresh: Callable[[], Awaitable[None]] | None = None

    def plugin_state(self, plugin: str) -> SqlPluginState:
        return SqlPluginState(self.writer, self.reads, plugin)

    def event_log(self) -> SqlEventLog:
        return SqlEventLog(self.reads)


async def open_backend(
    settings: Settings, instance: str, bus: EventBus, opened: contextlib.AsyncExitStack
) -> Backend:
    if settings.storage.url:
        return await _open_postgres(settings, instance, bus, opened)
    return await _open_sqlite(settings, instance, bus, opened)


async def _registered(store: SqlStore, instance: str, wake: str | None) -> None:
    await store.register_instance(instance, socket.gethostname(), os.getpid(), wake)


async def _released(store: SqlStore, instance: str) -> None:
    """The last of a stop: this instance's runs, duties and entry are let go of. With the
    store away the stop goes on: the others take them back once they see this instance's
    lock (SQLite: its file lock; PostgreSQL: its session) gone."""
    try:
        await store.release_owner(instance, datetime.now(UTC))
    except StoreUnavailable as exc:
        log.warning("release_at_stop_failed", error=str(exc))


async def _open_sqlite(
    settings: Settings, instance: str, bus: EventBus, opened: contextlib.AsyncExitStack
) -> Backend:
    from adapters.sqlite.checkpoints import sqlite_checkpoints
    from adapters.sqlite.db import connect, prepare_database
    from adapters.sqlite.liveness import FileLiveness, InstanceLock, instances_dir
    from adapters.sqlite.store import SqliteReads, SqliteStore
    from adapters.sqlite.wakeup import Wakeups
    from adapters.sqlite.writer import Writer, probe_for

    path = settings.storage.path
    await prepare_database(path)
    lock = InstanceLock(instances_dir(path), instance)
    lock.acquire()
    opened.callback(lock.release)
    reader_conn = await connect(path)
    opened.push_async_callback(reader_conn.close)
    checkpoint_reader = await connect(path)
    opened.push_async_callback(checkpoint_reader.close)
    writer = Writer(path, batch_max=settings.storage.batch_max)
    writer.probe = probe_for(instance)
    store = SqliteStore(writer, reader_conn)
    feed = EventFeed(bus, store)
    wakeups = Wakeups(instance, feed.wake)

    def committed(items: list[Published]) -> None:
        feed.committed(items)
        wakeups.notify()

    writer.on_commit = committed
    await writer.start()
    opened.push_async_callback(writer.close)
    await feed.start()
    opened.push_async_callback(feed.stop)
    wakeups.open()
    opened.callback(wakeups.close)
    await _registered(store, instance, wakeups.address)
    opened.push_async_callback(_released, store, instance)

    async def refresh() -> None:
        """The other daemons on this file come and go: whom to wake."""
        wakeups.set_peers(await store.wake_addresses(instance))

    await refresh()
    return Backend(
        kind="sqlite",
        where=str(path),
        store=store,
        writer=writer,
        checkpoints=sqlite_checkpoints(writer, checkpoint_reader),
        liveness=FileLiveness(instances_dir(path)),
        feed=feed,
        reads=SqliteReads(reader_conn),
        refresh=refresh,
    )


async def _open_postgres(
    settings: Settings, instance: str, bus: EventBus, opened: contextlib.AsyncExitStack
) -> Backend:
    from psycopg_pool import AsyncConnectionPool

    from adapters.postgres.db import StoreUnreachable, conninfo, describe, prepare_database
    from adapters.postgres.session import PgLiveness, Session
    from adapters.postgres.store import PgReads, PgStore, pg_checkpoints
    from adapters.postgres.writer import PgWriter

    url = settings.storage.url or ""
    await prepare_database(url)
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        conninfo(url),
        min_size=1,
        max_size=settings.storage.pool_size,
        kwargs={"autocommit": True},
        open=False,
        name="cortexd",
        # A read waits this long for a connection (all busy, or the server away), then the
        # request is answered 503: never a client hanging on a database that is down.
        timeout=POOL_WAIT_S,
        # Connections lost with the server are opened again for as long as it takes.
        reconnect_timeout=24 * 3600.0,
    )
    try:
        await pool.open(wait=True, timeout=10)
    except Exception as exc:
        await pool.close()
        raise StoreUnreachable(f"cannot open connections to PostgreSQL at {describe(url)}") from exc
    opened.push_async_callback(pool.close)
    # The session first: it takes this instance's lock, and tells the writer and the reads
    # when the server is away (they fail at once then).
    session = Session(url, instance, lambda: feed.wake(), grace_s=_grace_s(settings))
    await session.start()
    opened.push_async_callback(session.stop)
    stall_s = max(5.0, settings.execution.lease_s / 2)
    writer = PgWriter(
        url, batch_max=settings.storage.batch_max, available=session.is_up, stall_s=stall_s
    )
    session.own_writer = writer.backend_pid
    # Another daemon's writer in a transaction, waiting for its daemon for longer than a
    # lease and a statement's longest wait: stalled, and ended (adapters/postgres/stalls.py).
    stalled_after_s = settings.execution.lease_s + stall_s
    store = PgStore(writer, pool, session.is_up, stalled_after_s=stalled_after_s)
    feed = EventFeed(bus, store)
    store.trusted = session.trusted
    writer.on_commit = feed.committed
    await writer.start()
    opened.push_async_callback(writer.close)
    await feed.start()
    opened.push_async_callback(feed.stop)
    await _registered(store, instance, None)
    opened.push_async_callback(_released, store, instance)
    return Backend(
        kind="postgres",
        where=describe(url),
        store=store,
        writer=writer,
        checkpoints=pg_checkpoints(writer, pool, session.is_up),
        liveness=PgLiveness(pool, session),
        feed=feed,
        reads=PgReads(pool, session.is_up),
    )


def _grace_s(settings: Settings) -> float:
    """How long after its session (re)connects a daemon waits before it judges the others
    (dead sessions, expired leases): long enough for theirs to come back after a restart of
    the database, and well inside a lease."""
    return min(5.0, settings.execution.lease_s / 2)
