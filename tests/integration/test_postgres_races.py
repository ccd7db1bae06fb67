"""Several daemons on one PostgreSQL database, racing: each test runs two stores, each with its
own writer connection and small batches (many transactions in flight at once), and checks what
DESIGN §8 promises whatever the interleaving: a run is claimed by one daemon at a time, a
group's limit holds across daemons, a write under a lost lease is never stored, an idempotency
key names one run, a parked parent is never forgotten by its child, and `seq` has no gap.

Today the writer serialises every daemon's transactions behind the event head's row lock; the
tests must hold just as well when transactions of different daemons run side by side."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

import psycopg
import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import empty_checkpoint
from psycopg_pool import AsyncConnectionPool

from adapters.postgres import db as pg_db
from adapters.postgres.store import PgStore, pg_checkpoints
from adapters.postgres.writer import PgWriter
from core import changes
from core.domain import NodeStatus, Run, RunStatus
from core.errors import LeaseLost
from core.idempotency import IdempotencyKey, KeyTaken
from core.ports import Claim, ClaimRequest, Lease
from core.waits import Wait
from tests.contract.test_store_contract import (
    LEASE_S,
    Backend,
    a_run,
    claim,
    finish,
    graph,
    limited_graph,
    new_run,
    node,
    run_of,
    task_config,
)

pytestmark = pytest.mark.postgres
T0 = datetime(2026, 1, 1, tzinfo=UTC)
DEADLINE_S = 60.0  # per test; each takes a few seconds
T = TypeVar("T")


@contextlib.asynccontextmanager
async def daemon_store(
    url: str,
    clock: list[datetime],
    batch_max: int = 4,
    stalled_after_s: float | None = None,
    stall_s: float = 5.0,
) -> AsyncIterator[Backend]:
    """One daemon's store: its own writer connection, read pool and checkpointer; small
    batches (many transactions, all concurrent). `clock` is shared by the daemons of a test."""
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        url, min_size=1, max_size=4, kwargs={"autocommit": True}, open=False
    )
    await pool.open()
    writer = PgWriter(url, batch_max=batch_max, stall_s=stall_s)
    await writer.start()
    try:
        store = PgStore(writer, pool, stalled_after_s=stalled_after_s)
        yield Backend(store, pg_checkpoints(writer, pool).saver, clock)
    finally:
        await writer.close()
        await pool.close()


@contextlib.asynccontextmanager
async def two_daemons(url: str, batch_max: int = 4) -> AsyncIterator[tuple[Backend, Backend]]:
    await pg_db.prepare_database(url)
    clock = [T0]
    async with daemon_store(url, clock, batch_max) as a, daemon_store(url, clock, batch_max) as b:
        async with asyncio.timeout(DEADLINE_S):
            yield a, b
        await assert_gap_free(a)


async def assert_gap_free(b: Backend) -> None:
    """Every project's events, across both daemons: seq 1..N, none missing."""
    found = [e.seq for e in await b.store.events_after(0, 1_000_000)]
    assert found == list(range(1, len(found) + 1))


async def query(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return await (await conn.execute(sql, params)).fetchall()


async def later(yields: int, step: Awaitable[T]) -> T:
    """`step`, after letting the loop run `yields` times: an interleaving of the race."""
    for _ in range(yields):
        await asyncio.sleep(0)
    return await step


def node_events(events: list[dict[str, Any]], prefix: str) -> dict[str, int]:
    """The seq of each node-state event an executor wrote (`running`, its message starting
    with `prefix`), by message; a cancel's `cancelled` copy of a node keeps its message."""
    found = [
        (e["nodeState"]["message"], e["seq"])
        for e in events
        if "nodeState" in e and e["nodeState"]["status"] == "running"
    ]
    return {message: seq for message, seq in found if message.startswith(prefix)}


# -- claims ------------------------------------------------------------------------------


RUNS = 200
CLAIMERS = 4  # per daemon, each with an owner of its own
BATCHES = (1, 2, 3, 5)


async def claim_until_empty(
    b: Backend, owner: str, limit: int, done: Callable[[], bool] = lambda: True
) -> list[Claim]:
    """Claim in batches of `limit` until the queue is empty once `done()` holds (bounded)."""
    taken: list[Claim] = []
    for _ in range(4 * RUNS):
        finished = done()
        claimed = await claim(b, owner, limit=limit)
        taken += claimed
        if not claimed and finished and (await b.store.queue_counts()).claimable == 0:
            return taken
        await asyncio.sleep(0)
    raise AssertionError(f"{owner} still found runs to claim after {4 * RUNS} rounds")


async def test_racing_daemons_claim_every_run_once_under_a_lease_of_its_own(
    postgres_url: str,
) -> None:
    async with two_daemons(postgres_url) as (a, b):
        daemons = {"a": a, "b": b}
        made = await asyncio.gather(*(new_run((a, b)[i % 2]) for i in range(RUNS)))

        first = await asyncio.gather(
            *(
                claim_until_empty(d, f"{name}{i}", BATCHES[i])
                for name, d in daemons.items()
                for i in range(CLAIMERS)
            )
        )
        claims = [c for taken in first for c in taken]
        assert sorted(c.run.id for c in claims) == sorted(r.id for r in made)  # each once
        by_daemon = Counter(c.lease.owner[0] for c in claims)
        assert set(by_daemon) == {"a", "b"}, by_daemon
        assert all(c.run.status is RunStatus.RUNNING and c.fresh for c in claims)

        # Daemon a's claimers let go of their runs while every claimer claims again.
        released = asyncio.Event()

        async def let_go() -> None:
            await asyncio.gather(*(a.store.release_runs(f"a{i}", a.now()) for i in range(2)))
            released.set()

        claimers = asyncio.gather(
            *(
                claim_until_empty(d, f"{name}{i}-again", BATCHES[i], released.is_set)
                for name, d in daemons.items()
                for i in range(CLAIMERS)
            )
        )
        _, second = await asyncio.gather(let_go(), claimers)
        again = [c for taken in second for c in taken]
        let_go_ids = {c.run.id for c in claims if c.lease.owner in ("a0", "a1")}
        assert sorted(c.run.id for c in again) == sorted(let_go_ids)

        leases: dict[str, list[Lease]] = defaultdict(list)
        for c in claims + again:
            leases[c.run.id].append(c.lease)
        for run_leases in leases.values():
            assert len({lease.epoch for lease in run_leases}) == len(run_leases)
        newest = {run_id: max(ls, key=lambda lease: lease.epoch) for run_id, ls in leases.items()}
        stored = await query(postgres_url, "SELECT id, owner, epoch FROM runs")
        assert {row[0]: (row[1], row[2]) for row in stored} == {
            run_id: (lease.owner, lease.epoch) for run_id, lease in newest.items()
        }
        # Each owner renews exactly the leases the test says it holds.
        held: dict[str, dict[str, int]] = defaultdict(dict)
        for run_id, lease in newest.items():
            held[lease.owner][run_id] = lease.epoch
        owners = {c.lease.owner for c in claims + again}
        for owner in owners:
            d = daemons[owner[0]]
            assert await d.store.renew_leases(owner, LEASE_S) == held.get(owner, {}), owner
        # The leases let go of write nothing more.
        stale = [c for c in claims if c.run.id in let_go_ids]
        writes = await asyncio.gather(
            *(
                daemons["ab"[i % 2]].store.execution(c).save([node("a", NodeStatus.RUNNING)], T0)
                for i, c in enumerate(stale)
            ),
            return_exceptions=True,
        )
        assert all(isinstance(w, LeaseLost) for w in writes)


# -- per-graph concurrency ---------------------------------------------------------------


LIMIT = 2
KEYS = ("k0", "k1")
PER_KEY = 40


async def test_a_groups_limit_holds_across_racing_daemons_and_every_run_completes(
    postgres_url: str,
) -> None:
    async with two_daemons(postgres_url) as (a, b):
        await limited_graph(a, "g", LIMIT, "customer")
        made = await asyncio.gather(
            *(
                run_of((a, b)[i % 2], "g", {"customer": KEYS[i % len(KEYS)]})
                for i in range(PER_KEY * len(KEYS))
            )
        )
        key_of = {r.id: r.input["customer"] for r in made}
        holding: Counter[str] = Counter()  # claims returned minus finishes begun: <= running
        most: Counter[str] = Counter()
        completed: dict[str, str] = {}

        async def running_per_key() -> dict[str, int]:
            rows = await query(
                postgres_url,
                "SELECT concurrency_key, COUNT(*) FROM runs WHERE status = 'running' "
                "GROUP BY concurrency_key",
            )
            return {key: int(count) for key, count in rows}

        async def worker(d: Backend, owner: str, limit: int) -> None:
            for _ in range(2000):  # bounded; ends once every run completed
                if len(completed) == len(made):
                    return
                claimed = await claim(d, owner, limit=limit)
                for c in claimed:
                    holding[key_of[c.run.id]] += 1
                    most[key_of[c.run.id]] = max(most[key_of[c.run.id]], holding[key_of[c.run.id]])
                assert all(n <= LIMIT for n in holding.values()), holding
                observed = await running_per_key()
                assert all(n <= LIMIT for n in observed.values()), observed
                for c in claimed:
                    await d.store.execution(c).save([node("a", NodeStatus.RUNNING)], d.now())
                for c in claimed:
                    holding[key_of[c.run.id]] -= 1
                    await finish(d, c)
                    completed[c.run.id] = owner
                await asyncio.sleep(0)
            raise AssertionError(f"{len(made) - len(completed)} runs never completed")

        await asyncio.gather(
            *(worker(d, f"{name}{i}", 1 + i) for name, d in (("a", a), ("b", b)) for i in range(3))
        )

        assert set(completed) == {r.id for r in made}
        assert {owner[0] for owner in completed.values()} == {"a", "b"}
        assert max(most.values()) == LIMIT  # the limit was reached, not merely respected
        page = await a.store.list_runs("p", limit=1000)
        assert {r.status for r in page.items} == {RunStatus.COMPLETED}
        counts = await b.store.queue_counts()
        assert (counts.pending, counts.running, counts.claimable) == (0, 0, 0)


SLOT_RACES = 30


async def test_the_last_free_slot_of_a_group_goes_to_one_of_the_racing_daemons(
    postgres_url: str,
) -> None:
    async with two_daemons(postgres_url) as (a, b):
        await limited_graph(a, "g", LIMIT, "customer")
        rng = random.Random(5)
        winners: Counter[str] = Counter()
        for r in range(SLOT_RACES):
            made = [await run_of(a, "g", {"customer": f"c{r}"}) for _ in range(LIMIT + 3)]
            first = await claim(a, "a", limit=LIMIT - 1)  # one slot is left
            assert [c.run.id for c in first] == [run.id for run in made[: LIMIT - 1]]
            # Executed again, the waiting runs are all claimable (none held for the group):
            # only the claim's count of the group's running runs keeps them out.
            waiting = made[LIMIT - 1 :]
            for run in waiting:
                await b.store.change_run("p", run.id, changes.cancel(b.now()))
            for run in waiting:
                again = changes.execute(b.now(), new_input=None, from_start=False)
                await b.store.change_run("p", run.id, again)

            raced = await asyncio.gather(
                later(rng.randint(0, 3), claim(a, "a", limit=2)),
                later(rng.randint(0, 3), claim(b, "b", limit=2)),
            )

            taken = [(owner, c) for owner, got in zip("ab", raced, strict=True) for c in got]
            assert len(taken) == 1, f"race {r}: {len(taken)} runs took the one free slot"
            winners[taken[0][0]] += 1
            assert taken[0][1].run.id == waiting[0].id  # first in, first out
            [(running,)] = await query(
                postgres_url,
                "SELECT COUNT(*) FROM runs WHERE concurrency_key IS NOT NULL "
                "AND status = 'running'",
            )
            assert running == LIMIT
            for run in made:
                await b.store.change_run("p", run.id, changes.cancel(b.now()))
        assert set(winners) == {"a", "b"}, winners  # both daemons won some


# -- fencing -----------------------------------------------------------------------------


OWNED = 8
MAX_WRITES = 400  # per run: the executor writes until it has lost its lease (bounded)
WRITES_AFTER_LOSS = 3


async def write_until_lost(
    d: Backend, held: Claim, prefix: str, wrote: asyncio.Event
) -> list[tuple[str, str, bool]]:
    """An executor writing node states (saved, queued) and checkpoints under its lease, one
    after the other, until LeaseLost refused a few: (kind, message or checkpoint id, stored)."""
    execution = d.store.execution(held)
    outcomes: list[tuple[str, str, bool]] = []
    for i in range(MAX_WRITES):
        kind = ("save", "record", "checkpoint")[i % 3]
        label = f"{prefix}-{i:04d}"
        # A node of its own each time: a write no row lock of a cancel's holds back.
        state = [node(f"n{i}", NodeStatus.RUNNING, label)]
        try:
            if kind == "save":
                await execution.save(state, d.now())
            elif kind == "record":
                await execution.record(state, d.now())
            else:
                checkpoint = empty_checkpoint()
                checkpoint["id"] = label
                config = cast(RunnableConfig, task_config(held.run.id, execution))
                await d.saver.aput(config, checkpoint, {"source": "loop", "step": i}, {})
        except LeaseLost:
            outcomes.append((kind, label, False))
            if sum(not ok for _, _, ok in outcomes) == WRITES_AFTER_LOSS:
                return outcomes
        else:
            outcomes.append((kind, label, True))
            wrote.set()
    raise AssertionError(f"{held.run.id}: the lease was never lost")


async def checkpoints_of(url: str, run_id: str) -> set[str]:
    rows = await query(url, "SELECT checkpoint_id FROM checkpoints WHERE thread_id = %s", run_id)
    return {row[0] for row in rows}


def stored_labels(written: list[tuple[str, str, bool]], checkpoints: bool) -> set[str]:
    return {label for kind, label, ok in written if ok and (kind == "checkpoint") == checkpoints}


async def take_over(a: Backend, b: Backend, url: str, rng: random.Random, j: int) -> None:
    """Round `j`: daemon a holds fresh runs and writes on each until it is refused; once it
    has written on every one, daemon b takes them all back from it as a dead owner's,
    claims them and writes its own."""
    made = [await new_run(a) for _ in range(OWNED)]
    held = await claim(a, f"a{j}", limit=OWNED)
    assert sorted(c.run.id for c in held) == sorted(r.id for r in made)
    wrote = {c.run.id: asyncio.Event() for c in held}

    async def recover_then_claim() -> list[Claim]:
        await asyncio.gather(*(event.wait() for event in wrote.values()))
        recovered: list[Run] = []
        for attempt in range(100):  # bounded: a recovery passes over a run a's write holds
            now = b.now()
            recovery = b.store.recover_runs(
                [f"a{j}"], 1000, changes.recover(now), changes.give_up(now, 1000)
            )
            recovered += await later(rng.randint(0, 6) if attempt == 0 else 0, recovery)
            if len(recovered) >= OWNED:
                break
        assert sorted(r.id for r in recovered) == sorted(r.id for r in made)
        taken: list[Claim] = []
        for _ in range(100):  # bounded: a claim may pass over a run a's write holds a moment
            taken += await claim(b, f"b{j}", limit=OWNED - len(taken))
            if len(taken) == OWNED:
                break
        execution = b.store.execution
        await asyncio.gather(
            *(
                execution(c).save([node("n0", NodeStatus.RUNNING, f"b{j}-{i}")], b.now())
                for c in taken
                for i in range(2)
            )
        )
        return taken

    writers = asyncio.gather(*(write_until_lost(a, c, f"a{j}", wrote[c.run.id]) for c in held))
    taken, outcomes = await asyncio.gather(recover_then_claim(), writers)
    assert sorted(c.run.id for c in taken) == sorted(r.id for r in made)
    for c, written in zip(held, outcomes, strict=True):
        run_id = c.run.id
        oks = [ok for _, _, ok in written]
        assert oks == sorted(oks, reverse=True), "a write succeeded after one was refused"
        events = await a.store.list_events("p", 0, run_id, limit=100_000)
        claimed = next(e["seq"] for e in events if e.get("run", {}).get("owner") == f"a{j}")
        takeover = next(e["seq"] for e in events if "run" in e and e["seq"] > claimed)
        by_a = node_events(events, f"a{j}-")
        assert set(by_a) == stored_labels(written, checkpoints=False)  # stored as it was told
        assert all(seq < takeover for seq in by_a.values()), f"round {j}: written after takeover"
        assert all(seq > takeover for seq in node_events(events, f"b{j}-").values())
        assert await checkpoints_of(url, run_id) == stored_labels(written, checkpoints=True)
        states = {s.node_id: s.message for s in await b.store.list_node_states(run_id)}
        assert (states["n0"] or "").startswith(f"b{j}-")
    with pytest.raises(LeaseLost):
        await finish(a, held[0])
    await asyncio.gather(*(finish(b, c) for c in taken))


TAKEOVERS = 6


async def test_no_write_under_a_lease_taken_over_by_another_daemon_is_stored(
    postgres_url: str,
) -> None:
    async with two_daemons(postgres_url) as (a, b):
        rng = random.Random(3)
        for j in range(TAKEOVERS):
            await take_over(a, b, postgres_url, rng, j)


async def cancel_while_writing(a: Backend, b: Backend, url: str, j: int) -> None:
    """Round `j`: daemon a holds fresh runs and writes on each until it is refused; daemon b
    cancels each of them once a has written on it."""
    made = [await new_run(b) for _ in range(2 * OWNED)]
    held = await claim(a, f"a{j}", limit=2 * OWNED)
    assert sorted(c.run.id for c in held) == sorted(r.id for r in made)
    wrote = {c.run.id: asyncio.Event() for c in held}

    async def cancel(run_id: str) -> None:
        await wrote[run_id].wait()
        await b.store.change_run("p", run_id, changes.cancel(b.now()))

    writers = asyncio.gather(*(write_until_lost(a, c, f"a{j}", wrote[c.run.id]) for c in held))
    _, outcomes = await asyncio.gather(asyncio.gather(*(cancel(r.id) for r in made)), writers)
    for c, written in zip(held, outcomes, strict=True):
        run_id = c.run.id
        run = await a.store.get_run("p", run_id)
        assert run is not None
        assert (run.status, run.owner) == (RunStatus.CANCELLED, None)
        states = await b.store.list_node_states(run_id)
        assert {s.status for s in states} == {NodeStatus.CANCELLED}  # none left running
        events = await a.store.list_events("p", 0, run_id, limit=100_000)
        [cancelled] = [e["seq"] for e in events if e["type"] == "workflow.run.cancelled"]
        by_a = node_events(events, f"a{j}-")
        assert set(by_a) == stored_labels(written, checkpoints=False)
        assert all(seq < cancelled for seq in by_a.values()), f"round {j}: written after cancel"
        # The cancel's own node events are the only ones after it.
        after = [e for e in events if e["seq"] > cancelled]
        assert sorted(e["nodeState"]["node_id"] for e in after) == sorted(s.node_id for s in states)
        assert {e["nodeState"]["status"] for e in after} == {"cancelled"}
        assert await checkpoints_of(url, run_id) == stored_labels(written, checkpoints=True)
    with pytest.raises(LeaseLost):
        await finish(a, held[0])
    before = await a.store.last_seq()
    await asyncio.gather(*(a.store.execution(c).release(a.now()) for c in held))
    assert await b.store.last_seq() == before  # releases under lost leases: no-ops


CANCELS = 8


async def test_a_cancel_from_another_daemon_fences_out_the_owner_and_leaves_no_node_running(
    postgres_url: str,
) -> None:
    async with two_daemons(postgres_url) as (a, b):
        for j in range(CANCELS):
            await cancel_while_writing(a, b, postgres_url, j)


# -- idempotency keys ----------------------------------------------------------------------


ROUNDS = 8
CREATORS = 15  # per daemon and round


@dataclass
class KeyRace:
    """One round: every creation of both daemons with one key, and what each was told."""

    attempts: list[tuple[str, Run]]  # (fingerprint, run); the fingerprint names the creator
    results: list[Claim | BaseException | None]
    stale: Run | None  # the run the key named before, its time to live passed

    def won(self) -> list[tuple[str, Run]]:
        return [
            attempt
            for attempt, result in zip(self.attempts, self.results, strict=True)
            if not isinstance(result, BaseException)
        ]

    def refusals(self) -> list[tuple[str, KeyTaken]]:
        return [
            (fingerprint, result)
            for (fingerprint, _), result in zip(self.attempts, self.results, strict=True)
            if isinstance(result, KeyTaken)
        ]


async def race_for_a_key(a: Backend, b: Backend, r: int) -> KeyRace:
    """Round `r`, in a project of its own: both daemons create runs with one key at once, half
    of them asking to claim the run at creation; in odd rounds the key had expired."""
    project, created_at = f"p{r}", a.now()
    await graph(a, "g", project)
    stale = None
    if r % 2:
        stale = a_run(a, project_id=project, created_at=created_at - timedelta(hours=1))
        await a.store.create_run(stale, key=IdempotencyKey("k", "old", ttl_s=60))
    daemons = {"a": a, "b": b}
    attempts = [
        (f"{name}{i}", a_run(d, project_id=project, created_at=created_at))
        for name, d in daemons.items()
        for i in range(CREATORS)
    ]

    def create(fingerprint: str, run: Run) -> Awaitable[Claim | None]:
        d = daemons[fingerprint[0]]
        ask = int(fingerprint[1:]) % 2
        request = ClaimRequest(fingerprint[0], LEASE_S, changes.start(d.now())) if ask else None
        creation: Awaitable[Claim | None] = d.store.create_run(
            run, request, key=IdempotencyKey("k", fingerprint, 60)
        )
        return creation

    rng = random.Random(r)
    results = await asyncio.gather(
        *(later(rng.randint(0, 2), create(*attempt)) for attempt in attempts),
        return_exceptions=True,
    )
    return KeyRace(attempts, results, stale)


async def test_one_idempotency_key_stores_one_run_whichever_daemon_creates_it(
    postgres_url: str,
) -> None:
    async with two_daemons(postgres_url) as (a, b):
        refused: Counter[str] = Counter()
        for r in range(ROUNDS):
            race = await race_for_a_key(a, b, r)
            [(_, winner)] = race.won()
            refusals = race.refusals()
            assert len(refusals) == len(race.attempts) - 1  # nothing else went wrong
            refused.update(fingerprint[0] for fingerprint, _ in refusals)
            project = winner.project_id
            stored = {run.id for run in (await a.store.list_runs(project)).items}
            assert stored == {winner.id} | ({race.stale.id} if race.stale else set())
            events = await b.store.list_events(project)
            created = [e["run_id"] for e in events if e["type"] == "workflow.run.created"]
            assert sorted(created) == sorted(stored)
        assert set(refused) == {"a", "b"}, refused


async def test_a_refused_idempotency_key_names_the_run_that_was_stored(
    postgres_url: str,
) -> None:
    async with two_daemons(postgres_url) as (a, b):
        for r in range(ROUNDS):
            race = await race_for_a_key(a, b, r)
            [(fingerprint, winner)] = race.won()
            named = {(taken.run_id, taken.fingerprint) for _, taken in race.refusals()}
            assert named == {(winner.id, fingerprint)}, f"round {r}: {named}"


# -- a parent parked on its child --------------------------------------------------------


RACES = 30


async def test_a_parent_parking_on_a_child_that_ends_on_another_daemon_is_always_woken(
    postgres_url: str,
) -> None:
    async with two_daemons(postgres_url, batch_max=2) as (a, b):
        rng = random.Random(11)
        orders: Counter[bool] = Counter()
        for race in range(RACES):
            parent = await new_run(a)
            child = a_run(b).model_copy(update={"parent_run_id": parent.id})
            await b.store.create_run(child)
            [executing] = await claim(a, "a", limit=1)
            [child_claim] = await claim(b, "b", limit=1)
            assert (executing.run.id, child_claim.run.id) == (parent.id, child.id)
            shown = {"type": "subworkflow", "run_id": child.id}
            park = changes.park(a.now(), Wait(children=(child.id,), shown=shown))
            done = changes.outcome(RunStatus.COMPLETED, b.now(), 1, {})

            parking = a.store.execution(executing).finish(park)
            ending = b.store.execution(child_claim).finish(done)
            if race % 3 == 0:
                # The child ends before the parent parks: while the two overlap, the parent's
                # transaction, which holds its row from its first statement, commits first.
                await ending
                await parking
            else:
                await asyncio.gather(
                    later(rng.randint(0, 3), parking), later(rng.randint(0, 3), ending)
                )

            events = await a.store.list_events("p", 0, limit=100_000)
            parked = max(e["seq"] for e in events if e.get("run_id") == parent.id)
            ended = max(e["seq"] for e in events if e.get("run_id") == child.id)
            orders[parked < ended] += 1
            wake = await a.store.next_wake()
            assert wake is not None, f"race {race}: the parent is not parked at all"
            assert wake <= 0, f"race {race}: the parent is parked for good"
            d, owner = ((a, "a"), (b, "b"))[race % 2]
            [woken] = await claim(d, owner, limit=10)
            assert (woken.run.id, woken.run.waiting_for, woken.fresh) == (parent.id, None, False)
            await finish(d, woken)
        assert set(orders) == {True, False}, orders  # both orders were raced
        assert await a.store.next_wake() is None
