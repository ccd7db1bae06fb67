"""The Store port on SQLite: reads on a reader connection, writes through the one Writer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import aiosqlite

from adapters.sqlite.riders import TaskRiders
from adapters.sqlite.writer import Tx, Writer
from core.domain import Event, EventType, Graph, GraphSpec, NodeState, Run, RunStatus
from core.errors import Conflict, NotFound
from core.ports import PendingAnswer
from core.states import ACTIVE

JSON = dict[str, Any]
_ACTIVE = tuple(s.value for s in ACTIVE)


class SqliteStore:
    def __init__(self, writer: Writer, reader: aiosqlite.Connection, riders: TaskRiders) -> None:
        self._writer = writer
        self._reader = reader
        self._riders = riders

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        async with self._reader.execute(sql, tuple(params)) as cursor:
            return list(await cursor.fetchall())

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        async with self._reader.execute(sql, tuple(params)) as cursor:
            return await cursor.fetchone()

    # -- graphs ----------------------------------------------------------------------------

    async def list_graphs(self, project_id: str) -> list[Graph]:
        rows = await self._all(
            "SELECT body FROM graphs WHERE project_id = ? ORDER BY id", (project_id,)
        )
        return [Graph.model_validate_json(row[0]) for row in rows]

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
        def op(tx: Tx) -> Graph:
            row = tx.fetchone(
                "SELECT body FROM graphs WHERE project_id = ? AND id = ?", (project_id, graph_id)
            )
            if create and row:
                raise Conflict(f"graph {graph_id!r} already exists; PUT replaces it")
            if not create and not row:
                raise NotFound("graph", graph_id)
            (latest,) = tx.fetchone(
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
            tx.execute(
                "INSERT INTO graph_versions (project_id, graph_id, version, body) "
                "VALUES (?, ?, ?, ?)",
                (project_id, graph_id, graph.version, body),
            )
            tx.execute(
                "INSERT OR REPLACE INTO graphs (project_id, id, version, body) VALUES (?, ?, ?, ?)",
                (project_id, graph_id, graph.version, body),
            )
            kind = EventType.GRAPH_CREATED if create else EventType.GRAPH_UPDATED
            tx.emit(Event(type=kind, project_id=project_id, timestamp=now, graph=graph))
            return graph

        return await self._writer.write(op)

    async def delete_graph(self, project_id: str, graph_id: str, now: datetime) -> None:
        def op(tx: Tx) -> None:
            row = tx.fetchone(
                "SELECT body FROM graphs WHERE project_id = ? AND id = ?", (project_id, graph_id)
            )
            if row is None:
                raise NotFound("graph", graph_id)
            (active,) = tx.fetchone(
                f"SELECT COUNT(*) FROM runs WHERE project_id = ? AND workflow_id = ? "
                f"AND status IN ({', '.join('?' * len(_ACTIVE))})",
                (project_id, graph_id, *_ACTIVE),
            )
            if active:
                raise Conflict(f"graph {graph_id!r} has {active} active run(s); cancel them first")
            tx.execute("DELETE FROM graphs WHERE project_id = ? AND id = ?", (project_id, graph_id))
            graph = Graph.model_validate_json(row[0])
            tx.emit(
                Event(
                    type=EventType.GRAPH_DELETED, project_id=project_id, timestamp=now, graph=graph
                )
            )

        await self._writer.write(op)

    # -- runs ------------------------------------------------------------------------------

    async def create_run(self, run: Run) -> None:
        def op(tx: Tx) -> None:
            tx.execute(
                "INSERT INTO runs (id, project_id, workflow_id, status, body) "
                "VALUES (?, ?, ?, ?, ?)",
                (run.id, run.project_id, run.workflow_id, run.status.value, run.model_dump_json()),
            )
            tx.emit(_run_event(run, EventType.RUN_CREATED, run.created_at))

        await self._writer.write(op, small=True)

    async def get_run(self, project_id: str | None, run_id: str) -> Run | None:
        if project_id is None:
            row = await self._one("SELECT body FROM runs WHERE id = ?", (run_id,))
        else:
            row = await self._one(
                "SELECT body FROM runs WHERE id = ? AND project_id = ?", (run_id, project_id)
            )
        return Run.model_validate_json(row[0]) if row else None

    async def list_runs(
        self,
        project_id: str,
        workflow_id: str | None = None,
        status: RunStatus | None = None,
        limit: int = 1000,
    ) -> list[Run]:
        sql = "SELECT body FROM runs WHERE project_id = ?"
        params: list[Any] = [project_id]
        if workflow_id is not None:
            sql += " AND workflow_id = ?"
            params.append(workflow_id)
        if status is not None:
            sql += " AND status = ?"
            params.append(status.value)
        rows = await self._all(sql + " ORDER BY seq DESC LIMIT ?", [*params, limit])
        return [Run.model_validate_json(row[0]) for row in rows]

    async def runs_by_status(self, statuses: Sequence[RunStatus]) -> list[Run]:
        marks = ", ".join("?" * len(statuses))
        rows = await self._all(
            f"SELECT body FROM runs WHERE status IN ({marks}) ORDER BY seq",
            [s.value for s in statuses],
        )
        return [Run.model_validate_json(row[0]) for row in rows]

    async def update_run(
        self,
        run: Run,
        event: EventType,
        now: datetime,
        *,
        answer: PendingAnswer | None = None,
        drop_answer: bool = False,
    ) -> None:
        update = self._run_update_op(run, event, now)
        if answer is None and not drop_answer:
            await self._writer.write(update, small=True)
            return
        # Encoded here, so a value JSON cannot hold fails before anything is written.
        kept = (
            None
            if answer is None
            else (answer.checkpoint_id, answer.interrupt_id, json.dumps(answer.value))
        )

        def op(tx: Tx) -> None:
            update(tx)
            if kept is None:
                tx.execute("DELETE FROM run_resumes WHERE run_id = ?", (run.id,))
            else:
                tx.execute(
                    "INSERT OR REPLACE INTO run_resumes "
                    "(run_id, checkpoint_id, interrupt_id, value) VALUES (?, ?, ?, ?)",
                    (run.id, *kept),
                )

        await self._writer.write(op, small=True)

    def enqueue_run_update(self, run: Run, event: EventType, now: datetime) -> asyncio.Future[None]:
        return self._writer.submit(self._run_update_op(run, event, now), lazy=True, small=True)

    def _run_update_op(self, run: Run, event: EventType, now: datetime) -> Callable[[Tx], None]:
        def op(tx: Tx) -> None:
            tx.execute(
                "UPDATE runs SET status = ?, body = ? WHERE id = ?",
                (run.status.value, run.model_dump_json(), run.id),
            )
            tx.emit(_run_event(run, event, now))

        return op

    async def pending_answer(self, run_id: str) -> PendingAnswer | None:
        row = await self._one(
            "SELECT checkpoint_id, interrupt_id, value FROM run_resumes WHERE run_id = ?",
            (run_id,),
        )
        return PendingAnswer(row[0], json.loads(row[2]), interrupt_id=row[1]) if row else None

    async def drop_answer(self, run_id: str) -> None:
        def op(tx: Tx) -> None:
            tx.execute("DELETE FROM run_resumes WHERE run_id = ?", (run_id,))

        await self._writer.write(op, small=True)

    # -- node states -----------------------------------------------------------------------

    async def save_node_states(self, run: Run, states: Sequence[NodeState], now: datetime) -> None:
        await self._writer.write(self._node_states_op(run, states, now))

    def enqueue_node_states(
        self, run: Run, states: Sequence[NodeState], now: datetime
    ) -> asyncio.Future[None]:
        return self._writer.submit(self._node_states_op(run, states, now), lazy=True, small=True)

    def save_node_states_with_task(
        self, run: Run, states: Sequence[NodeState], now: datetime, task_id: str
    ) -> None:
        self._riders.add(run.id, task_id, self._node_states_op(run, states, now))

    def drop_task_writes(self, run_id: str) -> None:
        self._riders.drop_thread(run_id)

    def _node_states_op(
        self, run: Run, states: Sequence[NodeState], now: datetime
    ) -> Callable[[Tx], None]:
        def op(tx: Tx) -> None:
            tx.executemany(
                "INSERT OR REPLACE INTO node_states (run_id, node_id, body) VALUES (?, ?, ?)",
                [(run.id, s.node_id, s.model_dump_json()) for s in states],
            )
            for state in states:
                tx.emit(
                    Event(
                        type=EventType.NODE_STATE_UPDATED,
                        project_id=run.project_id,
                        run_id=run.id,
                        timestamp=now,
                        nodeState=state,
                    )
                )

        return op

    async def list_node_states(self, run_id: str) -> list[NodeState]:
        rows = await self._all(
            "SELECT body FROM node_states WHERE run_id = ? ORDER BY rowid", (run_id,)
        )
        return [NodeState.model_validate_json(row[0]) for row in rows]

    async def clear_node_states(self, run_id: str) -> None:
        def op(tx: Tx) -> None:
            tx.execute("DELETE FROM node_states WHERE run_id = ?", (run_id,))

        await self._writer.write(op)

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

            def op(tx: Tx) -> int:
                # Decided inside the write: an event committed meanwhile is never taken.
                (first_kept,) = tx.fetchone(
                    "SELECT COALESCE((SELECT MIN(seq) FROM events WHERE timestamp >= ?), "
                    "(SELECT COALESCE(MAX(seq), 0) + 1 FROM events))",
                    (cutoff,),
                )
                rows = tx.conn.execute(
                    "DELETE FROM events WHERE seq IN "
                    "(SELECT seq FROM events WHERE seq < ? ORDER BY seq LIMIT ?)",
                    (first_kept, batch),
                )
                return int(rows.rowcount)

            count = await self._writer.write(op)
            deleted += count
            if count < batch:
                return deleted

    async def min_event_seq(self) -> int:
        row = await self._one(
            "SELECT COALESCE((SELECT MIN(seq) FROM events), "
            "(SELECT seq + 1 FROM sqlite_sequence WHERE name = 'events'), 1)"
        )
        return int(row[0])

    async def ping(self) -> None:
        await self._one("SELECT 1")


def _run_event(run: Run, kind: EventType, now: datetime) -> Event:
    return Event(type=kind, project_id=run.project_id, run_id=run.id, timestamp=now, run=run)
