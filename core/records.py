"""The engine's records of runs: each transition written through the store, the latest state
of the runs in flight, one lock per run, and the graph versions runs use.

The engine is the only writer of a run after its creation, so the runs it queued or runs are
kept here: a transition needs no read first.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Awaitable
from typing import Any
from weakref import WeakValueDictionary

import structlog

from core.domain import Graph, NodeState, NodeStatus, Run, RunStatus
from core.errors import NotFound
from core.ports import Checkpoints, Clock, PendingAnswer, Store
from core.runner import RunScope
from core.states import event_type, transition

log = structlog.get_logger("cortexd.engine")


class RunRecords:
    def __init__(
        self, store: Store, checkpoints: Checkpoints, clock: Clock, cache_size: int
    ) -> None:
        self._store = store
        self._checkpoints = checkpoints
        self._clock = clock
        self._cache_size = cache_size
        self._locks: WeakValueDictionary[str, asyncio.Lock] = WeakValueDictionary()
        self._runs: dict[str, Run] = {}  # pending and running runs, as last recorded
        self._graphs: OrderedDict[tuple[str, str, int], Graph] = OrderedDict()

    def remember(self, run: Run) -> None:
        """A run just queued (created, or executed again), as the store has it."""
        self._runs[run.id] = run

    def lock(self, run_id: str) -> asyncio.Lock:
        lock = self._locks.get(run_id)
        if lock is None:
            lock = self._locks[run_id] = asyncio.Lock()
        return lock

    async def fresh(self, run: Run) -> Run:
        current = await self.current(run.id)
        if current is None or current.project_id != run.project_id:
            raise NotFound("run", run.id)
        return current

    async def current(self, run_id: str) -> Run | None:
        cached = self._runs.get(run_id)
        return cached if cached is not None else await self._store.get_run(None, run_id)

    async def graph(self, run: Run) -> Graph | None:
        key = (run.project_id, run.workflow_id, run.graph_version)
        graph = self._graphs.get(key)
        if graph is None:
            graph = await self._store.get_graph(*key)
            if graph is not None:  # a version never changes: safe to keep
                self._graphs[key] = graph
                while len(self._graphs) > self._cache_size:
                    self._graphs.popitem(last=False)
        return graph

    async def move(
        self,
        run: Run,
        target: RunStatus,
        *,
        action: str | None = None,
        answer: PendingAnswer | None = None,
        drop_answer: bool = False,
        **changes: Any,
    ) -> Run:
        now = self._clock.now()
        moved = transition(run, target, now, action=action, **changes)
        event = event_type(run.status, target)
        await self._store.update_run(moved, event, now, answer=answer, drop_answer=drop_answer)
        if target in (RunStatus.PENDING, RunStatus.RUNNING):
            self._runs[moved.id] = moved
        else:
            self._runs.pop(moved.id, None)
        return moved

    def start(self, run: Run) -> tuple[Run, Awaitable[None]]:
        """pending -> running, its record queued (not awaited) so that it commits with the
        run's first checkpoint. The writer keeps order: nothing the run writes is durable
        unless this is; a crash before it leaves the run pending, to start afresh."""
        now = self._clock.now()
        moved = transition(run, RunStatus.RUNNING, now, last_message="running")
        event = event_type(run.status, RunStatus.RUNNING)
        write = asyncio.ensure_future(self._store.enqueue_run_update(moved, event, now))
        # Its outcome is checked by the run's scope (settle()); should the run end before it
        # has one (its graph missing, say), a failure of this write is not left unretrieved.
        write.add_done_callback(_retrieve)
        self._runs[moved.id] = moved
        return moved, write

    async def mark_skipped(self, run: Run, scope: RunScope, graph: Graph) -> None:
        """A completed run's nodes that never ran were on branches not taken."""
        if scope.closed:
            return
        now = self._clock.now()
        skipped = [
            NodeState(node_id=n.id, status=NodeStatus.SKIPPED, message="branch not taken")
            for n in graph.nodes
            if scope.states.get(n.id) is None or scope.states[n.id].status is NodeStatus.IDLE
        ]
        if skipped:
            await self._store.save_node_states(run, skipped, now)

    async def cancel_running_nodes(self, run: Run, scope: RunScope | None) -> None:
        """Mark `cancelled` every node that is running, as the scope knows it or as stored: a
        node that had just returned has its completion dropped with the scope (its writes
        never came), so the store still says `running` for it."""
        if scope is not None:
            with contextlib.suppress(Exception):  # a failed write is reported by the run's task
                await scope.settle()
        latest = {s.node_id: s for s in await self._store.list_node_states(run.id)}
        running = {i for i, s in latest.items() if s.status is NodeStatus.RUNNING}
        if scope is not None:
            latest.update({i: s for i, s in scope.states.items() if i not in latest})
            running |= {i for i, s in scope.states.items() if s.status is NodeStatus.RUNNING}
        now = self._clock.now()
        cancelled = [
            latest[i].model_copy(update={"status": NodeStatus.CANCELLED, "completed_at": now})
            for i in sorted(running)
        ]
        if cancelled:
            await self._store.save_node_states(run, cancelled, now)


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
