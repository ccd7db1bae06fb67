"""Hand-written fakes of the core's ports (no I/O): a dict store, LangGraph's in-memory saver."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from langgraph.checkpoint.memory import InMemorySaver

from core.domain import Event, EventType, Graph, GraphSpec, NodeState, Run, RunStatus
from core.errors import Conflict, NotFound
from core.ports import PendingAnswer


class FakeClock:
    def __init__(self) -> None:
        self.current = datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        self.current += timedelta(milliseconds=1)
        return self.current


class FakeStore:
    def __init__(self) -> None:
        self.graphs: dict[tuple[str, str], list[Graph]] = {}
        self.runs: dict[str, Run] = {}
        self.node_states: dict[str, dict[str, NodeState]] = {}
        self.events: list[dict[str, Any]] = []
        self.answers: dict[str, PendingAnswer] = {}

    def _emit(self, event: Event) -> None:
        self.events.append({**event.to_json(), "seq": len(self.events) + 1})

    async def list_graphs(self, project_id: str) -> list[Graph]:
        return [v[-1] for (p, _), v in self.graphs.items() if p == project_id and v]

    async def get_graph(
        self, project_id: str, graph_id: str, version: int | None = None
    ) -> Graph | None:
        versions = self.graphs.get((project_id, graph_id), [])
        if version is None:
            return versions[-1] if versions else None
        return next((g for g in versions if g.version == version), None)

    async def put_graph(
        self, project_id: str, graph_id: str, spec: GraphSpec, now: datetime, *, create: bool
    ) -> Graph:
        versions = self.graphs.setdefault((project_id, graph_id), [])
        if create and versions:
            raise Conflict("exists")
        if not create and not versions:
            raise NotFound("graph", graph_id)
        graph = Graph(
            **spec.model_dump(exclude={"id"}),
            id=graph_id,
            project_id=project_id,
            version=len(versions) + 1,
            created_at=now,
            updated_at=now,
        )
        versions.append(graph)
        return graph

    async def delete_graph(self, project_id: str, graph_id: str, now: datetime) -> None:
        self.graphs.pop((project_id, graph_id), None)

    async def create_run(self, run: Run) -> None:
        self.runs[run.id] = run
        self._emit(
            Event(
                type=EventType.RUN_CREATED,
                project_id=run.project_id,
                run_id=run.id,
                timestamp=run.created_at,
                run=run,
            )
        )

    async def get_run(self, project_id: str | None, run_id: str) -> Run | None:
        run = self.runs.get(run_id)
        if run is None or (project_id is not None and run.project_id != project_id):
            return None
        return run

    async def list_runs(
        self,
        project_id: str,
        workflow_id: str | None = None,
        status: RunStatus | None = None,
        limit: int = 1000,
    ) -> list[Run]:
        return [r for r in reversed(self.runs.values()) if r.project_id == project_id][:limit]

    async def runs_by_status(self, statuses: Sequence[RunStatus]) -> list[Run]:
        return [r for r in self.runs.values() if r.status in statuses]

    async def update_run(
        self,
        run: Run,
        event: EventType,
        now: datetime,
        *,
        answer: PendingAnswer | None = None,
        drop_answer: bool = False,
    ) -> None:
        self.runs[run.id] = run
        self._emit(
            Event(type=event, project_id=run.project_id, run_id=run.id, timestamp=now, run=run)
        )
        if answer is not None:
            self.answers[run.id] = answer
        elif drop_answer:
            self.answers.pop(run.id, None)

    async def pending_answer(self, run_id: str) -> PendingAnswer | None:
        return self.answers.get(run_id)

    async def drop_answer(self, run_id: str) -> None:
        self.answers.pop(run_id, None)

    def enqueue_run_update(self, run: Run, event: EventType, now: datetime) -> asyncio.Future[None]:
        self.runs[run.id] = run
        self._emit(
            Event(type=event, project_id=run.project_id, run_id=run.id, timestamp=now, run=run)
        )
        return _done()

    async def save_node_states(self, run: Run, states: Sequence[NodeState], now: datetime) -> None:
        self._record_states(run, states, now)

    def enqueue_node_states(
        self, run: Run, states: Sequence[NodeState], now: datetime
    ) -> asyncio.Future[None]:
        self._record_states(run, states, now)
        return _done()

    def save_node_states_with_task(
        self, run: Run, states: Sequence[NodeState], now: datetime, task_id: str
    ) -> None:
        # No transaction to share with the in-memory saver: record at once.
        self._record_states(run, states, now)

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

    def drop_task_writes(self, run_id: str) -> None:
        pass

    async def list_node_states(self, run_id: str) -> list[NodeState]:
        return list(self.node_states.get(run_id, {}).values())

    async def clear_node_states(self, run_id: str) -> None:
        self.node_states.pop(run_id, None)

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


class FakeCheckpoints:
    """LangGraph's own in-memory saver behind the Checkpoints port."""

    def __init__(self) -> None:
        self._saver = InMemorySaver()

    @property
    def saver(self) -> InMemorySaver:
        return self._saver

    async def exists(self, thread_id: str) -> bool:
        return thread_id in self._saver.storage and bool(self._saver.storage[thread_id])

    async def latest_id(self, thread_id: str) -> str | None:
        # Not through the saver's reads: they add empty entries to its defaultdicts.
        return max(self._saver.storage.get(thread_id, {}).get("", {}), default=None)

    async def delete(self, thread_id: str) -> None:
        await self._saver.adelete_thread(thread_id)

    async def prune(self, thread_id: str, keep: int) -> None:
        for namespace in self._saver.storage.get(thread_id, {}).values():
            for checkpoint_id in sorted(namespace)[:-keep]:
                del namespace[checkpoint_id]


def _done() -> asyncio.Future[None]:
    """What a queued write of the in-memory store returns: already durable."""
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done.set_result(None)
    return done
