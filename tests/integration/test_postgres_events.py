"""The event log on PostgreSQL keeps DESIGN §8's promise under concurrent writers: `seq` is
gap-free and in commit order, so a reader tailing "events after N" never misses one that
committed late. With a plain sequence this fails: a transaction that drew a smaller seq can
commit after a reader has already moved past it (the writers here hold their transactions open
a moment after numbering their events, as a slow statement or a busy server would)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from adapters.postgres import db as pg_db
from adapters.postgres.store import PgStore
from adapters.postgres.writer import PgWriter
from adapters.sql.tx import Tx
from core.domain import Event, EventType

pytestmark = pytest.mark.postgres
DAEMONS = 2
WRITERS = 50  # concurrent writers per daemon
WRITES = 6  # each writer's writes
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@contextlib.asynccontextmanager
async def daemon_store(url: str) -> AsyncIterator[tuple[PgStore, PgWriter]]:
    """One daemon's store: its own writer connection and read pool."""
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        url, min_size=1, max_size=4, kwargs={"autocommit": True}, open=False
    )
    await pool.open()
    writer = PgWriter(url, batch_max=8)  # small batches: many transactions, all concurrent
    await writer.start()
    try:
        yield PgStore(writer, pool), writer
    finally:
        await writer.close()
        await pool.close()


async def test_a_reader_tailing_since_never_misses_an_event_that_committed_late(
    postgres_url: str,
) -> None:
    await pg_db.prepare_database(postgres_url)
    rng = random.Random(7)
    async with contextlib.AsyncExitStack() as stack:
        daemons = [await stack.enter_async_context(daemon_store(postgres_url)) for _ in range(2)]
        stores = [store for store, _ in daemons]

        async def write(daemon: int, writer: int) -> None:
            for n in range(WRITES):
                events = rng.randint(1, 3)
                pause = rng.choice((0.0, 0.001, 0.003))

                async def op(
                    tx: Tx, events: int = events, pause: float = pause, run: str = f"w{writer}-{n}"
                ) -> None:
                    for _ in range(events):
                        await tx.emit(
                            Event(
                                type=EventType.RUN_UPDATED,
                                project_id="p",
                                run_id=run,
                                timestamp=NOW,
                            )
                        )
                    # Numbered, not yet committed: the transaction stays open a moment.
                    await tx.execute("SELECT pg_sleep(?)", (pause,))

                await daemons[daemon][1].write(op)

        seen: list[int] = []
        done = asyncio.Event()

        async def tail() -> None:
            reader = stores[0]
            for _ in range(100_000):  # bounded; it ends when the writers are done and read
                finished = done.is_set()
                page = await reader.events_after(seen[-1] if seen else 0, 1000)
                seqs = [item.seq for item in page]
                expected = list(range((seen[-1] if seen else 0) + 1, len(seqs) + 1 + len(seen)))
                assert seqs == expected, "a seq appeared behind one already read, or a gap"
                seen.extend(seqs)
                if finished and not page:
                    return
                await asyncio.sleep(0)
            raise AssertionError("the tail did not finish")

        reading = asyncio.create_task(tail())
        await asyncio.gather(
            *(write(d, d * WRITERS + w) for d in range(DAEMONS) for w in range(WRITERS))
        )
        done.set()
        await asyncio.wait_for(reading, 60)

        stored = [item.seq for item in await stores[1].events_after(0, 100_000)]
        assert seen == stored == list(range(1, len(stored) + 1))
        assert len(stored) >= DAEMONS * WRITERS * WRITES  # every write recorded at least one


async def test_a_failing_write_does_not_undo_its_batch_neighbours_nor_leave_a_seq_gap(
    postgres_url: str,
) -> None:
    await pg_db.prepare_database(postgres_url)
    async with daemon_store(postgres_url) as (store, writer):

        def event(n: int) -> Event:
            return Event(type=EventType.RUN_UPDATED, project_id="p", run_id=f"r{n}", timestamp=NOW)

        async def good(tx: Tx) -> None:
            await tx.emit(event(1))

        async def bad(tx: Tx) -> None:
            await tx.emit(event(2))
            await tx.execute("SELECT 1 / 0")  # the database refuses it: the transaction aborts

        connection = writer._conn
        results = await asyncio.gather(
            writer.write(good), writer.write(bad), writer.write(good), return_exceptions=True
        )
        assert results[0] is None
        assert results[2] is None
        assert isinstance(results[1], Exception)
        assert [(e.seq, e.event["run_id"]) for e in await store.events_after(0)] == [
            (1, "r1"),
            (2, "r1"),
        ]
        assert writer._conn is connection
