"""Graph -> LangGraph StateGraph.

A compiled graph depends only on the graph version, never on a run: the run-specific part
(recording node states, the node-type call) lives in the run's `RunScope`, which LangGraph
hands every node as its runtime context.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from typing import Annotated, Any, Protocol, TypedDict

import jmespath
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import RetryPolicy

from core.domain import END as END_ID
from core.domain import START as START_ID
from core.domain import Edge, Graph, Node

JSON = dict[str, Any]


def merge(left: JSON, right: JSON) -> JSON:
    """Reducer for `outputs` and `data`: parallel branches write at once; keys merge."""
    return {**left, **right}


class RunState(TypedDict):
    input: JSON
    outputs: Annotated[JSON, merge]
    data: Annotated[JSON, merge]


class NodeRunner(Protocol):
    """The per-run object every node receives as LangGraph's runtime context."""

    async def run_node(self, node: Node, state: RunState, attempt: int, task_id: str) -> JSON: ...


def initial_state(run_input: JSON) -> RunState:
    return {"input": run_input, "outputs": {}, "data": {}}


def is_truthy(value: Any) -> bool:
    """JMESPath truthiness: false, null, "", [] and {} are false; everything else is true."""
    if value is None or value is False:  # not `in (...)`: 0 == False in Python
        return False
    return not (isinstance(value, str | list | dict) and len(value) == 0)


def retryable(exc: BaseException) -> bool:
    """Retry any node error unless it says otherwise (``exc.retryable = False``)."""
    return bool(getattr(exc, "retryable", True))


def _node_fn(node: Node) -> Callable[[RunState, Runtime[Any]], Awaitable[JSON]]:
    async def run(state: RunState, runtime: Runtime[Any]) -> JSON:
        info = runtime.execution_info
        attempt, task_id = (info.node_attempt, info.task_id) if info else (1, "")
        runner: NodeRunner = runtime.context
        return await runner.run_node(node, state, attempt, task_id)

    run.__name__ = f"node_{node.id}"
    return run


def _target(node_id: str) -> str:
    return END if node_id == END_ID else node_id


def _router(edges: list[Edge]) -> Callable[[RunState], list[str]]:
    compiled = [(e, jmespath.compile(e.condition) if e.condition else None) for e in edges]

    def route(state: RunState) -> list[str]:
        taken = [
            _target(edge.target)
            for edge, expr in compiled
            if expr is None or is_truthy(expr.search(dict(state)))
        ]
        return taken or [END]

    return route


def _retry_policy(node: Node) -> RetryPolicy | None:
    if node.retry is None or node.retry.max_attempts <= 1:
        return None
    return RetryPolicy(
        initial_interval=node.retry.backoff_s,
        backoff_factor=node.retry.backoff_factor,
        max_interval=3600.0,
        max_attempts=node.retry.max_attempts,
        jitter=False,
        retry_on=retryable,
    )


def entry_points(graph: Graph) -> list[str]:
    """Edges from `__start__`, else the first node (the original service's rule)."""
    starts = [e.target for e in graph.edges if e.source == START_ID]
    if starts:
        return starts
    return [graph.nodes[0].id] if graph.nodes else []


def compile_graph(
    graph: Graph, checkpointer: BaseCheckpointSaver[str] | None
) -> CompiledStateGraph[Any, Any, Any, Any]:
    builder: StateGraph[Any, Any, Any, Any] = StateGraph(RunState, context_schema=object)
    outgoing: dict[str, list[Edge]] = defaultdict(list)
    incoming: dict[str, int] = defaultdict(int)
    for edge in graph.edges:
        outgoing[edge.source].append(edge)
        incoming[edge.target] += 1

    for node in graph.nodes:
        # A join must run once, after every activated branch: deferred nodes wait until
        # nothing else is left to run (plain edges would run it once per arriving branch).
        builder.add_node(  # type: ignore[call-overload]
            node.id,
            _node_fn(node),
            retry_policy=_retry_policy(node),
            defer=incoming[node.id] > 1,
        )

    if not outgoing[START_ID]:
        outgoing[START_ID] = [Edge(source=START_ID, target=t) for t in entry_points(graph)]
    for source in [START_ID, *(n.id for n in graph.nodes)]:
        _connect(builder, START if source == START_ID else source, outgoing[source])
    return builder.compile(checkpointer=checkpointer)


def _connect(builder: StateGraph[Any, Any, Any, Any], source: str, edges: list[Edge]) -> None:
    if not edges:
        builder.add_edge(source, END)
    elif any(e.condition for e in edges):
        targets: Iterable[str] = {_target(e.target) for e in edges} | {END}
        builder.add_conditional_edges(source, _router(edges), list(targets))
    else:
        for edge in edges:
            builder.add_edge(source, _target(edge.target))
