"""The input protocol: which questions a run's thread waits for, and the answer a resume kept.

A node asks with `interrupt()`; the run pauses for input; `resume {"value": ...}` stores the
answer with the id of the question it answers (LangGraph's interrupt id), and the run gets it
only while LangGraph still asks that question. Past it, LangGraph has the answer in its own
checkpoints, and giving it again would answer the next question.
"""

from __future__ import annotations

from typing import Any

import structlog
from langgraph.types import Command

from core.domain import Graph, Run
from core.graphs import GraphCache
from core.ports import Checkpoints, PendingAnswer, Store

log = structlog.get_logger("cortexd.engine")


class Answers:
    def __init__(self, store: Store, checkpoints: Checkpoints, graphs: GraphCache) -> None:
        self._store = store
        self._checkpoints = checkpoints
        self._graphs = graphs

    async def questions(self, run: Run, graph: Graph | None) -> list[str]:
        """Ids of the questions (LangGraph interrupts) the run's thread waits for. An id names
        one question of one node: a node's second `interrupt()` has another id than its first."""
        if graph is None:
            return []
        config: Any = {"configurable": {"thread_id": run.id}}
        state = await self._graphs.compiled(graph).aget_state(config)
        return [interrupt.id for interrupt in state.interrupts]

    async def for_resume(self, run: Run, value: Any) -> PendingAnswer:
        """The answer a resume of a run paused for input keeps. The run has no task then: what
        its thread waits for is settled."""
        asked = await self.questions(run, await self._graphs.graph(run))
        return PendingAnswer(
            await self._checkpoints.latest_id(run.id),
            value,
            # The one question answered; parallel ones get the value as LangGraph takes it
            # (it refuses a single value for several).
            interrupt_id=asked[0] if len(asked) == 1 else None,
        )

    async def command(self, run: Run, graph: Graph) -> Command[Any] | None:
        """What the run's execution continues with when a kept answer still answers a
        question; a stale one is dropped."""
        answer = await self._store.pending_answer(run.id)
        if answer is None:
            return None
        if answer.interrupt_id is not None:
            current = answer.interrupt_id in await self.questions(run, graph)
        else:
            current = answer.checkpoint_id == await self._checkpoints.latest_id(run.id)
        if not current:
            await self._store.drop_answer(run.id, answer)
            log.info("stale_answer_dropped", run_id=run.id, checkpoint_id=answer.checkpoint_id)
            return None
        if answer.interrupt_id is not None:
            return Command(resume={answer.interrupt_id: answer.value})
        return Command(resume=answer.value)
