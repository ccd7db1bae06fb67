"""What the core needs from the outside world, as Protocols. Adapters implement them."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from langgraph.checkpoint.base import BaseCheckpointSaver

from core.domain import EventType, Graph, GraphSpec, NodeState, Run, RunStatus


@dataclass(frozen=True, slots=True)
class PendingAnswer:
    """The answer (`resume {"value": ...}`) to a run waiting for input, kept from the resume's
    acknowledgement until LangGraph has it in the run's checkpoints. `interrupt_id`: the
    question it answers (LangGraph's interrupt id), when the run waited for exactly one;
    `checkpoint_id`: the newest checkpoint of the run's thread when it was given."""

    checkpoint_id: str | None
    value: Any
    interrupt_id: str | None = None


class Clock(Protocol):
    def now(self) -> datetime: ...


class Store(Protocol):
    """Graphs, runs, node states and the event log.

    Every write is durable when it returns and records its event in the same transaction;
    committed events are handed, in `seq` order, to the listener the composition root set.
    """

    async def list_graphs(self, project_id: str) -> list[Graph]: ...

    async def get_graph(
        self, project_id: str, graph_id: str, version: int | None = None
    ) -> Graph | None: ...

    async def put_graph(
        self, project_id: str, graph_id: str, spec: GraphSpec, now: datetime, *, create: bool
    ) -> Graph:
        """Create (`create=True`; Conflict if it exists) or replace it as a new version
        (NotFound if it does not exist). Every version is kept."""
        ...

    async def delete_graph(self, project_id: str, graph_id: str, now: datetime) -> None:
        """Delete a graph (NotFound if missing, Conflict while it has active runs).
        Its versions stay, so the runs of it can still be read."""
        ...

    async def create_run(self, run: Run) -> None: ...

    async def get_run(self, project_id: str | None, run_id: str) -> Run | None:
        """A run by id, or None; `project_id=None` only for the engine's own lookups."""
        ...

    async def list_runs(
        self,
        project_id: str,
        workflow_id: str | None = None,
        status: RunStatus | None = None,
        limit: int = 1000,
    ) -> list[Run]: ...

    async def runs_by_status(self, statuses: Sequence[RunStatus]) -> list[Run]:
        """All runs in these statuses, oldest first (the FIFO order of the queue)."""
        ...

    async def update_run(
        self,
        run: Run,
        event: EventType,
        now: datetime,
        *,
        answer: PendingAnswer | None = None,
        drop_answer: bool = False,
    ) -> None:
        """Record the run and its event. In the same transaction, `answer` becomes the run's
        pending answer (replacing one kept), or `drop_answer` deletes the one kept."""
        ...

    async def pending_answer(self, run_id: str) -> PendingAnswer | None:
        """The answer a resume kept for the run (see `update_run`), or None."""
        ...

    async def drop_answer(self, run_id: str) -> None:
        """Delete the answer kept for the run, if there is one."""
        ...

    def enqueue_run_update(self, run: Run, event: EventType, now: datetime) -> Awaitable[None]:
        """Like `update_run`, but queued at the call, in order with every other write, and
        committed with the write that follows it; the result resolves when it is durable."""
        ...

    async def save_node_states(self, run: Run, states: Sequence[NodeState], now: datetime) -> None:
        """Upsert node states, one `workflow.node_state.updated` event each."""
        ...

    def enqueue_node_states(
        self, run: Run, states: Sequence[NodeState], now: datetime
    ) -> Awaitable[None]:
        """Like `save_node_states`, but queued at the call, in order with every other write;
        the result resolves when the states are durable."""
        ...

    def save_node_states_with_task(
        self, run: Run, states: Sequence[NodeState], now: datetime, task_id: str
    ) -> None:
        """Persist `states` in the transaction that saves LangGraph's writes of task `task_id`
        of the run's thread: a node is recorded complete exactly when LangGraph will not run it
        again. Nothing is kept if those writes never come (see `drop_task_writes`)."""
        ...

    def drop_task_writes(self, run_id: str) -> None:
        """Forget node states still waiting for task writes that will not come."""
        ...

    async def list_node_states(self, run_id: str) -> list[NodeState]: ...

    async def clear_node_states(self, run_id: str) -> None: ...

    async def list_events(
        self, project_id: str, since: int = 0, run_id: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Stored events after `since`, in `seq` order, as the JSON-ready dicts clients get."""
        ...

    async def min_event_seq(self) -> int:
        """The oldest `seq` still stored; when none is, the next one to be given (so a client
        that saw events since pruned still learns of the gap)."""
        ...


class Checkpoints(Protocol):
    """LangGraph's checkpoint store for run threads (thread id = run id)."""

    @property
    def saver(self) -> BaseCheckpointSaver[str]: ...

    async def exists(self, thread_id: str) -> bool: ...

    async def latest_id(self, thread_id: str) -> str | None:
        """The id of the thread's newest checkpoint (the one it continues from), or None."""
        ...

    async def delete(self, thread_id: str) -> None: ...

    async def prune(self, thread_id: str, keep: int) -> None:
        """Drop all but the newest `keep` checkpoints of a finished thread."""
        ...
