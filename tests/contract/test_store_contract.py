"""One suite for every implementation of the Store port: the real SQLite and PostgreSQL stores
and the unit tests' fake. What the engine relies on is checked here, so
the fake cannot drift from the real thing: the order of queued writes, node records deferred
to their task's writes, filters, the queue and its leases, fencing, and the event seq."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver, empty_checkpoint
from psycopg_pool import AsyncConnectionPool

from adapters.postgres import db as pg_db
from adapters.postgres.store import PgStore, pg_checkpoints
from adapters.postgres.writer import PgWriter
from adapters.sqlite.checkpoints import sqlite_checkpoints
from adapters.sqlite.db import connect, prepare_database
from adapters.sqlite.store import SqliteStore
from adapters.sqlite.writer import Writer
from core import changes
from core.domain import GraphSpec, NodeState, NodeStatus, Run, RunStatus
from core.errors import Conflict, InvalidCursor, InvalidTransition, LeaseLost, NotFound
from core.idempotency import IdempotencyKey, KeyTaken
from core.pages import RunFilter
from core.ports import EXECUTION_KEY, Claim, ClaimRequest, Lease, PendingAnswer, Store
from core.waits import Wait
from tests.unit.fakes import FakeCheckpoints, FakeStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LEASE_S = 30.0


@dataclass
class Backend:
    store: Any  # Store, plus the adapter's own reads the suite needs (events)
    saver: BaseCheckpointSaver[str]
    clock: list[datetime]

    def now(self) -> datetime:
        self.clock[0] += timedelta(milliseconds=1)
        return self.clock[0]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "fake"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "fake":
        store = FakeStore()
        yield Backend(store, FakeCheckpoints(store).saver, [T0])
        return
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        async with postgres_store(url) as (pg, saver):
            yield Backend(pg, saver, [T0])
        return
    path = tmp_path / "contract.db"
    await prepare_database(path)
    writer = Writer(path)
    await writer.start()
    reader = await connect(path)
    checkpoint_reader = await connect(path)
    try:
        sqlite = SqliteStore(writer, reader)
        yield Backend(sqlite, sqlite_checkpoints(writer, checkpoint_reader).saver, [T0])
    finally:
        await writer.close()
        await reader.close()
        await checkpoint_reader.close()


@contextlib.asynccontextmanager
async def postgres_store(url: str) -> AsyncIterator[tuple[PgStore, BaseCheckpointSaver[str]]]:
    await pg_db.prepare_database(url)
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        url, min_size=1, max_size=4, kwargs={"autocommit": True}, open=False
    )
    await pool.open()
    writer = PgWriter(url)
    await writer.start()
    try:
        yield PgStore(writer, pool), pg_checkpoints(writer, pool).saver
    finally:
        await writer.close()
        await pool.close()


async def graph(b: Backend, graph_id: str = "g", project_id: str = "p") -> None:
    spec = GraphSpec.model_validate({"name": graph_id, "nodes": [{"id": "a"}]})
    await b.store.put_graph(project_id, graph_id, spec, b.now(), create=True)


async def create(
    b: Backend, run: Run, request: ClaimRequest | None = None, *, key: IdempotencyKey | None = None
) -> Claim | None:
    """`create_run`, with the run's graph stored first when it is not (a run needs one)."""
    if await b.store.get_graph(run.project_id, run.workflow_id) is None:
        with contextlib.suppress(Conflict):  # stored meanwhile, for a run created alongside
            await graph(b, run.workflow_id, run.project_id)
    taken: Claim | None = await b.store.create_run(run, request, key=key)
    return taken


def a_run(
    b: Backend,
    workflow_id: str = "g",
    project_id: str = "p",
    *,
    status: RunStatus = RunStatus.PENDING,
    created_at: datetime | None = None,
    run_id: str | None = None,
) -> Run:
    """A run of version 1 of a graph, not stored yet."""
    return Run(
        id=run_id or str(uuid.uuid4()),
        workflow_id=workflow_id,
        status=status,
        project_id=project_id,
        graph_version=1,
        created_at=created_at or b.now(),
    )


async def new_run(
    b: Backend,
    workflow_id: str = "g",
    project_id: str = "p",
    *,
    status: RunStatus = RunStatus.PENDING,
    created_at: datetime | None = None,
) -> Run:
    run = a_run(b, workflow_id, project_id, status=status, created_at=created_at)
    await create(b, run)
    return run


async def claim(b: Backend, owner: str, limit: int = 10, lease_s: float = LEASE_S) -> list[Claim]:
    claimed: list[Claim] = await b.store.claim_runs(owner, limit, lease_s, changes.start(b.now()))
    return claimed


def node(node_id: str, status: NodeStatus, message: str = "") -> NodeState:
    return NodeState(node_id=node_id, status=status, message=message or status.value)


async def seqs(b: Backend) -> list[int]:
    return [e["seq"] for e in await b.store.list_events("p", 0, limit=100_000)]


def task_config(run_id: str, execution: object) -> dict[str, Any]:
    return {
        "configurable": {
            "thread_id": run_id,
            "checkpoint_ns": "",
            "checkpoint_id": "c-1",
            EXECUTION_KEY: execution,
        }
    }


async def test_runs_are_listed_newest_first_and_filtered(backend: Backend) -> None:
    b = backend
    first, second = await new_run(b, "g"), await new_run(b, "h")
    await new_run(b, "g", project_id="other")
    listed = await b.store.list_runs("p")
    assert [r.id for r in listed.items] == [second.id, first.id]
    assert listed.cursor is None
    by_graph = await b.store.list_runs("p", RunFilter(workflow_id="g"))
    assert [r.id for r in by_graph.items] == [first.id]
    running = RunFilter(statuses=frozenset({RunStatus.RUNNING}))
    assert (await b.store.list_runs("p", running)).items == []
    assert len((await b.store.list_runs("p", limit=1)).items) == 1
    assert await b.store.get_run("other", first.id) is None


async def every_page(b: Backend, filters: RunFilter | None, limit: int) -> list[list[str]]:
    """The ids of each page of the list, following the cursors (at most 100 pages)."""
    pages, cursor = [], None
    for _ in range(100):
        page = await b.store.list_runs("p", filters, limit=limit, cursor=cursor)
        pages.append([r.id for r in page.items])
        cursor = page.cursor
        if cursor is None:
            return pages
    raise AssertionError("more than 100 pages")


async def test_pages_of_runs_hold_each_run_once_newest_first_then_end(backend: Backend) -> None:
    b = backend
    made = [await new_run(b) for _ in range(7)]
    newest_first = [r.id for r in reversed(made)]

    assert await every_page(b, None, 3) == [newest_first[:3], newest_first[3:6], newest_first[6:]]
    # A last page that is full has no cursor: nothing is left to read.
    assert await every_page(b, None, 7) == [newest_first]
    assert await every_page(b, None, 1000) == [newest_first]


async def test_runs_created_at_the_same_time_are_in_creation_order_across_pages(
    backend: Backend,
) -> None:
    b = backend
    moment = b.now()
    made = [await new_run(b, created_at=moment) for _ in range(5)]
    older = await new_run(b, created_at=moment - timedelta(microseconds=1))

    pages = await every_page(b, None, 2)

    assert pages == [[made[4].id, made[3].id], [made[2].id, made[1].id], [made[0].id, older.id]]


async def test_a_page_after_a_cursor_is_unmoved_by_runs_created_meanwhile(
    backend: Backend,
) -> None:
    b = backend
    made = [await new_run(b) for _ in range(4)]
    first = await b.store.list_runs("p", limit=2)
    await new_run(b)  # newer than every run listed: it belongs before the first page

    second = await b.store.list_runs("p", limit=2, cursor=first.cursor)

    assert [r.id for r in second.items] == [made[1].id, made[0].id]
    assert second.cursor is None


async def test_filters_combine_and_page_by_status_graph_and_creation_time(
    backend: Backend,
) -> None:
    b = backend
    statuses = [RunStatus.FAILED, RunStatus.COMPLETED, RunStatus.RUNNING, RunStatus.PAUSED]
    made = [await new_run(b, "g" if i % 3 else "h", status=statuses[i % 4]) for i in range(24)]
    await new_run(b, "g", project_id="other", status=RunStatus.FAILED)
    middle = made[12].created_at

    def expected(keep: Any) -> list[str]:
        return [r.id for r in reversed(made) if keep(r)]

    cases: list[tuple[RunFilter, Any]] = [
        (RunFilter(workflow_id="g"), lambda r: r.workflow_id == "g"),
        (RunFilter(statuses=frozenset({RunStatus.FAILED})), lambda r: r.status == "failed"),
        (
            RunFilter(statuses=frozenset({RunStatus.FAILED, RunStatus.PAUSED})),
            lambda r: r.status in ("failed", "paused"),
        ),
        (
            RunFilter(workflow_id="g", statuses=frozenset({RunStatus.RUNNING, RunStatus.FAILED})),
            lambda r: r.workflow_id == "g" and r.status in ("running", "failed"),
        ),
        (RunFilter(created_after=middle), lambda r: r.created_at > middle),
        (RunFilter(created_before=middle), lambda r: r.created_at < middle),
        (
            RunFilter(
                workflow_id="h",
                statuses=frozenset(RunStatus),
                created_after=made[2].created_at,
                created_before=made[20].created_at,
            ),
            lambda r: (
                r.workflow_id == "h" and made[2].created_at < r.created_at < made[20].created_at
            ),
        ),
        (RunFilter(statuses=frozenset({RunStatus.CANCELLED})), lambda r: False),
    ]
    for filters, keep in cases:
        want = expected(keep)
        pages = await every_page(b, filters, 2)
        assert [i for page in pages for i in page] == want, filters
        # Full pages, then the rest; never an empty page after a cursor.
        sizes = [2] * (len(want) // 2) + ([1] if len(want) % 2 else [])
        assert [len(page) for page in pages] == (sizes or [0]), filters


async def test_a_cursor_before_a_created_before_bound_keeps_both(backend: Backend) -> None:
    b = backend
    made = [await new_run(b) for _ in range(6)]
    bound = RunFilter(created_before=made[4].created_at)
    first = await b.store.list_runs("p", bound, limit=2)
    assert [r.id for r in first.items] == [made[3].id, made[2].id]

    rest = await b.store.list_runs("p", bound, limit=2, cursor=first.cursor)
    # The same cursor with a tighter bound: the bound holds.
    tighter = RunFilter(created_before=made[1].created_at)
    tight = await b.store.list_runs("p", tighter, limit=2, cursor=first.cursor)

    assert [r.id for r in rest.items] == [made[1].id, made[0].id]
    assert [r.id for r in tight.items] == [made[0].id]


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "not a cursor",
        "W10",  # base64url of []
        "WyJyIl0",  # ["r"]
        "WyJyIiwxLDIsM10",  # ["r",1,2,3]
        "WyJnIiwiYSJd",  # ["g","a"]: a graph list's cursor
        "WyJyIiwiMSIsMl0",  # ["r","1",2]
        "WyJyIiwxZTk5LDJd",  # ["r",1e99,2]
        "WyJyIiw5OTk5OTk5OTk5OTk5OTk5OTk5OTksMl0",  # past 64 bits
        "WyJyIix0cnVlLDJd",  # ["r",true,2]
        "A" * 5000,
        "é",
    ],
)
async def test_a_cursor_the_store_did_not_make_is_refused(backend: Backend, cursor: str) -> None:
    with pytest.raises(InvalidCursor):
        await backend.store.list_runs("p", cursor=cursor)


async def test_a_run_needs_its_graph_and_a_graph_with_an_active_run_is_not_deleted(
    backend: Backend,
) -> None:
    b = backend
    orphan = a_run(b, "nowhere")
    with pytest.raises(NotFound):
        await b.store.create_run(orphan, key=IdempotencyKey("k", "f", 60))
    assert await b.store.get_run("p", orphan.id) is None
    assert await b.store.list_events("p") == []
    await graph(b)
    run = await new_run(b)
    with pytest.raises(Conflict):
        await b.store.delete_graph("p", "g", b.now())
    await b.store.change_run("p", run.id, changes.cancel(b.now()))
    await b.store.delete_graph("p", "g", b.now())
    assert await b.store.get_graph("p", "g") is None
    assert await b.store.get_graph("p", "g", 1) is not None  # its runs' version stays
    with pytest.raises(NotFound):
        await b.store.create_run(a_run(b))
    with pytest.raises(Conflict):  # nor is an ended run of it executed again
        await b.store.change_run(
            "p", run.id, changes.execute(b.now(), new_input=None, from_start=True)
        )
    assert [(e["type"], e.get("run_id")) for e in await b.store.list_events("p")][-2:] == [
        ("workflow.run.cancelled", run.id),
        ("workflow.graph.deleted", None),
    ]
    await graph(b)  # made again: its versions go on from the deleted one's
    again = await b.store.get_graph("p", "g")
    assert again is not None
    assert again.version == 2


async def test_pages_of_graphs_are_by_id_and_refuse_a_runs_cursor(backend: Backend) -> None:
    b = backend
    for graph_id in ("c", "a", "e", "b", "d"):
        await graph(b, graph_id)
    pages, cursor = [], None
    for _ in range(10):
        page = await b.store.list_graphs("p", limit=2, cursor=cursor)
        pages.append([g.id for g in page.items])
        cursor = page.cursor
        if cursor is None:
            break
    runs_cursor = (await b.store.list_runs("p", limit=1)).cursor

    assert pages == [["a", "b"], ["c", "d"], ["e"]]
    assert (await b.store.list_graphs("other")).items == []
    assert runs_cursor is None  # no runs: nothing after the first page
    await new_run(b)
    await new_run(b)
    runs_cursor = (await b.store.list_runs("p", limit=1)).cursor
    assert runs_cursor is not None
    with pytest.raises(InvalidCursor):
        await b.store.list_graphs("p", cursor=runs_cursor)


async def test_claims_are_fifo_with_taken_back_runs_first_and_never_twice(backend: Backend) -> None:
    b = backend
    runs = [await new_run(b) for _ in range(5)]
    first = await claim(b, "d1", limit=2)
    assert [c.run.id for c in first] == [runs[0].id, runs[1].id]
    assert all(c.run.status is RunStatus.RUNNING and c.run.owner == "d1" for c in first)
    assert all(c.fresh for c in first)
    second = await claim(b, "d2", limit=10)
    assert [c.run.id for c in second] == [r.id for r in runs[2:]]
    assert await claim(b, "d3") == []
    counts = await b.store.queue_counts()
    assert (counts.running, counts.claimable) == (5, 0)

    await b.store.release_runs("d1", b.now())  # d1 stopped: first, without a recovery
    again = await claim(b, "d3", limit=1)
    assert [c.run.id for c in again] == [runs[0].id]
    assert again[0].run.recoveries == 0
    assert again[0].lease.epoch > first[0].lease.epoch
    assert (await b.store.get_run("p", runs[0].id)).owner == "d3"


async def test_a_resumed_run_goes_ahead_of_pending_ones(backend: Backend) -> None:
    b = backend
    older, newer = await new_run(b), await new_run(b)
    [taken] = await claim(b, "d1", limit=1)
    await b.store.change_run("p", older.id, changes.pause(b.now()))
    await b.store.execution(taken).release(b.now())  # drained
    await b.store.change_run("p", older.id, changes.resume(b.now(), None))
    order = [c.run.id for c in await claim(b, "d2")]
    assert order == [older.id, newer.id]


async def test_renewal_names_the_runs_still_held(backend: Backend) -> None:
    b = backend
    for _ in range(3):
        await new_run(b)
    claims = await claim(b, "d1")
    held = await b.store.renew_leases("d1", LEASE_S)
    assert held == {c.run.id: c.lease.epoch for c in claims}
    assert await b.store.renew_leases("nobody", LEASE_S) == {}
    first = claims[0]
    stale = Lease(first.run.id, "d1", first.lease.epoch - 1)
    await b.store.release_runs("d1", b.now(), [stale])  # not the lease it holds: nothing
    assert (await b.store.get_run("p", first.run.id)).owner == "d1"
    await b.store.release_runs("d1", b.now(), [first.lease])
    assert (await b.store.get_run("p", first.run.id)).owner is None


async def test_runs_of_a_dead_owner_are_taken_back_then_fail_past_the_limit(
    backend: Backend,
) -> None:
    b = backend
    run = await new_run(b)
    for attempt in range(1, 4):
        [held] = await claim(b, f"d{attempt}")
        assert await b.store.owners() >= {f"d{attempt}"}
        now = b.now()
        recovered = await b.store.recover_runs(
            [f"d{attempt}"], 2, changes.recover(now), changes.give_up(now, 2)
        )
        assert [r.id for r in recovered] == [run.id]
        stored = await b.store.get_run("p", run.id)
        assert (stored.owner, stored.recoveries) == (None, attempt)
        if attempt <= 2:
            assert stored.status is RunStatus.RUNNING
        else:
            assert stored.status is RunStatus.FAILED
            assert stored.error is not None
            assert stored.error["type"] == "recovery_limit"
        with pytest.raises(LeaseLost):  # the dead owner's execution can write nothing more
            await b.store.execution(held).save([node("a", NodeStatus.COMPLETED)], b.now())
    assert await claim(b, "d9") == []


async def test_an_expired_lease_is_taken_back_by_the_stores_clock(backend: Backend) -> None:
    b = backend
    run = await new_run(b)
    await claim(b, "stalled", lease_s=0.05)
    now = b.now()
    for _ in range(200):  # bounded: the lease is 50 ms
        recovered = await b.store.recover_runs([], 3, changes.recover(now), changes.give_up(now, 3))
        if recovered:
            break
        await asyncio.sleep(0.01)
    assert [r.id for r in recovered] == [run.id]
    [again] = await claim(b, "other")
    assert not again.fresh or again.run.started_at is None
    assert again.run.recoveries == 1


async def test_every_write_of_an_execution_is_fenced_by_its_lease(backend: Backend) -> None:
    b = backend
    run = await new_run(b)
    [old] = await claim(b, "d1")
    execution = b.store.execution(old)
    await execution.save([node("a", NodeStatus.RUNNING)], b.now())
    await b.store.release_runs("d1", b.now())
    [new] = await claim(b, "d2")
    before = await seqs(b)
    with pytest.raises(LeaseLost):
        await execution.record([node("a", NodeStatus.COMPLETED)], b.now())
    with pytest.raises(LeaseLost):
        await execution.finish(changes.outcome(RunStatus.COMPLETED, b.now(), 1, {}))
    with pytest.raises(LeaseLost):
        await b.saver.aput(
            task_config(run.id, execution), empty_checkpoint(), {"source": "loop", "step": 1}, {}
        )
    with pytest.raises(LeaseLost):
        await b.saver.aput_writes(task_config(run.id, execution), [("x", 1)], "task-1")
    await execution.release(b.now())  # not its run any more: a no-op
    assert await seqs(b) == before
    assert (await b.store.get_run("p", run.id)).owner == "d2"
    states = await b.store.list_node_states(run.id)
    assert [s.status for s in states] == [NodeStatus.RUNNING]
    current = b.store.execution(new)
    await current.finish(changes.outcome(RunStatus.COMPLETED, b.now(), 1, {"output": {}}))
    done = await b.store.get_run("p", run.id)
    assert (done.status, done.owner) == (RunStatus.COMPLETED, None)


async def test_queued_writes_keep_their_order(backend: Backend) -> None:
    b = backend
    run = await new_run(b)
    [held] = await claim(b, "d1")
    execution = b.store.execution(held)
    writes = [
        execution.record([node("a", NodeStatus.RUNNING, f"step {i}")], b.now()) for i in range(20)
    ]
    await asyncio.gather(*writes)
    events = await b.store.list_events("p", 0, run.id)
    messages = [e["nodeState"]["message"] for e in events if "nodeState" in e]
    assert messages == [f"step {i}" for i in range(20)]
    [state] = await b.store.list_node_states(run.id)
    assert state.message == "step 19"


async def test_a_nodes_record_waits_for_its_tasks_writes_or_is_forgotten(
    backend: Backend,
) -> None:
    b = backend
    run = await new_run(b)
    [held] = await claim(b, "d1")
    execution = b.store.execution(held)
    execution.record_with_task("task-1", [node("a", NodeStatus.COMPLETED)], b.now())
    await execution.save([node("b", NodeStatus.RUNNING)], b.now())
    assert {s.node_id for s in await b.store.list_node_states(run.id)} == {"b"}
    await b.saver.aput_writes(task_config(run.id, execution), [("x", 1)], "task-1")
    states = {s.node_id: s.status for s in await b.store.list_node_states(run.id)}
    assert states == {"a": NodeStatus.COMPLETED, "b": NodeStatus.RUNNING}

    execution.record_with_task("task-2", [node("c", NodeStatus.COMPLETED)], b.now())
    execution.close()  # cancelled: those writes will not come
    await b.saver.aput_writes(task_config(run.id, execution), [("x", 2)], "task-2")
    assert "c" not in {s.node_id for s in await b.store.list_node_states(run.id)}


async def test_a_refused_change_changes_nothing(backend: Backend) -> None:
    b = backend
    run = await new_run(b)
    before = await seqs(b)
    with pytest.raises(InvalidTransition):
        await b.store.change_run("p", run.id, changes.resume(b.now(), None))
    with pytest.raises(NotFound):
        await b.store.change_run("elsewhere", run.id, changes.cancel(b.now()))
    assert await seqs(b) == before
    assert (await b.store.get_run("p", run.id)).status is RunStatus.PENDING


async def test_a_cancel_fences_out_the_executor_and_cancels_its_running_nodes(
    backend: Backend,
) -> None:
    b = backend
    run = await new_run(b)
    [held] = await claim(b, "d1")
    execution = b.store.execution(held)
    await execution.save([node("a", NodeStatus.COMPLETED), node("b", NodeStatus.RUNNING)], b.now())
    cancelled = await b.store.change_run("p", run.id, changes.cancel(b.now()))
    assert (cancelled.status, cancelled.owner) == (RunStatus.CANCELLED, None)
    states = {s.node_id: s.status for s in await b.store.list_node_states(run.id)}
    assert states == {"a": NodeStatus.COMPLETED, "b": NodeStatus.CANCELLED}
    with pytest.raises(LeaseLost):
        await execution.save([node("b", NodeStatus.COMPLETED)], b.now())


async def test_the_event_seq_is_gap_free_and_increasing(backend: Backend) -> None:
    b = backend
    await graph(b)
    run = await new_run(b)
    [held] = await claim(b, "d1")
    await b.store.execution(held).save([node("a", NodeStatus.RUNNING)], b.now())
    with pytest.raises(InvalidTransition):
        await b.store.change_run("p", run.id, changes.resume(b.now(), None))
    await b.store.change_run("p", run.id, changes.cancel(b.now()))
    found = await seqs(b)
    assert found == list(range(1, len(found) + 1))
    assert len(found) >= 5


async def test_a_duty_is_held_by_one_daemon_until_it_lets_go_or_dies(backend: Backend) -> None:
    b = backend
    store: Store = b.store
    assert await store.hold_singleton("duties", "d1", LEASE_S)
    assert await store.hold_singleton("duties", "d1", LEASE_S)  # renewed
    assert not await store.hold_singleton("duties", "d2", LEASE_S)
    assert await store.hold_singleton("duties", "d2", LEASE_S, dead=["d1"])
    assert not await store.hold_singleton("duties", "d1", LEASE_S)
    await store.release_owner("d2", b.now())
    assert await store.hold_singleton("duties", "d1", LEASE_S)


async def test_a_release_leaves_the_run_claimable_and_says_so_when_it_is_running(
    backend: Backend,
) -> None:
    b = backend
    run = await new_run(b)
    [held] = await claim(b, "d1")
    assert held.seq >= max(await seqs(b))  # the claim's own event is at or before its seq
    await b.store.change_run("p", run.id, changes.pause(b.now()))
    paused = await b.store.get_run("p", run.id)
    assert paused.owner == "d1"  # a pause leaves the executor its lease, to drain
    await b.store.execution(held).save([node("a", NodeStatus.COMPLETED)], b.now())
    await b.store.change_run("p", run.id, changes.resume(b.now(), None))  # before the drain
    assert await claim(b, "d2") == []  # still d1's until it lets go
    before = await seqs(b)
    await b.store.execution(held).release(b.now())
    events = await b.store.list_events("p", max(before), run.id)
    assert [(e["type"], e["run"]["status"], e["run"]["owner"]) for e in events] == [
        ("workflow.run.updated", "running", None)
    ]
    [again] = await claim(b, "d2")
    assert (again.run.id, again.fresh) == (run.id, False)


async def test_an_execute_starts_the_run_over_as_a_new_execution(backend: Backend) -> None:
    b = backend
    run = await new_run(b)
    [held] = await claim(b, "d1")
    await b.store.execution(held).save([node("a", NodeStatus.COMPLETED)], b.now())
    now = b.now()
    await b.store.recover_runs(["d1"], 3, changes.recover(now), changes.give_up(now, 3))
    [held] = await claim(b, "d2")
    answer = PendingAnswer("c-1", "yes")
    await b.store.change_run("p", run.id, changes.pause(b.now()))
    await b.store.execution(held).release(b.now())
    await b.store.change_run("p", run.id, changes.resume(b.now(), answer))
    await b.store.change_run("p", run.id, changes.cancel(b.now()))
    assert await b.store.pending_answer(run.id) is None  # a cancel drops it
    later = await new_run(b)
    again = await b.store.change_run(
        "p", run.id, changes.execute(b.now(), new_input=None, from_start=False)
    )
    assert (again.status, again.recoveries) == (RunStatus.PENDING, 0)
    assert await b.store.list_node_states(run.id) == []  # a cancelled run starts afresh
    order = [c.run.id for c in await claim(b, "d3")]
    assert order == [later.id, run.id]  # executed again: at the end of the queue


async def test_a_stale_answer_is_dropped_only_while_no_newer_one_replaced_it(
    backend: Backend,
) -> None:
    b = backend
    run = await new_run(b)
    [held] = await claim(b, "d1")
    await b.store.change_run("p", run.id, changes.pause(b.now()))
    await b.store.execution(held).release(b.now())
    old = PendingAnswer("c-1", "first", interrupt_id="i-1")
    await b.store.change_run("p", run.id, changes.resume(b.now(), old))
    [held] = await claim(b, "d1")
    await b.store.change_run("p", run.id, changes.pause(b.now()))
    await b.store.execution(held).release(b.now())
    new = PendingAnswer("c-2", "second", interrupt_id="i-2")
    await b.store.change_run("p", run.id, changes.resume(b.now(), new))
    await b.store.drop_answer(run.id, old)  # a late executor found the first one stale
    assert await b.store.pending_answer(run.id) == new
    await b.store.drop_answer(run.id, new)
    assert await b.store.pending_answer(run.id) is None


async def test_a_paused_run_whose_owner_died_loses_only_its_owner(backend: Backend) -> None:
    b = backend
    run = await new_run(b)
    await claim(b, "d1")
    await b.store.change_run("p", run.id, changes.pause(b.now()))
    now = b.now()
    changed = await b.store.recover_runs(["d1"], 3, changes.recover(now), changes.give_up(now, 3))
    assert changed == []
    stored = await b.store.get_run("p", run.id)
    assert (stored.status, stored.owner, stored.recoveries) == (RunStatus.PAUSED, None, 0)


async def test_a_new_run_is_claimed_as_it_is_created_only_when_it_is_first_in_the_queue(
    backend: Backend,
) -> None:
    b = backend
    request = ClaimRequest("d1", LEASE_S, changes.start(b.now()))
    run = a_run(b, run_id="first")
    taken = await create(b, run, request)
    assert taken is not None
    assert (taken.run.id, taken.run.status, taken.run.owner, taken.fresh) == (
        "first",
        RunStatus.RUNNING,
        "d1",
        True,
    )
    assert taken.seq >= max(await seqs(b))
    waiting = await new_run(b)  # no slot asked: it waits
    second = run.model_copy(update={"id": "second", "created_at": b.now()})
    assert await create(b, second, request) is None  # behind the waiting one
    assert [c.run.id for c in await claim(b, "d2")] == [waiting.id, "second"]


async def test_an_idempotency_key_names_one_run_per_project_until_it_expires(
    backend: Backend,
) -> None:
    b = backend
    key = IdempotencyKey("k", "print-1", ttl_s=60)
    first = a_run(b)
    await create(b, first, key=key)
    # Taken, whatever the fingerprint: the store says by which run; nothing else is stored.
    for fingerprint in ("print-1", "print-2"):
        with pytest.raises(KeyTaken) as taken:
            await create(b, a_run(b), key=IdempotencyKey("k", fingerprint, 60))
        assert (taken.value.run_id, taken.value.fingerprint) == (first.id, "print-1")
    assert [r.id for r in (await b.store.list_runs("p")).items] == [first.id]
    # Another project has keys of its own.
    await create(b, a_run(b, "g", "other"), key=key)
    # Past its time to live (by the new run's creation time) the key names the new run.
    later = a_run(b, created_at=first.created_at + timedelta(seconds=61))
    await create(b, later, key=IdempotencyKey("k", "print-3", 60))
    with pytest.raises(KeyTaken) as taken:
        await create(b, a_run(b, created_at=later.created_at), key=key)
    assert (taken.value.run_id, taken.value.fingerprint) == (later.id, "print-3")


async def test_concurrent_creations_with_one_key_store_one_run(backend: Backend) -> None:
    b = backend
    key = IdempotencyKey("burst", "same", ttl_s=60)
    results = await asyncio.gather(
        *(create(b, a_run(b), key=key) for _ in range(10)), return_exceptions=True
    )
    assert sum(isinstance(r, KeyTaken) for r in results) == 9
    assert len((await b.store.list_runs("p")).items) == 1


async def test_runs_are_filtered_by_trigger(backend: Backend) -> None:
    b = backend
    by_api = a_run(b)
    by_hook = a_run(b).model_copy(update={"trigger": {"type": "webhook", "id": "h"}})
    for run in (by_api, by_hook):
        await create(b, run)
    hooked = await b.store.list_runs("p", RunFilter(trigger="webhook"))
    assert [r.id for r in hooked.items] == [by_hook.id]
    pending = frozenset({RunStatus.PENDING, RunStatus.RUNNING})
    api = await b.store.list_runs("p", RunFilter(trigger="api", statuses=pending, workflow_id="g"))
    assert [r.id for r in api.items] == [by_api.id]
    assert (await b.store.list_runs("p", RunFilter(trigger="schedule"))).items == []


# -- per-graph concurrency (DESIGN §11) ------------------------------------------------------


async def limited_graph(
    b: Backend, graph_id: str, limit: int, key: str | None = None, *, create: bool = True
) -> int:
    """A graph whose runs share `concurrency`; the version saved."""
    concurrency: dict[str, Any] = {"limit": limit} if key is None else {"limit": limit, "key": key}
    spec = GraphSpec.model_validate(
        {"name": graph_id, "nodes": [{"id": "a"}], "concurrency": concurrency}
    )
    saved = await b.store.put_graph("p", graph_id, spec, b.now(), create=create)
    version: int = saved.version
    return version


async def run_of(b: Backend, graph_id: str, run_input: Any = None, version: int = 1) -> Run:
    run = a_run(b, graph_id).model_copy(update={"graph_version": version, "input": run_input or {}})
    await create(b, run)
    return run


async def finish(b: Backend, taken: Claim) -> None:
    done = changes.outcome(RunStatus.COMPLETED, b.now(), 1, {})
    await b.store.execution(taken).finish(done)


def ids(claims: list[Claim]) -> list[str]:
    return [c.run.id for c in claims]


async def test_a_group_runs_at_most_its_limit_per_key_value_first_in_first_out(
    backend: Backend,
) -> None:
    b = backend
    await limited_graph(b, "g", 2, "customer")
    a = [await run_of(b, "g", {"customer": "a"}) for _ in range(4)]
    other = await run_of(b, "g", {"customer": "b"})
    no_value = await run_of(b, "g", {})  # a missing value is a group of its own: null
    claimed = await claim(b, "d1", limit=10)
    assert ids(claimed) == [a[0].id, a[1].id, other.id, no_value.id]
    assert await claim(b, "d2", limit=10) == []
    counts = await b.store.queue_counts()
    assert (counts.running, counts.pending) == (4, 2)  # held runs are still pending
    await finish(b, claimed[1])  # a slot of customer a frees: its oldest waiting run gets it
    assert ids(await claim(b, "d2", limit=10)) == [a[2].id]
    await finish(b, claimed[0])
    assert ids(await claim(b, "d2", limit=10)) == [a[3].id]


async def test_the_runs_of_a_full_group_hold_back_no_other_graph(backend: Backend) -> None:
    b = backend
    await limited_graph(b, "one", 1)
    await graph(b, "free")
    await run_of(b, "one")
    [first] = await claim(b, "d1")
    backlog = [await run_of(b, "one") for _ in range(200)]
    behind = await run_of(b, "free")
    assert ids(await claim(b, "d1", limit=1)) == [behind.id]
    # One created on a daemon with a free slot is claimed at creation: the backlog does not wait
    # for a slot, it waits for its group.
    request = ClaimRequest("d1", LEASE_S, changes.start(b.now()))
    at_once = a_run(b, "free", run_id="at-once")
    taken = await create(b, at_once, request)
    assert taken is not None
    assert taken.run.id == "at-once"
    # ... and a run of the full group is not.
    late = at_once.model_copy(update={"id": "late", "workflow_id": "one"})
    assert await create(b, late, request) is None
    await finish(b, first)
    assert ids(await claim(b, "d2", limit=10)) == [backlog[0].id]


async def test_a_freed_slot_is_announced_and_passed_on_by_a_waiting_run_that_leaves(
    backend: Backend,
) -> None:
    b = backend
    await limited_graph(b, "g", 1)
    await run_of(b, "g")
    [first] = await claim(b, "d1")
    second, third = await run_of(b, "g"), await run_of(b, "g")
    before = max(await seqs(b))
    await finish(b, first)
    events = await b.store.list_events("p", before)
    assert [(e["type"], e["run_id"], e["run"]["status"]) for e in events] == [
        ("workflow.run.completed", first.run.id, "completed"),
        ("workflow.run.updated", second.id, "pending"),  # let go: every daemon looks for it
    ]
    await b.store.change_run("p", second.id, changes.cancel(b.now()))  # leaves before a claim
    assert ids(await claim(b, "d1")) == [third.id]


async def test_a_resumed_or_recovered_run_keeps_its_place_beyond_the_limit(
    backend: Backend,
) -> None:
    b = backend
    await limited_graph(b, "g", 1)
    paused, waiting, last = await run_of(b, "g"), await run_of(b, "g"), await run_of(b, "g")
    [taken] = await claim(b, "d1")
    await b.store.change_run("p", paused.id, changes.pause(b.now()))  # paused: counts no more
    await b.store.execution(taken).release(b.now())
    [second] = await claim(b, "d2")
    assert second.run.id == waiting.id
    await b.store.change_run("p", paused.id, changes.resume(b.now(), None))
    assert ids(await claim(b, "d1")) == [paused.id]  # resumed: never refused by the limit
    now = b.now()
    await b.store.recover_runs(["d2"], 3, changes.recover(now), changes.give_up(now, 3))
    assert ids(await claim(b, "d3")) == [waiting.id]  # taken back: it holds its place too
    assert (await b.store.get_run("p", last.id)).status is RunStatus.PENDING


async def test_a_run_resumed_before_it_started_starts_only_within_the_limit(
    backend: Backend,
) -> None:
    b = backend
    await limited_graph(b, "g", 1)
    first, early = await run_of(b, "g"), await run_of(b, "g")
    [taken] = await claim(b, "d1")
    assert taken.run.id == first.id
    await b.store.change_run("p", early.id, changes.pause(b.now()))  # paused while pending
    await b.store.change_run("p", early.id, changes.resume(b.now(), None))  # now "running"
    assert await claim(b, "d2") == []  # its group is full: it waits, running but unowned
    await finish(b, taken)
    assert ids(await claim(b, "d2")) == [early.id]


async def test_runs_resumed_before_they_started_start_one_by_one_within_the_limit(
    backend: Backend,
) -> None:
    """Two runs of a group of one, both paused while pending and resumed: the first to join
    the queue again starts, the other once it finished (neither waits for the other for
    good)."""
    b = backend
    await limited_graph(b, "g", 1)
    first, second = await run_of(b, "g"), await run_of(b, "g")
    for run in (first, second):
        await b.store.change_run("p", run.id, changes.pause(b.now()))
    for run in (second, first):  # the second joins the queue again first
        await b.store.change_run("p", run.id, changes.resume(b.now(), None))
    [taken] = await claim(b, "d1")
    assert taken.run.id == second.id
    assert await claim(b, "d2") == []
    await finish(b, taken)
    assert ids(await claim(b, "d2")) == [first.id]


async def test_a_claim_counts_the_runs_it_took_earlier_in_its_batch(backend: Backend) -> None:
    b = backend
    await limited_graph(b, "g", 1)
    first, second, third = await run_of(b, "g"), await run_of(b, "g"), await run_of(b, "g")
    [taken] = await claim(b, "d1")
    for run in (second, third):  # held: leaving the queue passes no place on
        await b.store.change_run("p", run.id, changes.cancel(b.now()))
    await finish(b, taken)
    for run in (second, third):  # executed again: both wait, neither is held
        await b.store.change_run(
            "p", run.id, changes.execute(b.now(), new_input=None, from_start=False)
        )
    assert ids(await claim(b, "d1", limit=10)) == [second.id]
    assert (await b.store.get_run("p", first.id)).status is RunStatus.COMPLETED


async def test_a_run_keeps_the_limit_of_the_version_it_was_created_with(
    backend: Backend,
) -> None:
    b = backend
    await limited_graph(b, "g", 1)
    await run_of(b, "g")
    [taken] = await claim(b, "d1")
    before_edit = await run_of(b, "g")
    version = await limited_graph(b, "g", 2, create=False)  # the edit: limit 2 from now on
    after_edit = await run_of(b, "g", version=version)
    # The group is still the graph's: one runs, so the new run (limit 2) may start; the one
    # created before the edit (limit 1) may not.
    [later] = await claim(b, "d1", limit=10)
    assert later.run.id == after_edit.id
    await finish(b, taken)
    assert ids(await claim(b, "d1", limit=10)) == []  # one still runs: limit 1
    await finish(b, later)
    assert ids(await claim(b, "d1", limit=10)) == [before_edit.id]


async def test_a_run_parked_on_a_timer_keeps_its_place_in_its_group(backend: Backend) -> None:
    b = backend
    await limited_graph(b, "g", 1)
    parked, waiting = await run_of(b, "g"), await run_of(b, "g")
    [taken] = await claim(b, "d1")
    later = datetime(2100, 1, 1, tzinfo=UTC)
    wait = Wait(until=later, shown={"type": "timer", "until": later.isoformat()})
    await b.store.execution(taken).finish(changes.park(b.now(), wait))  # no slot, still running
    assert await claim(b, "d1") == []  # its group is full: the parked run counts
    await b.store.change_run("p", parked.id, changes.cancel(b.now()))
    assert ids(await claim(b, "d1")) == [waiting.id]


async def test_a_run_parked_until_later_does_not_keep_a_new_run_from_its_slot(
    backend: Backend,
) -> None:
    b = backend
    parked = await new_run(b, "g")
    [taken] = await claim(b, "d1")
    until = b.now() + timedelta(hours=1)
    await b.store.execution(taken).finish(changes.park(b.now(), Wait(until=until)))
    fresh = a_run(b)
    request = ClaimRequest("d1", LEASE_S, changes.start(b.now()))
    claimed = await create(b, fresh, request)
    assert claimed is not None  # nothing due waits: taken as it is created
    assert claimed.run.id == fresh.id
    assert (await b.store.get_run("p", parked.id)).waiting_for is not None
    assert 0 < (await b.store.next_wake()) <= 3600
