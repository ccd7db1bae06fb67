"""Hand-written fakes of the core's ports (no I/O): a dict store, LangGraph's in-memory saver.

They keep the real store's semantics where the engine depends on them (tests/contract runs
the same suite against both): changes decided on the stored row and atomic, FIFO claims with
resumed runs first, leases by a clock of the store's own, fencing of every write of an
execution, node records riding with their task's writes, a gap-free event seq.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from langgraph.checkpoint.memory import InMemorySaver

from core.concurrency import Group, group_of
from core.domain import (
    Event,
    EventType,
    Graph,
    GraphSpec,
    NodeState,
    NodeStatus,
    Run,
    RunStatus,
)
from core.errors import Conflict, LeaseLost, NotFound
from core.events import Published
from core.idempotency import IdempotencyKey, KeyTaken
from core.pages import MAX_PAGE, Page, RunFilter, decode_cursor, encode_cursor, micros
from core.ports import (
    EXECUTION_KEY,
    Change,
    Claim,
    ClaimRequest,
    Lease,
    PendingAnswer,
    QueueCounts,
    RunChange,
)
from core.states import ACTIVE, TERMINAL
from core.waits import Wait

T = TypeVar("T")


class FakeClock:
    def __init__(self) -> None:
        self.current = datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        self.current += timedelta(milliseconds=1)
        return self.current


@dataclass(slots=True)
class _Row:
    run: Run
    queued_at: int
    owner: str | None = None
    epoch: int = 0
    lease_expires_at: float | None = None
    order: int = 0  # creation order: the real store's seq
    wake_at: float | None = None  # parked: when it is due (the store's clock)
    group: Group | None = None  # per-graph concurrency, fixed at creation
    held: bool = False  # pending, with no room in its group (see adapters/sql/groups.py)


class _Runs(MutableMapping[str, Run]):
    def __init__(self, store: FakeStore) -> None:
        self._store = store

    def __getitem__(self, run_id: str) -> Run:
        return self._store._read(self._store.rows[run_id])

    def __setitem__(self, run_id: str, run: Run) -> None:
        row = self._store.rows.get(run_id)
        if row is None:
            queued_at = len(self._store.events) + 1
            self._store.rows[run_id] = _Row(run, queued_at, order=next(self._store.order))
        else:
            row.run = run
            row.owner = run.owner

    def __delitem__(self, run_id: str) -> None:
        del self._store.rows[run_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._store.rows)

    def __len__(self) -> int:
        return len(self._store.rows)


class FakeLiveness:
    def __init__(self) -> None:
        self.dead: set[str] = set()

    async def is_dead(self, instance: str) -> bool:
        return instance in self.dead


def _transaction(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """A write of the fake store: its events are published when it is done, and dropped with
    it when it raises (the real store's transaction and COMMIT)."""

    @functools.wraps(method)
    async def write(self: FakeStore, *args: Any, **kwargs: Any) -> T:
        mark = len(self.events)
        try:
            result = await method(self, *args, **kwargs)
        except BaseException:
            del self.events[mark:]
            self._unpublished = [p for p in self._unpublished if p.seq <= mark]
            raise
        self._commit()
        return result

    return write


class FakeStore:
    def __init__(self, db_clock: Callable[[], float] = time.time) -> None:
        # Every version a graph had, kept when it is deleted (the runs of a version run on),
        # and the graphs that exist now.
        self.graphs: dict[tuple[str, str], list[Graph]] = {}
        self.live: set[tuple[str, str]] = set()
        self.keys: dict[tuple[str, str], tuple[str, str, int]] = {}  # idempotency keys
        self.rows: dict[str, _Row] = {}
        self.order = itertools.count(1)
        self.node_states: dict[str, dict[str, NodeState]] = {}
        self.events: list[dict[str, Any]] = []
        self.answers: dict[str, PendingAnswer] = {}
        self.singletons: dict[str, tuple[str | None, float]] = {}
        self.db_clock = db_clock
        self.checkpoints: FakeCheckpoints | None = None  # set by FakeCheckpoints(store)
        self.on_commit: Callable[[list[Published]], None] = lambda items: None
        self._unpublished: list[Published] = []

    @property
    def runs(self) -> _Runs:
        """The runs as stored; a test may set one (what a crash left, say)."""
        return _Runs(self)

    def _read(self, row: _Row) -> Run:
        run = row.run
        return run if run.owner == row.owner else run.model_copy(update={"owner": row.owner})

    def _emit(self, event: Event) -> int:
        """Recorded now, published by `_commit()` once the whole write is done (as the real
        store publishes after its COMMIT)."""
        seq = len(self.events) + 1
        payload = {**event.to_json(), "seq": seq}
        self.events.append(payload)
        self._unpublished.append(Published(payload, ""))
        return seq

    def _commit(self) -> None:
        published, self._unpublished = self._unpublished, []
        if published:
            self.on_commit(published)

    # -- graphs ----------------------------------------------------------------------------

    async def list_graphs(
        self, project_id: str, *, limit: int = MAX_PAGE, cursor: str | None = None
    ) -> Page[Graph]:
        after = None if cursor is None else decode_cursor("g", cursor, (str,))[0]
        found = [
            versions[-1]
            for (p, graph_id), versions in sorted(self.graphs.items())
            if p == project_id
            and (p, graph_id) in self.live
            and (after is None or graph_id > after)
        ]
        more = len(found) > limit
        return Page(found[:limit], encode_cursor("g", found[limit - 1].id) if more else None)

    async def get_graph(
        self, project_id: str, graph_id: str, version: int | None = None
    ) -> Graph | None:
        versions = self.graphs.get((project_id, graph_id), [])
        if version is None:
            return versions[-1] if (project_id, graph_id) in self.live else None
        return next((g for g in versions if g.version == version), None)

    @_transaction
    async def put_graph(
        self, project_id: str, graph_id: str, spec: GraphSpec, now: datetime, *, create: bool
    ) -> Graph:
        exists = (project_id, graph_id) in self.live
        if create and exists:
            raise Conflict("exists")
        if not create and not exists:
            raise NotFound("graph", graph_id)
        versions = self.graphs.setdefault((project_id, graph_id), [])
        graph = Graph(
            **spec.model_dump(exclude={"id"}),
            id=graph_id,
            project_id=project_id,
            version=len(versions) + 1,
            created_at=versions[-1].created_at if exists else now,
            updated_at=now,
        )
        versions.append(graph)
        self.live.add((project_id, graph_id))
        kind = EventType.GRAPH_CREATED if create else EventType.GRAPH_UPDATED
        self._emit(Event(type=kind, project_id=project_id, timestamp=now, graph=graph))
        return graph

    @_transaction
    async def delete_graph(self, project_id: str, graph_id: str, now: datetime) -> None:
        if (project_id, graph_id) not in self.live:
            raise NotFound("graph", graph_id)
        active = sum(
            1
            for row in self.rows.values()
            if (row.run.project_id, row.run.workflow_id) == (project_id, graph_id)
            and row.run.status in ACTIVE
        )
        if active:
            raise Conflict(f"graph {graph_id!r} has {active} active run(s); cancel them first")
        self.live.discard((project_id, graph_id))
        graph = self.graphs[(project_id, graph_id)][-1]
        self._emit(
            Event(type=EventType.GRAPH_DELETED, project_id=project_id, timestamp=now, graph=graph)
        )

    # -- runs ------------------------------------------------------------------------------

    @_transaction
    async def create_run(
        self, run: Run, claim: ClaimRequest | None = None, *, key: IdempotencyKey | None = None
    ) -> Claim | None:
        if (run.project_id, run.workflow_id) not in self.live:
            raise NotFound("graph", run.workflow_id)
        if key is not None:
            now = micros(run.created_at)
            held = self.keys.get((run.project_id, key.key))
            if held is not None and held[2] > now and held[0] in self.rows:
                raise KeyTaken(held[0], held[1])
            expires = now + round(key.ttl_s * 1_000_000)
            self.keys[(run.project_id, key.key)] = (run.id, key.fingerprint, expires)
        version = await self.get_graph(run.project_id, run.workflow_id, run.graph_version)
        group = version and group_of(
            run.project_id, run.workflow_id, version.concurrency, run.input
        )
        held = group is not None and self._taken(group.key, waiting=True) >= group.limit
        seq = self._emit(_run_event(run, EventType.RUN_CREATED, run.created_at))
        self.rows[run.id] = _Row(run, seq, order=next(self.order), group=group, held=held)
        waiting = any(
            (row.run.status is RunStatus.PENDING and not row.held)
            or (
                row.run.status is RunStatus.RUNNING
                and row.owner is None
                # a parked run waits for its time, not for a slot, until it is due
                and (row.wake_at is None or row.wake_at <= self.db_clock())
            )
            for run_id, row in self.rows.items()
            if run_id != run.id
        )
        if claim is None or held or waiting:
            return None
        [taken] = await self._claim(claim.owner, 1, claim.lease_s, claim.start)
        return taken

    async def get_run(self, project_id: str | None, run_id: str) -> Run | None:
        row = self.rows.get(run_id)
        if row is None or (project_id is not None and row.run.project_id != project_id):
            return None
        return self._read(row)

    async def list_runs(
        self,
        project_id: str,
        filters: RunFilter | None = None,
        *,
        limit: int = MAX_PAGE,
        cursor: str | None = None,
    ) -> Page[Run]:
        f = filters or RunFilter()
        after = None if cursor is None else tuple(decode_cursor("r", cursor, (int, int)))
        low = None if f.created_after is None else micros(f.created_after)
        high = None if f.created_before is None else micros(f.created_before)
        keyed = sorted(
            (
                ((micros(row.run.created_at), row.order), row)
                for row in self.rows.values()
                if row.run.project_id == project_id
                and (f.workflow_id is None or row.run.workflow_id == f.workflow_id)
                and (not f.statuses or row.run.status in f.statuses)
                and (f.trigger is None or row.run.trigger.get("type") == f.trigger)
                and (f.parent_run_id is None or row.run.parent_run_id == f.parent_run_id)
            ),
            key=lambda pair: pair[0],
            reverse=True,
        )
        found = [
            (key, row)
            for key, row in keyed
            if (low is None or key[0] > low)
            and (high is None or key[0] < high)
            and (after is None or key < after)
        ]
        more = len(found) > limit
        cursor_after = encode_cursor("r", *found[limit - 1][0]) if more else None
        return Page([self._read(row) for _, row in found[:limit]], cursor_after)

    @_transaction
    async def change_run(
        self, project_id: str | None, run_id: str, change: Change, *, lease: Lease | None = None
    ) -> Run:
        row = self.rows.get(run_id)
        if row is None or (project_id is not None and row.run.project_id != project_id):
            raise NotFound("run", run_id)
        if lease is not None:
            self._fence(lease)
        current = self._read(row)
        result = change(current)
        rerun = result.run.status is RunStatus.PENDING and current.status in TERMINAL
        if rerun and (current.project_id, current.workflow_id) not in self.live:
            raise Conflict(f"graph {current.workflow_id!r} was deleted")
        return self._apply(row, current, result)

    def _apply(self, row: _Row, current: Run, result: RunChange) -> Run:
        run = result.run
        if result.release and run.owner is not None:
            run = run.model_copy(update={"owner": None})
        seq = self._emit(_run_event(run, result.event, result.at))
        row.run = run
        row.wake_at = None if result.wait is None else self._wake_at(result.wait, result.at)
        parent = self.rows.get(run.parent_run_id or "")
        if parent is not None and run.status in TERMINAL and parent.wake_at is not None:
            parent.wake_at = 0.0  # the parent waiting on it wakes
        if run.status is RunStatus.PENDING or (
            run.status is RunStatus.RUNNING and current.status is RunStatus.PAUSED
        ):
            row.queued_at = seq
        if result.release:
            row.owner, row.lease_expires_at, row.epoch = None, None, row.epoch + 1
        if result.reset:
            self.node_states.pop(run.id, None)
            if self.checkpoints is not None:
                self.checkpoints.drop(run.id)
        if result.cancel_nodes:
            running = [
                s.model_copy(update={"status": NodeStatus.CANCELLED, "completed_at": result.at})
                for _, s in sorted(self.node_states.get(run.id, {}).items())
                if s.status is NodeStatus.RUNNING
            ]
            self._record_states(run, running, result.at)
        if result.keep_checkpoints > 0 and self.checkpoints is not None:
            self.checkpoints.prune(run.id, result.keep_checkpoints)
        if result.answer is not None:
            self.answers[run.id] = result.answer
        elif result.drop_answer:
            self.answers.pop(run.id, None)
        self._pass_on_slot(row, current, result.at)
        return run

    def _wake_at(self, wait: Wait, now: datetime) -> float:
        """By the store's clock, as the SQL stores do (a timer's length kept, not its time)."""
        ended = [self.rows[c] for c in wait.children if c in self.rows]
        if any(r.run.status in TERMINAL for r in ended):
            return self.db_clock()
        if wait.until is None:
            return self.db_clock() + 1e18
        return self.db_clock() + (wait.until - now).total_seconds()

    async def next_wake(self) -> float | None:
        times = [r.wake_at for r in self.rows.values() if r.wake_at is not None]
        return None if not times else min(times) - self.db_clock()

    def _ahead(self, row: _Row) -> int:
        """The running runs of the group of a run that never started (resumed while pending)
        ahead of it: those that started, and those that never did but joined before it."""
        assert row.group is not None
        return sum(
            r.group is not None
            and r.group.key == row.group.key
            and r.run.status is RunStatus.RUNNING
            and (r.epoch > 0 or r.queued_at < row.queued_at)
            for r in self.rows.values()
        )

    def _taken(self, key: str, *, waiting: bool = False) -> int:
        """The group's running runs (and, with `waiting`, its pending runs not held)."""
        return sum(
            r.group is not None
            and r.group.key == key
            and (
                r.run.status is RunStatus.RUNNING
                or (waiting and r.run.status is RunStatus.PENDING and not r.held)
            )
            for r in self.rows.values()
        )

    def _pass_on_slot(self, row: _Row, current: Run, at: datetime) -> None:
        run = row.run
        if run.status is RunStatus.PENDING and current.status is not RunStatus.PENDING:
            row.held = False  # judged afresh by the next claim
            return
        left_running = current.status is RunStatus.RUNNING and run.status is not RunStatus.RUNNING
        left_queue = current.status is RunStatus.PENDING and run.status not in (
            RunStatus.PENDING,
            RunStatus.RUNNING,
        )
        if row.group is None or not (left_running or (left_queue and not row.held)):
            return
        held = [
            r
            for r in self.rows.values()
            if r.held and r.run.status is RunStatus.PENDING and _same_group(r, row)
        ]
        if held:
            oldest = min(held, key=lambda r: r.queued_at)
            oldest.held = False
            self._emit(_run_event(self._read(oldest), EventType.RUN_UPDATED, at))

    def _fence(self, lease: Lease) -> None:
        row = self.rows.get(lease.run_id)
        if row is None or (row.owner, row.epoch) != (lease.owner, lease.epoch):
            raise LeaseLost(lease.run_id)

    @_transaction
    async def claim_runs(
        self, owner: str, limit: int, lease_s: float, start: Change
    ) -> list[Claim]:
        return await self._claim(owner, limit, lease_s, start)

    async def _claim(self, owner: str, limit: int, lease_s: float, start: Change) -> list[Claim]:
        unowned = [
            r
            for r in self.rows.values()
            if r.run.status is RunStatus.RUNNING
            and r.owner is None
            and r.wake_at is None
            # resumed before it ever started: only within its group's limit
            and not (r.epoch == 0 and r.group is not None and self._ahead(r) >= r.group.limit)
        ]
        now = self.db_clock()
        due = [r for r in self.rows.values() if r.wake_at is not None and r.wake_at <= now]
        pending = [r for r in self.rows.values() if r.run.status is RunStatus.PENDING]
        chosen = sorted(unowned, key=lambda r: r.queued_at)[:limit]
        chosen += sorted(due, key=lambda r: r.wake_at or 0.0)[: limit - len(chosen)]
        running: dict[str, int] = {}
        for row in sorted(pending, key=lambda r: r.queued_at):
            if len(chosen) >= limit:
                break
            if row.held:
                continue
            if row.group is not None:
                key = row.group.key
                running.setdefault(key, self._taken(key))
                if running[key] >= row.group.limit:
                    row.held = True
                    continue
                running[key] += 1
            chosen.append(row)
        claims = []
        for row in chosen:
            current = self._read(row)
            fresh = current.started_at is None  # never ran: no checkpoint or node state to read
            if current.status is RunStatus.PENDING or current.waiting_for is not None:
                run = self._apply(row, current, start(current.model_copy(update={"owner": owner})))
            else:
                run = current.model_copy(update={"owner": owner})
            row.owner, row.epoch = owner, row.epoch + 1
            row.lease_expires_at = self.db_clock() + lease_s
            claims.append(Claim(run, Lease(run.id, owner, row.epoch), fresh))
        return [replace(c, seq=len(self.events)) for c in claims]

    async def renew_leases(self, owner: str, lease_s: float) -> dict[str, int]:
        held = {run_id: row.epoch for run_id, row in self.rows.items() if row.owner == owner}
        for run_id in held:
            self.rows[run_id].lease_expires_at = self.db_clock() + lease_s
        return held

    @_transaction
    async def recover_runs(
        self, dead: Sequence[str], max_recoveries: int, recover: Change, give_up: Change
    ) -> list[Run]:
        now = self.db_clock()
        changed = []
        for row in list(self.rows.values()):
            if row.owner is None:
                continue
            expired = row.lease_expires_at is not None and row.lease_expires_at < now
            if not (expired or row.owner in dead):
                continue
            current = self._read(row)
            if current.status is RunStatus.RUNNING:
                later = current.model_copy(update={"recoveries": current.recoveries + 1})
                result = (give_up if later.recoveries > max_recoveries else recover)(later)
                changed.append(self._apply(row, current, replace(result, release=True)))
            else:
                row.owner, row.lease_expires_at, row.epoch = None, None, row.epoch + 1
        for name, (holder, _) in list(self.singletons.items()):
            if holder in dead:
                self.singletons[name] = (None, 0.0)
        return changed

    async def owners(self) -> set[str]:
        owners = {row.owner for row in self.rows.values() if row.owner is not None}
        return owners | {h for h, _ in self.singletons.values() if h is not None}

    async def queue_counts(self) -> QueueCounts:
        runs = [row for row in self.rows.values() if row.run.status in ACTIVE]
        pending = sum(r.run.status is RunStatus.PENDING for r in runs)
        running = [r for r in runs if r.run.status is RunStatus.RUNNING]
        return QueueCounts(
            pending=pending,
            running=len(running),
            paused=sum(r.run.status is RunStatus.PAUSED for r in runs),
            claimable=pending
            + sum(
                r.owner is None and (r.wake_at is None or r.wake_at <= self.db_clock())
                for r in running
            ),
        )

    async def hold_singleton(
        self, name: str, owner: str, lease_s: float, dead: Sequence[str] = ()
    ) -> bool:
        holder, expires = self.singletons.get(name, (None, 0.0))
        if holder in (None, owner) or expires < self.db_clock() or holder in dead:
            self.singletons[name] = (owner, self.db_clock() + lease_s)
            return True
        return False

    @_transaction
    async def release_runs(
        self, owner: str, now: datetime, leases: Sequence[Lease] | None = None
    ) -> None:
        held = None if leases is None else {(x.run_id, x.epoch) for x in leases if x.owner == owner}
        for row in list(self.rows.values()):
            if row.owner == owner and (held is None or (row.run.id, row.epoch) in held):
                self._release(row, now)

    def _release(self, row: _Row, now: datetime) -> None:
        if row.run.status is RunStatus.RUNNING:
            current = self._read(row)
            self._apply(row, current, RunChange(current, EventType.RUN_UPDATED, now, release=True))
        else:
            row.owner, row.lease_expires_at, row.epoch = None, None, row.epoch + 1

    @_transaction
    async def release_owner(self, owner: str, now: datetime) -> None:
        await self.release_runs(owner, now)
        for name, (holder, _) in list(self.singletons.items()):
            if holder == owner:
                self.singletons[name] = (None, 0.0)

    def execution(self, claim: Claim) -> FakeExecution:
        return FakeExecution(self, claim)

    async def pending_answer(self, run_id: str) -> PendingAnswer | None:
        return self.answers.get(run_id)

    async def drop_answer(self, run_id: str, stale: PendingAnswer) -> None:
        if self.answers.get(run_id) == stale:
            del self.answers[run_id]

    # -- node states and events ------------------------------------------------------------

    def _record_states(self, run: Run, states: Sequence[NodeState], now: datetime) -> None:
        for state in states:
            self.node_states.setdefault(run.id, {})[state.node_id] = state
            self._emit(
                Event(
                    type=EventType.NODE_STATE_UPDATED,
                    project_id=run.project_id,
                    run_id=run.id,
                    timestamp=now,
                    nodeState=state,
                )
            )

    async def list_node_states(self, run_id: str) -> list[NodeState]:
        return list(self.node_states.get(run_id, {}).values())

    async def list_events(
        self, project_id: str, since: int = 0, run_id: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e["project_id"] == project_id
            and e["seq"] > since
            and (run_id is None or e.get("run_id") == run_id)
        ][:limit]

    async def min_event_seq(self) -> int:
        return self.events[0]["seq"] if self.events else 1


class FakeExecution:
    def __init__(self, store: FakeStore, claim: Claim) -> None:
        self._store = store
        self._lease = claim.lease
        self._run = claim.run
        self._riders: dict[str, list[tuple[list[NodeState], datetime]]] = {}
        self.closed = False

    @property
    def lease(self) -> Lease:
        return self._lease

    def record(self, states: Sequence[NodeState], now: datetime) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            self._save_now(list(states), now)
            done.set_result(None)
        except LeaseLost as exc:
            done.set_exception(exc)
        return done

    def record_with_task(self, task_id: str, states: Sequence[NodeState], now: datetime) -> None:
        if not self.closed:
            self._riders.setdefault(task_id, []).append((list(states), now))

    async def save(self, states: Sequence[NodeState], now: datetime) -> None:
        self._save_now(list(states), now)

    async def finish(self, change: Change) -> Run:
        return await self._store.change_run(None, self._lease.run_id, change, lease=self._lease)

    async def release(self, now: datetime) -> None:
        row = self._store.rows.get(self._lease.run_id)
        if row is not None and (row.owner, row.epoch) == (self._lease.owner, self._lease.epoch):
            self._store._release(row, now)
            self._store._commit()

    def close(self) -> None:
        self.closed = True
        self._riders.clear()

    def fence(self) -> None:
        self._store._fence(self._lease)

    def commit_riders(self, task_id: str) -> None:
        """With the task's writes (already fenced by the saver)."""
        for states, now in self._riders.pop(task_id, []):
            self._store._record_states(self._run, states, now)
        self._store._commit()

    def _save_now(self, states: list[NodeState], now: datetime) -> None:
        self._store._fence(self._lease)
        self._store._record_states(self._run, states, now)
        self._store._commit()


class _FencedSaver(InMemorySaver):
    """LangGraph's in-memory saver, fenced like the SQLite one: a write of a run under a lease
    is refused once the lease is lost, and a task's writes carry its node records."""

    def put(self, config: Any, checkpoint: Any, metadata: Any, new_versions: Any) -> Any:
        execution = config["configurable"].get(EXECUTION_KEY)
        if isinstance(execution, FakeExecution):
            execution.fence()
        return super().put(config, checkpoint, metadata, new_versions)

    def put_writes(
        self, config: Any, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        execution = config["configurable"].get(EXECUTION_KEY)
        if isinstance(execution, FakeExecution):
            execution.fence()
        super().put_writes(config, writes, task_id, task_path)
        if isinstance(execution, FakeExecution):
            execution.commit_riders(task_id)

    async def aput(self, config: Any, checkpoint: Any, metadata: Any, new_versions: Any) -> Any:
        return self.put(config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self, config: Any, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        self.put_writes(config, writes, task_id, task_path)


class FakeCheckpoints:
    """LangGraph's own in-memory saver behind the Checkpoints port."""

    def __init__(self, store: FakeStore | None = None) -> None:
        self._saver = _FencedSaver()
        if store is not None:
            store.checkpoints = self

    @property
    def saver(self) -> InMemorySaver:
        return self._saver

    async def exists(self, thread_id: str) -> bool:
        # A read through the saver leaves an empty entry per namespace: those hold nothing.
        return any(self._saver.storage.get(thread_id, {}).values())

    async def latest_id(self, thread_id: str) -> str | None:
        # Not through the saver's reads: they add empty entries to its defaultdicts.
        return max(self._saver.storage.get(thread_id, {}).get("", {}), default=None)

    def drop(self, thread_id: str) -> None:
        self._saver.delete_thread(thread_id)

    def prune(self, thread_id: str, keep: int) -> None:
        for namespace in self._saver.storage.get(thread_id, {}).values():
            for checkpoint_id in sorted(namespace)[:-keep]:
                del namespace[checkpoint_id]


def _same_group(a: _Row, b: _Row) -> bool:
    return a.group is not None and b.group is not None and a.group.key == b.group.key


def _run_event(run: Run, kind: EventType, now: datetime) -> Event:
    return Event(type=kind, project_id=run.project_id, run_id=run.id, timestamp=now, run=run)
