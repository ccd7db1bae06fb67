"""The event log on PostgreSQL keeps DESIGN §8's promise under concurrent writers: `seq` is
gap-free and in commit order, so a reader tailing "events after N" never misses one that
committed late. With a plain sequence this fails: a transaction that drew a smaller seq can
commit after a reader has already moved past it (the writers here hold their transactions open
a moment after numbering their events, as a slow statement or a busy server would)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from adapters.postgres import db as pg_db
from adapters.postgres.store import PgStore
from adapters.postgres.tx import PgTx
from adapters.postgres.writer import PgWriter
from adapters.sql import retention, runs
from adapters.sql.execution import Fenced
from adapters.sql.migrations import SchemaTooNew
from adapters.sql.store import remove_graph
from adapters.sql.tx import Tx
from core import changes
from core.domain import Event, EventType, GraphSpec, Run, RunStatus
from core.errors import Conflict, LeaseLost, NotFound, StoreUnavailable
from core.idempotency import IdempotencyKey
from core.pages import micros
from core.ports import Lease

pytestmark = pytest.mark.postgres
DAEMONS = 2
WRITERS = 50  # concurrent writers per daemon
WRITES = 6  # each writer's writes
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@contextlib.asynccontextmanager
async def daemon_store(
    url: str, batch_max: int = 8, stall_s: float = 5.0
) -> AsyncIterator[tuple[PgStore, PgWriter]]:
    """One daemon's store: its own writer connection and read pool; small batches by default
    (many transactions, all concurrent)."""
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        url, min_size=1, max_size=4, kwargs={"autocommit": True}, open=False
    )
    await pool.open()
    writer = PgWriter(url, batch_max=batch_max, stall_s=stall_s)
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


async def test_a_fence_sees_every_owner_change_made_earlier_in_its_own_transaction(
    postgres_url: str,
) -> None:
    """The writer remembers what a fence read within a transaction (one read for a step's
    writes, checkpoint and node records): a change of the run's owner or epoch by an earlier
    operation of the same batch must still be seen, or a write would land under a lost lease."""
    await pg_db.prepare_database(postgres_url)
    async with daemon_store(postgres_url, batch_max=256) as (_, writer):

        async def setup(tx: Tx) -> None:
            await tx.execute(
                "INSERT INTO runs (id, project_id, workflow_id, status, body, queued_at, "
                "created_us) VALUES (?, 'p', 'g', 'running', '{}', 1, 1)",
                ("r1",),
            )
            await tx.execute("UPDATE runs SET owner = ?, epoch = ? WHERE id = ?", ("me", 1, "r1"))

        await writer.write(setup)
        old, new = Lease("r1", "me", 1), Lease("r1", "me", 3)

        async def fenced(lease: Lease, tx: Tx) -> None:
            await runs.fence(tx, lease)

        async def let_go(tx: Tx) -> None:
            await runs._let_go(tx, "r1")  # epoch 2, no owner

        async def take(tx: Tx) -> None:
            await tx.execute("UPDATE runs SET owner = ?, epoch = ? WHERE id = ?", ("me", 3, "r1"))

        async def renew_all(tx: Tx) -> None:  # names no run: forgets every one
            await tx.fetchall("UPDATE runs SET epoch = 4 WHERE owner = ? RETURNING id", ("me",))

        async def reads(tx: Tx) -> int:
            assert isinstance(tx, PgTx)
            return tx.fence_reads

        ops = [
            partial(fenced, old),
            partial(fenced, old),  # remembered: no read
            let_go,
            partial(fenced, old),  # refused: the run was let go above
            partial(fenced, new),  # refused too (no owner), and remembered
            take,
            partial(fenced, new),
            partial(fenced, new),  # remembered
            renew_all,
            partial(fenced, new),  # refused: epoch 4 now (read again)
            reads,
        ]
        # Submitted before the writer runs again: one batch, one transaction.
        results = await asyncio.gather(*(writer.submit(op) for op in ops), return_exceptions=True)
        refused = [i for i, r in enumerate(results) if isinstance(r, LeaseLost)]
        assert refused == [3, 4, 9]
        # Each refusal rolled the transaction back and did the rest again; in the one that
        # committed: the first read, and the one after `take` (`let_go`'s was refused).
        assert results[-1] == 2
        assert writer.commits == 2

        # Fenced operations: their leases are read with the head, all at once, and forgotten
        # the same way.
        async def nothing(tx: Tx) -> None:
            pass

        current = Lease("r1", "me", 4)
        ops = [
            Fenced(current, nothing),
            Fenced(current, reads),  # no read of its own: known from the start
            let_go,
            Fenced(current, nothing),  # refused
            Fenced(Lease("r2", "me", 1), nothing),  # no such run: refused
        ]
        results = await asyncio.gather(*(writer.submit(op) for op in ops), return_exceptions=True)
        assert results[1] == 0
        assert [i for i, r in enumerate(results) if isinstance(r, LeaseLost)] == [3, 4]


async def test_a_daemons_open_transaction_holds_no_other_back_and_the_log_is_in_commit_order(
    postgres_url: str,
) -> None:
    """The head is taken by a transaction's last statement: another daemon's transaction
    commits while this one is open (its events numbered before this one's, which commits
    later), rather than waiting for it."""
    await pg_db.prepare_database(postgres_url)
    async with daemon_store(postgres_url) as (a, a_writer), daemon_store(postgres_url) as (_, b):
        opened, other_done = asyncio.Event(), asyncio.Event()

        async def slow(tx: Tx) -> None:
            await tx.emit(
                Event(type=EventType.RUN_UPDATED, project_id="p", run_id="a", timestamp=NOW)
            )
            opened.set()
            await asyncio.wait_for(other_done.wait(), 30)

        async def quick(tx: Tx) -> None:
            await tx.emit(
                Event(type=EventType.RUN_UPDATED, project_id="p", run_id="b", timestamp=NOW)
            )

        slow_write = asyncio.create_task(a_writer.write(slow))
        await asyncio.wait_for(opened.wait(), 30)
        await asyncio.wait_for(b.write(quick), 20)  # not behind the open transaction
        other_done.set()
        await slow_write
        logged = [(item.seq, item.event["run_id"]) for item in await a.events_after(0)]
        assert logged == [(1, "b"), (2, "a")]


async def test_a_deadlock_between_two_daemons_is_broken_and_both_batches_land(
    postgres_url: str,
) -> None:
    """Two daemons' transactions each wait for a row the other holds: the server rolls one
    back, and its writer does the batch again, which then waits for the other and lands."""
    await pg_db.prepare_database(postgres_url)
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        await conn.execute("CREATE TABLE rows_of_test (id INTEGER PRIMARY KEY, n INTEGER)")
        await conn.execute("INSERT INTO rows_of_test VALUES (1, 0), (2, 0)")
    async with daemon_store(postgres_url) as (_, a), daemon_store(postgres_url) as (_, b):
        holding = {1: asyncio.Event(), 2: asyncio.Event()}
        bump = "UPDATE rows_of_test SET n = n + 1 WHERE id = ? RETURNING n"

        def crossing(first: int, then: int) -> Callable[[Tx], Awaitable[None]]:
            async def op(tx: Tx) -> None:
                await tx.fetchone(bump, (first,))
                holding[first].set()
                await asyncio.wait_for(holding[then].wait(), 30)  # set already when done again
                await tx.fetchone(bump, (then,))
                await tx.emit(
                    Event(
                        type=EventType.RUN_UPDATED,
                        project_id="p",
                        run_id=f"r{first}",
                        timestamp=NOW,
                    )
                )

            return op

        await asyncio.wait_for(asyncio.gather(a.write(crossing(1, 2)), b.write(crossing(2, 1))), 60)
        assert a.deadlocks + b.deadlocks == 1
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        rows = await (await conn.execute("SELECT id, n FROM rows_of_test ORDER BY id")).fetchall()
    assert rows == [(1, 2), (2, 2)]  # each bumped once by each batch that landed


async def test_a_row_held_by_a_stalled_daemon_fails_only_the_write_that_needs_it(
    postgres_url: str,
) -> None:
    """A writer that stops in the middle of a transaction (a stopped process, a stuck loop)
    holds the rows it locked until it goes on. Another daemon's write that needs one of them
    waits `stall_s` and fails (503, nothing written), the writes beside it land, and nothing
    of the stalled one is lost once it goes on."""
    await pg_db.prepare_database(postgres_url)
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        await conn.execute("CREATE TABLE rows_of_test (id INTEGER PRIMARY KEY, n INTEGER)")
        await conn.execute("INSERT INTO rows_of_test VALUES (1, 0), (2, 0)")
    async with (
        daemon_store(postgres_url) as (_, a),
        daemon_store(postgres_url, stall_s=1) as (
            _,
            b,
        ),
    ):
        locked, go_on = asyncio.Event(), asyncio.Event()
        bump = "UPDATE rows_of_test SET n = n + 1 WHERE id = ? RETURNING n"

        async def stalled(tx: Tx) -> None:
            await tx.fetchone(bump, (1,))
            locked.set()
            await asyncio.wait_for(go_on.wait(), 60)  # the stall: no next statement

        def bumping(row: int) -> Callable[[Tx], Awaitable[None]]:
            async def op(tx: Tx) -> None:
                await tx.fetchone(bump, (row,))

            return op

        stalled_write = asyncio.create_task(a.write(stalled))
        await asyncio.wait_for(locked.wait(), 30)
        blocked, beside = await asyncio.wait_for(
            asyncio.gather(b.write(bumping(1)), b.write(bumping(2)), return_exceptions=True), 30
        )
        assert isinstance(blocked, StoreUnavailable), blocked
        assert "held by another transaction" in str(blocked)
        assert beside is None
        go_on.set()
        await asyncio.wait_for(stalled_write, 30)
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        rows = await (await conn.execute("SELECT id, n FROM rows_of_test ORDER BY id")).fetchall()
    assert rows == [(1, 1), (2, 1)]  # the stalled one's bump, and the write beside the refused


async def someone_waits_for_a_lock(url: str) -> None:
    """Until a statement of another connection waits for a lock (bounded)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for _ in range(2000):
            cursor = await conn.execute("SELECT EXISTS (SELECT 1 FROM pg_locks WHERE NOT granted)")
            row = await cursor.fetchone()
            if row is not None and row[0]:
                return
            await asyncio.sleep(0.005)
    raise AssertionError("no statement came to wait for a lock")


async def test_retention_keeps_an_expired_key_another_daemon_took_again_meanwhile(
    postgres_url: str,
) -> None:
    """Found in review: retention's DELETE chose the expired keys in a subquery (read as the
    statement began) and deleted a key a creation had taken again meanwhile, leaving the new
    run without its key (a retry would have made a second run)."""
    await pg_db.prepare_database(postgres_url)
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO idempotency_keys (project_id, idem_key, fingerprint, run_id, expires_us) "
            "VALUES ('p', 'K', 'f', 'old', %s)",
            (micros(NOW) - 1,),
        )
        # the new run's graph (only its row's presence matters here)
        await conn.execute(
            "INSERT INTO graphs (project_id, id, version, body) VALUES ('p', 'g', 1, '{}')"
        )
    run = pending_run("new")
    async with daemon_store(postgres_url) as (_, a), daemon_store(postgres_url) as (_, b):
        taken, go_on = asyncio.Event(), asyncio.Event()

        async def create(tx: Tx) -> None:
            await runs.insert_run(tx, run, key=IdempotencyKey("K", "f", 3600))
            taken.set()
            await asyncio.wait_for(go_on.wait(), 30)

        async def expire(tx: Tx) -> int:
            return await retention.delete_expired_keys(tx, micros(NOW))

        creating = asyncio.create_task(b.write(create))
        await asyncio.wait_for(taken.wait(), 30)
        deleting = asyncio.create_task(a.write(expire))
        await someone_waits_for_a_lock(postgres_url)  # the DELETE, on the key's row
        go_on.set()
        await asyncio.wait_for(creating, 30)
        assert await asyncio.wait_for(deleting, 30) == 0
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        cursor = await conn.execute("SELECT run_id, expires_us FROM idempotency_keys")
        assert await cursor.fetchall() == [("new", micros(NOW) + 3600 * 1_000_000)]


async def held_open(
    writer: PgWriter, op: Callable[[Tx], Awaitable[None]]
) -> tuple[asyncio.Task[None], asyncio.Event]:
    """`op` in a transaction of `writer` kept open until the event returned is set."""
    done, go_on = asyncio.Event(), asyncio.Event()

    async def holding(tx: Tx) -> None:
        await op(tx)
        done.set()
        await asyncio.wait_for(go_on.wait(), 30)

    task = asyncio.create_task(writer.write(holding))
    await asyncio.wait_for(done.wait(), 30)
    return task, go_on


def pending_run(run_id: str) -> Run:
    return Run(
        id=run_id,
        workflow_id="g",
        status=RunStatus.PENDING,
        project_id="p",
        graph_version=1,
        created_at=NOW,
        last_message="queued",
    )


async def test_a_graph_being_deleted_and_a_run_being_made_of_it_never_both_succeed(
    postgres_url: str,
) -> None:
    """The deletion used to count the graph's active runs without seeing the one another
    daemon was making of it, and both succeeded: a run of a deleted graph."""
    await pg_db.prepare_database(postgres_url)
    spec = GraphSpec.model_validate({"name": "g", "nodes": [{"id": "a"}]})
    async with daemon_store(postgres_url) as (a, a_writer), daemon_store(postgres_url) as (b, _):
        await a.put_graph("p", "g", spec, NOW, create=True)
        # made first: the deletion waits for it, counts it and is refused
        creating, go_on = await held_open(a_writer, partial(runs.insert_run, run=pending_run("r1")))
        deleting = asyncio.create_task(b.delete_graph("p", "g", NOW))
        await someone_waits_for_a_lock(postgres_url)
        go_on.set()
        await asyncio.wait_for(creating, 30)
        with pytest.raises(Conflict):
            await asyncio.wait_for(deleting, 30)
        assert await a.get_graph("p", "g") is not None
        await a.change_run("p", "r1", changes.cancel(NOW))
        # deleted first: the run waits for it and finds the graph gone
        removing, go_on = await held_open(
            a_writer, partial(remove_graph, project_id="p", graph_id="g", now=NOW)
        )
        making = asyncio.create_task(b.create_run(pending_run("r2")))
        await someone_waits_for_a_lock(postgres_url)
        go_on.set()
        await asyncio.wait_for(removing, 30)
        with pytest.raises(NotFound):
            await asyncio.wait_for(making, 30)
        assert await a.get_graph("p", "g") is None
        assert await a.get_run("p", "r2") is None


async def test_a_database_migrated_by_a_newer_release_is_refused(postgres_url: str) -> None:
    """A daemon of an older release must not run beside newer ones: it does not start."""
    await pg_db.prepare_database(postgres_url)
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) "
            "VALUES (9999, '9999_later.sql', now())"
        )
    with pytest.raises(SchemaTooNew, match="migration 9999"):
        await pg_db.prepare_database(postgres_url)
