"""Use cases, as the adapters call them. Every method takes the project id and refuses, as not
found, a graph or run of another project."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from uuid import uuid4

from core.domain import Graph, GraphSpec, NodeState, NodeStatus, PauseReason, Run, RunStatus
from core.engine import Engine
from core.errors import Conflict, LimitExceeded, NotFound, Problem, ValidationFailed
from core.idempotency import IdempotencyKey, KeyTaken
from core.nodes import NodeType
from core.pages import MAX_PAGE, Page, RunFilter
from core.ports import Claim, Clock, Store
from core.validation import GraphLimits, parse_graph, validate_graph
from core.waiting import RunWaiters


@dataclass(frozen=True, slots=True)
class ServiceLimits:
    graph: GraphLimits = field(default_factory=GraphLimits)
    max_run_input_bytes: int = 262_144
    max_event_bytes: int = 1_048_576


# What an event carries besides the graph or the run input (ids, times, status, the envelope).
EVENT_OVERHEAD_BYTES = 4096


# How many graphs a cycle check reads at most (a deeper chain is left to the depth limit).
MAX_CALLED_GRAPHS = 1000


def subworkflows(graph: GraphSpec | Graph) -> list[str]:
    """The graphs a graph's `subworkflow` nodes run."""
    return [
        str(n.config["workflow_id"])
        for n in graph.nodes
        if n.type == "subworkflow" and isinstance(n.config.get("workflow_id"), str)
    ]


def _calls_back(
    graph_id: str, spec: GraphSpec, calls: dict[str, list[str]]
) -> tuple[int, list[str]] | None:
    """(the index of the node, the chain of graphs) of a sub-workflow leading back to
    `graph_id`, or None."""
    for index, node in enumerate(spec.nodes):
        if node.type != "subworkflow" or not isinstance(node.config.get("workflow_id"), str):
            continue
        start = str(node.config["workflow_id"])
        seen, stack = {start}, [[graph_id, start]]
        while stack:
            chain = stack.pop()
            if chain[-1] == graph_id:
                return index, chain
            for nxt in calls.get(chain[-1], []):
                if nxt not in seen or nxt == graph_id:
                    seen.add(nxt)
                    stack.append([*chain, nxt])
    return None


@dataclass(frozen=True, slots=True)
class Started:
    """A run a request started; `created` False: an earlier request with its key did."""

    run: Run
    created: bool


def new_id() -> str:
    return str(uuid4())


class WorkflowService:
    def __init__(
        self,
        store: Store,
        engine: Engine,
        clock: Clock,
        node_types: Mapping[str, NodeType],
        limits: ServiceLimits,
        id_factory: Callable[[], str] = new_id,
        waiters: RunWaiters | None = None,
    ) -> None:
        self._waiters = waiters or RunWaiters()
        self._store = store
        self._engine = engine
        self._clock = clock
        self._node_types = node_types
        self._limits = limits
        self._new_id = id_factory

    # -- graphs ----------------------------------------------------------------------------

    async def list_graphs(
        self, project_id: str, limit: int = MAX_PAGE, cursor: str | None = None
    ) -> Page[Graph]:
        return await self._store.list_graphs(project_id, limit=limit, cursor=cursor)

    async def get_graph(self, project_id: str, graph_id: str, version: int | None = None) -> Graph:
        """The graph's current version, or `version` (kept also after an edit or a delete,
        for the runs of it)."""
        graph = await self._store.get_graph(project_id, graph_id, version)
        if graph is None:
            raise NotFound("graph" if version is None else f"graph version {version} of", graph_id)
        return graph

    def validate_graph(self, data: Any) -> list[Problem]:
        spec, problems = parse_graph(data)
        if spec is None:
            return problems
        problems = validate_graph(spec, self._node_types, self._limits.graph)
        if not problems:
            self._check_event_size("the graph", len(spec.model_dump_json()))
        return problems

    async def create_graph(self, project_id: str, data: Any) -> Graph:
        spec = self._valid_spec(data)
        graph_id = spec.id or self._new_id()
        await self._refuse_cycles(project_id, graph_id, spec)
        return await self._store.put_graph(
            project_id, graph_id, spec, self._clock.now(), create=True
        )

    async def replace_graph(self, project_id: str, graph_id: str, data: Any) -> Graph:
        spec = self._valid_spec(data)
        if spec.id is not None and spec.id != graph_id:
            problem = Problem("/id", f"{spec.id!r} does not match the graph in the URL")
            raise ValidationFailed("graph id mismatch", [problem])
        await self._refuse_cycles(project_id, graph_id, spec)
        return await self._store.put_graph(
            project_id, graph_id, spec, self._clock.now(), create=False
        )

    async def _refuse_cycles(self, project_id: str, graph_id: str, spec: GraphSpec) -> None:
        """A graph whose sub-workflows lead back to it (through the graphs as stored) would
        start runs of itself for ever: refused (DESIGN §11; at run time a depth limit bounds
        what data-dependent nesting remains)."""
        path = _calls_back(graph_id, spec, await self._called_graphs(project_id, graph_id, spec))
        if path is not None:
            index, chain = path
            problem = Problem(
                f"/nodes/{index}/config/workflow_id",
                "sub-workflows lead back to this graph: " + " -> ".join(chain),
            )
            raise ValidationFailed("the graph calls itself through sub-workflows", [problem])

    async def _called_graphs(
        self, project_id: str, graph_id: str, spec: GraphSpec
    ) -> dict[str, list[str]]:
        """The graphs reachable from `spec` by sub-workflow nodes, each with the graphs it
        calls (the stored current versions; at most MAX_CALLED_GRAPHS are read)."""
        calls: dict[str, list[str]] = {graph_id: subworkflows(spec)}
        queue = list(calls[graph_id])
        while queue and len(calls) < MAX_CALLED_GRAPHS:
            called = queue.pop()
            if called in calls:
                continue
            stored = await self._store.get_graph(project_id, called)
            calls[called] = [] if stored is None else subworkflows(stored)
            queue.extend(calls[called])
        return calls

    async def delete_graph(self, project_id: str, graph_id: str) -> None:
        await self._store.delete_graph(project_id, graph_id, self._clock.now())

    def _valid_spec(self, data: Any) -> Any:
        spec, problems = parse_graph(data)
        if spec is not None:
            problems = validate_graph(spec, self._node_types, self._limits.graph)
        if problems or spec is None:
            raise ValidationFailed("the graph is not valid", problems)
        self._check_event_size("the graph", len(spec.model_dump_json()))
        return spec

    # -- runs ------------------------------------------------------------------------------

    async def create_run(self, project_id: str, workflow_id: str, run_input: Any = None) -> Run:
        return (await self.start_run(project_id, workflow_id, run_input)).run

    async def start_run(
        self,
        project_id: str,
        workflow_id: str,
        run_input: Any = None,
        *,
        trigger: dict[str, Any] | None = None,
        key: IdempotencyKey | None = None,
    ) -> Started:
        """A new pending run of the graph's current version; with `key`, the run an earlier
        request with that key made (`created` False), or a 422 if that request was another."""
        graph = await self.get_graph(project_id, workflow_id)
        if not graph.nodes:
            problem = Problem("/nodes", "a graph needs at least one node to run")
            raise ValidationFailed(f"graph {workflow_id!r} has no nodes", [problem])
        run_input = self._check_input(run_input)
        now = self._clock.now()
        run = Run(
            id=self._new_id(),
            workflow_id=graph.id,
            status=RunStatus.PENDING,
            project_id=project_id,
            graph_version=graph.version,
            input=run_input,
            created_at=now,
            last_message="queued",
            trigger=trigger or {"type": "api"},
        )
        request = self._engine.reserve(run.id)
        creation = asyncio.ensure_future(self._store.create_run(run, request, key=key))
        # Handed to the engine when the write is done, even if this request is cancelled
        # meanwhile: a run the store claimed for this daemon must get its task.
        creation.add_done_callback(partial(self._created, run))
        try:
            await asyncio.shield(creation)
        except KeyTaken as taken:
            return Started(await self._earlier_run(project_id, key, taken), created=False)
        return Started(run, created=True)

    def _created(self, run: Run, creation: asyncio.Future[Claim | None]) -> None:
        failed = creation.cancelled() or creation.exception() is not None
        self._engine.submit(run, None if failed else creation.result())

    async def _earlier_run(
        self, project_id: str, key: IdempotencyKey | None, taken: KeyTaken
    ) -> Run:
        assert key is not None
        if taken.fingerprint != key.fingerprint:
            problem = Problem(
                "/headers/Idempotency-Key",
                f"already used, within its time to live, by a request with another target or "
                f"body (the one that made run {taken.run_id})",
            )
            raise ValidationFailed("the Idempotency-Key was used for another request", [problem])
        run = await self._store.get_run(project_id, taken.run_id)
        if run is None:  # deleted since the store looked (retention): the key is free again
            raise Conflict("the run of this Idempotency-Key was just deleted; send it again")
        return run

    async def wait_for(self, project_id: str, run_id: str, timeout_s: float) -> Run:
        """The run once it is completed, failed, cancelled or paused, or as it stands after
        `timeout_s` (woken by the run's events: nothing polls)."""
        run = await self._waiters.wait(
            run_id, timeout_s, partial(self._store.get_run, project_id, run_id)
        )
        if run is None:
            raise NotFound("run", run_id)
        return run

    async def list_runs(
        self,
        project_id: str,
        filters: RunFilter | None = None,
        limit: int = MAX_PAGE,
        cursor: str | None = None,
    ) -> Page[Run]:
        """Newest first, a page of `limit` at most after `cursor`."""
        return await self._store.list_runs(project_id, filters, limit=limit, cursor=cursor)

    async def get_run(self, project_id: str, run_id: str) -> Run:
        run = await self._store.get_run(project_id, run_id)
        if run is None:
            raise NotFound("run", run_id)
        return run

    async def execute(
        self, project_id: str, run_id: str, run_input: Any = None, from_start: bool = False
    ) -> Run:
        run = await self.get_run(project_id, run_id)
        new_input = None if run_input is None else self._check_input(run_input)
        return await self._engine.execute(run, new_input=new_input, from_start=from_start)

    async def cancel(self, project_id: str, run_id: str) -> Run:
        return await self._engine.cancel(await self.get_run(project_id, run_id))

    async def pause(self, project_id: str, run_id: str) -> Run:
        return await self._engine.pause(await self.get_run(project_id, run_id))

    async def resume(self, project_id: str, run_id: str, *value: Any) -> Run:
        """`value`, when given, answers a run waiting for input."""
        run = await self.get_run(project_id, run_id)
        if value:
            self._check_event_size("the resume value", len(json.dumps(value[0])))
        return await self._engine.resume(run, *value)

    async def status(self, project_id: str, run_id: str) -> dict[str, Any]:
        run = await self.get_run(project_id, run_id)
        graph = await self._store.get_graph(project_id, run.workflow_id, run.graph_version)
        stored = {s.node_id: s for s in await self._store.list_node_states(run_id)}
        node_ids = [n.id for n in graph.nodes] if graph else list(stored)
        states = [stored.get(i) or NodeState(node_id=i) for i in node_ids]
        states += [s for i, s in stored.items() if i not in set(node_ids)]
        done = {NodeStatus.COMPLETED, NodeStatus.SKIPPED}
        progress = (
            sum(1.0 if s.status in done else s.progress for s in states) / len(states)
            if states
            else 0.0
        )
        current = next((s.node_id for s in states if s.status is NodeStatus.RUNNING), None)
        waiting_for = run.waiting_for
        if run.pause_reason is PauseReason.INPUT_REQUIRED:
            waiting_for = {"type": "input"}
        return {
            "run_id": run.id,
            "status": run.status.value,
            "progress": round(progress, 4),
            "current_node": current,
            "started_at": run.started_at,
            "pause_reason": run.pause_reason,
            "prompt": run.prompt,
            "waiting_for": waiting_for,
            "node_states": states,
        }

    async def events(
        self, project_id: str, since: int = 0, run_id: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        if run_id is not None:
            await self.get_run(project_id, run_id)
        return await self._store.list_events(project_id, since, run_id, limit)

    def _check_input(self, run_input: Any) -> dict[str, Any]:
        if run_input is None:
            return {}
        if not isinstance(run_input, dict):
            raise ValidationFailed(
                "run input must be a JSON object", [Problem("/input", "must be a JSON object")]
            )
        size = len(json.dumps(run_input))
        if size > self._limits.max_run_input_bytes:
            raise LimitExceeded(
                f"run input is {size} bytes; the limit is {self._limits.max_run_input_bytes}"
            )
        self._check_event_size("the run input", size)
        return run_input

    def _check_event_size(self, what: str, size: int) -> None:
        """Events carry whole graphs and runs: refuse what would make one too large to send."""
        room = self._limits.max_event_bytes - EVENT_OVERHEAD_BYTES
        if size > room:
            raise LimitExceeded(
                f"{what} is {size} bytes; events are limited to "
                f"{self._limits.max_event_bytes} bytes, which leaves room for {max(room, 0)}"
            )
