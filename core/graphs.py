"""The graph versions runs execute and their compiled LangGraph graphs, kept by key: a version
never changes, so both are safe to keep (bounded, least recently used first out)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph

from core.compiler import compile_graph
from core.domain import Graph, Run
from core.ports import Store

Compiled = CompiledStateGraph[Any, Any, Any, Any]


class GraphCache:
    def __init__(self, store: Store, saver: BaseCheckpointSaver[str], size: int) -> None:
        self._store = store
        self._saver = saver
        self._size = size
        self._graphs: OrderedDict[tuple[str, str, int], Graph] = OrderedDict()
        self._compiled: OrderedDict[tuple[str, str, int], Compiled] = OrderedDict()

    async def graph(self, run: Run) -> Graph | None:
        key = (run.project_id, run.workflow_id, run.graph_version)
        graph = self._graphs.get(key)
        if graph is None:
            graph = await self._store.get_graph(*key)
            if graph is not None:
                self._keep(self._graphs, key, graph)
        return graph

    def compiled(self, graph: Graph) -> Compiled:
        key = (graph.project_id, graph.id, graph.version)
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = compile_graph(graph, self._saver)
            self._keep(self._compiled, key, compiled)
        else:
            self._compiled.move_to_end(key)
        return compiled

    def _keep(self, cache: OrderedDict[Any, Any], key: Any, value: Any) -> None:
        cache[key] = value
        while len(cache) > self._size:
            cache.popitem(last=False)
