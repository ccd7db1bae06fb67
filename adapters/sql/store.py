"""The Store port, written once for both databases: reads through `Reads`, every write an
operation (`adapters.sql.tx`) through the store's one writer."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

from adapters.sql import groups, pages, runs
from adapters.sql.execution import SqlExecution
from adapters.sql.schedules import SqlSchedules
from adapters.sql.tx import Dialect, Reads, Tx, Writes
from adapters.sql.webhooks import SqlWebhooks
from core.domain import Event, EventType, Graph, GraphSpec, NodeState, Run
from core.errors import Conflict, NotFound
from core.events import Published
from core.idempotency import IdempotencyKey
from core.pages import MAX_PAGE, Page, RunFilter
from core.ports import Change, Claim, ClaimRequest, Lease, PendingAnswer, QueueCounts
from core.states import ACTIVE

JSON = dict[str, Any]
_ACTIVE = tuple(s.value for s in ACTIVE)


class SqlStore:
    def __init__(self, writer: Writes, reads: Reads, dialect: Dialect) -> None:
        self._writer = writer
        self._reads = reads
        self._dialect = dialect
        self._versions = groups.VersionLimits()
        self.schedules = SqlSchedules(writer, reads)
        self.webhooks = SqlWebhooks(writer, reads)

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return await self._reads.all(sql, params)

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = await self._reads.all(sql, params)
        return rows[0] if rows else None

    # -- graphs ----------------------------------------------------------------------------

    async def list_graphs(
        self, project_id: str, *, limit: int = MAX_PAGE, cursor: str | None = None
    ) -> Page[Graph]:
        rows = await self._all(*pages.graphs_query(project_id, limit, cursor))
        graphs = [Graph.model_validate_json(row[1]) for row in rows[:limit]]
        return Page(graphs, pages.next_graph_cursor(rows, limit))

    async def get_graph(
        self, project_id: str, graph_id: str, version: int | None = None
    ) -> Graph | None:
        if version is None:
            row = await self._one(
                "SELECT body FROM graphs WHERE project_id = ? AND id = ?", (project_id, graph_id)
            )
        else:
            row = await self._one(
                "SELECT body FROM graph_versions "
                "WHERE project_id = ? AND graph_id = ? AND version = ?",
                (project_id, graph_id, version),
            )
        return Graph.model_validate_json(row[0]) if row else None

    async def put_graph(
        self, project_id: str, graph_id: str, spec: GraphSpec, now: datetime, *, create: bool
    ) -> Graph:
        async def op(tx: Tx) -> Graph:
            # One change of a graph at a time (its versions are numbered from the last),
            # also while it does not exist yet (two creations: the second is refused).
            await tx.lock("graph", project_id, graph_id)
            row = await tx.fetchone(
                "SELECT body FROM graphs WHERE project_id = ? AND id = ?", (project_id, graph_id)
            )
            if create and row:
                raise Conflict(f"graph {graph_id!r} already exists; PUT replaces it")
            if not create and not row:
                raise NotFound("graph", graph_id)
            (latest,) = await tx.fetchone(
                "SELECT COALESCE(MAX(version), 0) FROM graph_versions "
                "WHERE project_id = ? AND graph_id = ?",
                (project_id, graph_id),
            )
            created_at = Graph.model_validate_json(row[0]).created_at if row else now
            graph = Graph(
                **spec.model_dump(exclude={"id"}),
                id=graph_id,
                project_id=project_id,
                version=latest + 1,
                created_at=created_at,
                updated_at=now,
            )
            body = graph.model_dump_json()
            concurrency = graph.concurrency and graph.concurrency.model_dump_json()
            await tx.execute(
                "INSERT INTO graph_versions (project_id, graph_id, version, body, concurrency) "
                "VALUES (?, ?, ?, ?, ?)",
                (project_id, graph_id, graph.version, body, concurrency),
            )
            await tx.execute(
                "INSERT INTO graphs (project_id, id, version, body) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (project_id, id) DO UPDATE SET "
                "version = excluded.version, body = excluded.body",
                (project_id, graph_id, graph.version, body),
            )
            kind = EventType.GRAPH_CREATED if create else EventType.GRAPH_UPDATED
            await tx.emit(Event(type=kind, project_id=project_id, timestamp=now, graph=graph))
            return graph

        return await self._writer.write(op)

    async def delete_graph(self, project_id: str, graph_id: str, now: datetime) -> None:
        await self._writer.write(
            partial(remove_graph, project_id=project_id, graph_id=graph_id, now=now)
        )

    # -- runs ------------------------------------------------------------------------------

    async def create_run(
        self, run: Run, claim: ClaimRequest | None = None, *, key: IdempotencyKey | None = None
    ) -> Claim | None:
        return await self._writer.write(
            partial(runs.insert_run, run=run, claim=claim, key=key, versions=self._versions),
            small=True,
        )

    async def get_run(self, project_id: str | None, run_id: str) -> Run | None:
        if project_id is None:
            row = await self._one(f"SELECT {runs.RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,))
        else:
            row = await self._one(
                f"SELECT {runs.RUN_COLUMNS} FROM runs WHERE id = ? AND project_id = ?",
                (run_id, project_id),
            )
        return runs.run_from(row) if row else None

    async def list_runs(
        self,
        project_id: str,
        filters: RunFilter | None = None,
        *,
        limit: int = MAX_PAGE,
        cursor: str | None = None,
    ) -> Page[Run]:
        query = pages.runs_query(
            project_id, filters or RunFilter(), limit, cursor, self._dialect.indexed_by
        )
        rows = await self._all(*query)
        found = [runs.run_from(row[2:]) for row in rows[:limit]]
        return Page(found, pages.next_run_cursor(rows, limit))

    async def change_run(
        self, project_id: str | None, run_id: str, change: Change, *, lease: Lease | None = None
    ) -> Run:
        op = partial(
            runs.change_run, project_id=project_id, run_id=run_id, change=change, lease=lease
        )
        return await self._writer.write(op, small=True)

    async def claim_runs(
        self, owner: str, limit: int, lease_s: float, start: Change
    ) -> list[Claim]:
        op = partial(runs.claim_runs, owner=owner, limit=limit, lease_s=lease_s, start=start)
        return await self._writer.write(op, small=limit <= 4)

    async def renew_leases(self, owner: str, lease_s: float) -> dict[str, int]:
        return await self._writer.write(partial(runs.renew_leases, owner=owner, lease_s=lease_s))

    async def recover_runs(
        self, dead: Sequence[str], max_recoveries: int, recover: Change, give_up: Change
    ) -> list[Run]:
        op = partial(
            runs.recover_runs,
            dead=list(dead),
            max_recoveries=max_recoveries,
            recover=recover,
            give_up=give_up,
        )
        return await self._writer.write(op)

    async def owners(self) -> set[str]:
        rows = await self._all(
            "SELECT DISTINCT owner FROM runs WHERE owner IS NOT NULL "
            "UNION SELECT owner FROM singletons WHERE owner IS NOT NULL "
            "UNION SELECT id FROM instances"
        )
        return {row[0] for row in rows}

    async def next_wake(self) -> float | None:
        row = await self._one(
            f"SELECT wake_at - {self._dialect.now} FROM runs "
            f"{self._dialect.indexed_by('runs_waking')} WHERE wake_at IS NOT NULL "
            "ORDER BY wake_at LIMIT 1"
        )
        return None if row is None else float(row[0])

    async def queue_counts(self) -> QueueCounts:
        rows = await self._all(
            # A parked run is claimable once its wake-up time came.
            "SELECT status, COUNT(*), SUM(CASE WHEN owner IS NULL AND (wake_at IS NULL OR "
            f"wake_at <= {self._dialect.now}) THEN 1 ELSE 0 END) FROM runs "
            "WHERE status IN ('pending', 'running', 'paused') GROUP BY status"
        )
        by_status = {status: (int(total), int(unowned or 0)) for status, total, unowned in rows}
        pending = by_status.get("pending", (0, 0))[0]
        running, unowned = by_status.get("running", (0, 0))
        return QueueCounts(
            pending=pending,
            running=running,
            paused=by_status.get("paused", (0, 0))[0],
            claimable=pending + unowned,
        )

    async def hold_singleton(
        self, name: str, owner: str, lease_s: float, dead: Sequence[str] = ()
    ) -> bool:
        op = partial(runs.hold_singleton, name=name, owner=owner, lease_s=lease_s, dead=dead)
        return await self._writer.write(op, small=True)

    async def release_runs(
        self, owner: str, now: datetime, leases: Sequence[Lease] | None = None
    ) -> None:
        op = partial(runs.release_runs, owner=owner, now=now, leases=leases)
        await self._writer.write(op)

    async def release_owner(self, owner: str, now: datetime) -> None:
        await self._writer.write(partial(runs.release_owner, owner=owner, now=now))

    def execution(self, claim: Claim) -> SqlExecution:
        return SqlExecution(self._writer, claim)

    async def pending_answer(self, run_id: str) -> PendingAnswer | None:
        row = await self._one(
            "SELECT checkpoint_id, interrupt_id, value FROM run_resumes WHERE run_id = ?",
            (run_id,),
        )
        return PendingAnswer(row[0], json.loads(row[2]), interrupt_id=row[1]) if row else None

    async def drop_answer(self, run_id: str, stale: PendingAnswer) -> None:
        value = runs.encode_answer(stale.value)

        async def op(tx: Tx) -> None:
            same = tx.dialect.same
            await tx.execute(
                f"DELETE FROM run_resumes WHERE run_id = ? AND {same('checkpoint_id', '?')} "
                f"AND {same('interrupt_id', '?')} AND value = ?",
                (run_id, stale.checkpoint_id, stale.interrupt_id, value),
            )

        await self._writer.write(op, small=True)

    # -- node states -----------------------------------------------------------------------

    async def list_node_states(self, run_id: str) -> list[NodeState]:
        rows = await self._all(
            f"SELECT body FROM node_states WHERE run_id = ? ORDER BY {self._dialect.row_order}",
            (run_id,),
        )
        return [NodeState.model_validate_json(row[0]) for row in rows]

    # -- instances ------------------------------------------------------------------------

    async def register_instance(self, instance: str, host: str, pid: int, wake: str | None) -> None:
        started = datetime.now(UTC).isoformat()

        async def op(tx: Tx) -> None:
            await tx.execute(
                "INSERT INTO instances (id, host, pid, started_at, wake) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid, "
                "started_at = excluded.started_at, wake = excluded.wake",
                (instance, host, pid, started, wake),
            )

        await self._writer.write(op, small=True)

    async def forget_instances(self, instances: Sequence[str]) -> None:
        async def op(tx: Tx) -> None:
            await tx.executemany("DELETE FROM instances WHERE id = ?", [(i,) for i in instances])

        if instances:
            await self._writer.write(op, small=True)

    async def wake_addresses(self, instance: str) -> list[str]:
        """Where to wake the other daemons on this file."""
        rows = await self._all(
            "SELECT wake FROM instances WHERE id != ? AND wake IS NOT NULL", (instance,)
        )
        return [row[0] for row in rows]

    # -- events ----------------------------------------------------------------------------

    async def list_events(
        self, project_id: str, since: int = 0, run_id: str | None = None, limit: int = 1000
    ) -> list[JSON]:
        if run_id is None:
            rows = await self._all(
                "SELECT seq, body FROM events WHERE project_id = ? AND seq > ? "
                "ORDER BY seq LIMIT ?",
                (project_id, since, limit),
            )
        else:
            rows = await self._all(
                "SELECT seq, body FROM events WHERE run_id = ? AND project_id = ? AND seq > ? "
                "ORDER BY seq LIMIT ?",
                (run_id, project_id, since, limit),
            )
        return [{"seq": seq, **json.loads(body)} for seq, body in rows]

    async def prune_events(self, before: datetime, batch: int = 5000) -> int:
        """Delete the events older than `before`, oldest first and only as a prefix of the log
        (so what is kept never has a hole), in short transactions. Returns how many went."""
        cutoff = before.isoformat().replace("+00:00", "Z")
        deleted = 0
        while True:

            async def op(tx: Tx) -> int:
                # Decided inside the write: an event committed meanwhile is never taken.
                (first_kept,) = await tx.fetchone(
                    "SELECT COALESCE((SELECT MIN(seq) FROM events WHERE timestamp >= ?), "
                    "(SELECT COALESCE(MAX(seq), 0) + 1 FROM events))",
                    (cutoff,),
                )
                gone = await tx.fetchall(
                    "DELETE FROM events WHERE seq IN "
                    "(SELECT seq FROM events WHERE seq < ? ORDER BY seq LIMIT ?) RETURNING seq",
                    (first_kept, batch),
                )
                return len(gone)

            count = await self._writer.write(op)
            deleted += count
            if count < batch:
                return deleted

    async def min_event_seq(self) -> int:
        row = await self._one(
            f"SELECT COALESCE((SELECT MIN(seq) FROM events), {self._dialect.next_seq}, 1)"
        )
        return int(row[0])

    async def events_after(self, seq: int, limit: int = 1000) -> list[Published]:
        """Every project's events after `seq`, in order, as the bus carries them (the tail of
        the log that other daemons on this file committed)."""
        rows = await self._all(
            "SELECT seq, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
        )
        return [
            Published({"seq": s, **json.loads(body)}, f'{{"seq":{s},{body[1:]}') for s, body in rows
        ]

    async def last_seq(self) -> int:
        row = await self._one("SELECT COALESCE(MAX(seq), 0) FROM events")
        return int(row[0])

    async def sink_cursor(self, sink: str) -> int | None:
        row = await self._one("SELECT seq FROM sink_cursors WHERE sink = ?", (sink,))
        return None if row is None else int(row[0])

    async def set_sink_cursor(self, sink: str, seq: int) -> None:
        async def op(tx: Tx) -> None:
            await tx.execute(
                "INSERT INTO sink_cursors (sink, seq) VALUES (?, ?) "
                "ON CONFLICT (sink) DO UPDATE SET seq = excluded.seq",
                (sink, seq),
            )

        await self._writer.write(op, small=True)

    async def ping(self) -> None:
        await self._one("SELECT 1")


async def remove_graph(tx: Tx, project_id: str, graph_id: str, now: datetime) -> None:
    """Delete the graph (its versions stay, for its runs), unless a run of it is active."""
    await tx.lock("graph", project_id, graph_id)
    # Locked before the runs are counted: a run being made of it (`runs.graph_kept`)
    # is either counted or made after, and then finds the graph gone.
    row = await tx.fetchone(
        f"SELECT body FROM graphs WHERE project_id = ? AND id = ?{tx.dialect.lock}",
        (project_id, graph_id),
    )
    if row is None:
        raise NotFound("graph", graph_id)
    (active,) = await tx.fetchone(
        f"SELECT COUNT(*) FROM runs WHERE project_id = ? AND workflow_id = ? "
        f"AND status IN ({', '.join('?' * len(_ACTIVE))})",
        (project_id, graph_id, *_ACTIVE),
    )
    if active:
        raise Conflict(f"graph {graph_id!r} has {active} active run(s); cancel them first")
    await tx.execute("DELETE FROM graphs WHERE project_id = ? AND id = ?", (project_id, graph_id))
    graph = Graph.model_validate_json(row[0])
    await tx.emit(
        Event(type=EventType.GRAPH_DELETED, project_id=project_id, timestamp=now, graph=graph)
    )
