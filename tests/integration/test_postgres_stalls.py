"""A daemon stopped in the middle of a write transaction on PostgreSQL (SIGSTOP, a frozen VM, a
loop blocked by a node type) holds the rows it locked (its runs', by the fences of its writes)
for as long as it stays stopped: its session lives on, and the server waits on it. The others
pass over those rows, so without more its runs would never be taken back. A writer waiting in
a transaction for its daemon longer than a lease belongs to a stalled daemon whose leases
lapsed: the others end its server process before they renew theirs, and take its runs; a
writer waiting for the server (a lock) is never ended (adapters/postgres/stalls.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from functools import partial
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from adapters.postgres import db as pg_db
from adapters.postgres.db import WRITER_NAME
from adapters.postgres.stalls import end_stalled
from adapters.sql.tx import Tx
from core import changes
from core.domain import Event, EventType, NodeStatus, Run
from core.errors import LeaseLost, StoreUnavailable
from tests.contract.test_store_contract import Backend, claim, new_run, node
from tests.integration.test_postgres_races import assert_gap_free, daemon_store, query

pytestmark = pytest.mark.postgres
T0 = datetime(2026, 1, 1, tzinfo=UTC)
LEASE_S = 1.0  # the stopped daemon's, and how long its writer waits on it before it is ended
ROUNDS = 400  # of the bounded waits below, 0.05 s each


@contextlib.asynccontextmanager
async def stopped_and_watching(url: str) -> AsyncIterator[tuple[Backend, Backend]]:
    """Daemon a, and daemon b that ends another's writer transaction open for LEASE_S."""
    await pg_db.prepare_database(url)
    clock = [T0]
    async with (
        daemon_store(url, clock, stall_s=600) as a,  # its writer waits for rows that long
        daemon_store(url, clock, stalled_after_s=LEASE_S) as b,
        asyncio.timeout(60),
    ):
        yield a, b


async def lease_lapsed(url: str, run_id: str) -> None:
    """Until the run's lease has expired by the server's clock (bounded)."""
    for _ in range(ROUNDS):
        [(lapsed,)] = await query(
            url,
            "SELECT lease_expires_at < extract(epoch from clock_timestamp()) "
            "FROM runs WHERE id = %s",
            run_id,
        )
        if lapsed:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the lease did not expire")


async def waited_for_a_lock(url: str, seconds: float) -> None:
    """Until a statement of another connection has waited for a lock for `seconds` (bounded)."""
    for _ in range(ROUNDS):
        [(waited,)] = await query(
            url,
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND state_change < clock_timestamp() - make_interval(secs => %s)",
            seconds,
        )
        if waited:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no statement waited for a lock that long")


async def recover(b: Backend) -> list[Run]:
    """What b's upkeep does: renew its leases (ending a stalled writer first), then recover."""
    await b.store.renew_leases("b", LEASE_S)
    now = b.now()
    recovered: list[Run] = await b.store.recover_runs(
        [], 3, changes.recover(now), changes.give_up(now, 3)
    )
    return recovered


async def test_a_daemon_stopped_inside_a_transaction_loses_its_runs_and_writes_nothing(
    postgres_url: str,
) -> None:
    async with stopped_and_watching(postgres_url) as (a, b):
        run = await new_run(a)
        [held] = await claim(a, "a", lease_s=LEASE_S)
        locked, go_on = asyncio.Event(), asyncio.Event()

        async def stopped(tx: Tx) -> None:
            # What a's fenced write of a node does first: its run's row, held FOR SHARE.
            await tx.fetchone("SELECT id FROM runs WHERE id = ? FOR SHARE", (run.id,))
            await tx.emit(
                Event(type=EventType.RUN_UPDATED, project_id="stopped", run_id=run.id, timestamp=T0)
            )
            locked.set()
            await asyncio.wait_for(go_on.wait(), 60)  # the stop: no next statement

        write = asyncio.create_task(a.store.writer.write(stopped))
        await asyncio.wait_for(locked.wait(), 30)
        # Not waiting that long yet, it is left alone.
        assert await b.store.end_stalled(60.0) == 0
        await lease_lapsed(postgres_url, run.id)
        recovered: list[Run] = []
        for _ in range(ROUNDS):  # bounded: the ended process lets go of its rows at once
            recovered = await recover(b)
            if recovered:
                break
            await asyncio.sleep(0.05)
        assert [r.id for r in recovered] == [run.id]
        assert b.store.stalled_ended == 1
        [taken] = await claim(b, "b")
        assert taken.run.id == run.id

        go_on.set()  # a goes on: its transaction is gone, and so is what it wrote
        with pytest.raises(StoreUnavailable):
            await write
        with pytest.raises(LeaseLost):  # its writer is back, and fenced
            await a.store.execution(held).save([node("n1", NodeStatus.COMPLETED)], a.now())
        await b.store.execution(taken).save([node("n1", NodeStatus.COMPLETED)], b.now())
        await assert_gap_free(b)
        assert (
            await query(postgres_url, "SELECT seq FROM events WHERE project_id = 'stopped'") == []
        )
        nodes = await query(postgres_url, "SELECT body FROM node_states WHERE run_id = %s", run.id)
        assert [json.loads(body)["status"] for (body,) in nodes] == ["completed"]


async def test_a_writer_waiting_for_the_server_is_never_ended_however_long_it_waits(
    postgres_url: str,
) -> None:
    """A writer whose transaction waits for a lock (or the disk, or a standby) is waiting for
    the server, not stalled by its daemon: left alone, and its write lands."""
    async with stopped_and_watching(postgres_url) as (a, b):
        run = await new_run(a)
        async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as held:
            await held.execute("BEGIN")
            await held.execute("SELECT id FROM runs WHERE id = %s FOR UPDATE", (run.id,))
            bump = "UPDATE runs SET recoveries = recoveries + 1 WHERE id = ?"
            write = asyncio.create_task(a.store.writer.write(partial(bumped, bump, run.id)))
            await waited_for_a_lock(postgres_url, LEASE_S)
            assert await b.store.end_stalled(LEASE_S) == 0
            assert not write.done()
            await held.execute("ROLLBACK")
        await asyncio.wait_for(write, 30)
        [(recoveries,)] = await query(postgres_url, "SELECT recoveries FROM runs")
        assert recoveries == 1
        assert b.store.stalled_ended == 0


async def bumped(sql: str, run_id: str, tx: Tx) -> None:
    await tx.execute(sql, (run_id,))


async def test_a_writer_this_role_may_not_end_is_passed_over_the_others_ended(
    postgres_url: str,
) -> None:
    """A daemon whose role sees a superuser's writer (`pg_read_all_stats`) but may not end it
    asks only for those it may end: its own role's stalled writer is ended, nothing fails
    (its recovery goes on); a superuser ends the other."""
    role = f"cortexd_test_{uuid.uuid4().hex[:12]}"
    limited = make_conninfo(postgres_url, user=role)
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as admin:
        [(superuser,)] = await (
            await admin.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        ).fetchall()
        if not superuser:
            pytest.skip("the test database's role is not a superuser: it cannot make a role")
        await admin.execute(f"CREATE ROLE {role} LOGIN")
        try:
            await admin.execute(f"GRANT pg_read_all_stats TO {role}")
            async with (
                await stalled_writer(postgres_url) as theirs,
                await stalled_writer(limited) as ours,
            ):
                await asyncio.sleep(0.2)  # both wait for their client, longer than 0.1 s
                async with await psycopg.AsyncConnection.connect(limited, autocommit=True) as mine:
                    assert await end_stalled(mine, 0, 0.1) == 1
                with pytest.raises(psycopg.OperationalError):
                    await ours.execute("SELECT 1")
                await theirs.execute("SELECT 1")  # still there
                await asyncio.sleep(0.2)
                assert await end_stalled(admin, 0, 0.1) == 1
                with pytest.raises(psycopg.OperationalError):
                    await theirs.execute("SELECT 1")
        finally:
            await admin.execute(f"DROP ROLE {role}")


async def stalled_writer(url: str) -> psycopg.AsyncConnection[Any]:
    """A connection named as a writer, in a transaction, waiting for its client."""
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True, application_name=WRITER_NAME)
    await conn.execute("BEGIN")
    await conn.execute("SELECT 1")
    return conn
