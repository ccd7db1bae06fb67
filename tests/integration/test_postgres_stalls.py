"""A daemon stopped in the middle of a write transaction on PostgreSQL (SIGSTOP, a frozen VM, a
loop blocked by a node type) holds the rows it locked (its runs', by the fences of its writes)
for as long as it stays stopped: its session lives on, and the server waits on it. The others
pass over those rows, so without more its runs would never be taken back. A writer's
transaction open for a lease belongs to a daemon whose leases lapsed (it renews them through
that writer): the others end its server process before they recover, and take its runs."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from adapters.postgres import db as pg_db
from adapters.sql.tx import Tx
from core import changes
from core.domain import Event, EventType, NodeStatus, Run
from core.errors import LeaseLost, StoreUnavailable
from tests.contract.test_store_contract import Backend, claim, new_run, node
from tests.integration.test_postgres_races import assert_gap_free, daemon_store, query

pytestmark = pytest.mark.postgres
T0 = datetime(2026, 1, 1, tzinfo=UTC)
LEASE_S = 1.0  # the stopped daemon's, and the age at which its transaction is ended
ROUNDS = 400  # of the bounded waits below, 0.05 s each


@contextlib.asynccontextmanager
async def stopped_and_watching(url: str) -> AsyncIterator[tuple[Backend, Backend]]:
    """Daemon a, and daemon b that ends another's writer transaction open for LEASE_S."""
    await pg_db.prepare_database(url)
    clock = [T0]
    async with (
        daemon_store(url, clock) as a,
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


async def recover(b: Backend) -> list[Run]:
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
        # Younger than the threshold it is left alone (a healthy writer's transaction).
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
