"""The input protocol: which questions a run's thread waits for, and the answer a resume kept.

A node asks with `interrupt()`; the run pauses for input; `resume {"value": ...}` stores the
answer with the id of the question it answers (LangGraph's interrupt id), and the run gets it
only while LangGraph still asks that question. Past it, LangGraph has the answer in its own
checkpoints, and giving it again would answer the next question.
"""

from __future__ import annotations

from typing import Any

import structlog
from langgraph.types import Command, Interrupt

from core.domain import Graph, Run
from core.graphs import GraphCache
from core.ports import Checkpoints, PendingAnswer, Store
from core.waits import is_wait

log = structlog.get_logger("cortexd.engine")


class Answers:
    def __init__(self, store: Store, checkpoints: Checkpoints, graphs: GraphCache) -> None:
        self._store = store
        self._checkpoints = checkpoints
        self._graphs = graphs

    async def _interrupts(self, run: Run, graph: Graph | None) -> list[Interrupt]:
        if graph is None:
            return []
        config: Any = {"configurable": {"thread_id": run.id}}
        state = await self._graphs.compiled(graph).aget_state(config)
        return list(state.interrupts)

    async def questions(self, run: Run, graph: Graph | None) -> list[str]:
        """Ids of the questions (LangGraph interrupts, but for waits on a timer or a child)
        the run's thread waits for. An id names one question of one node: a node's second
        `interrupt()` has another id than its first."""
        return [i.id for i in await self._interrupts(run, graph) if not is_wait(i.value)]

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
        """What the run's execution continues with: a kept answer that still answers a
        question (a stale one is dropped), and every wait (a timer, a child) resumed with its
        own marker, for its node to see whether it is over (core.waits)."""
        interrupts = await self._interrupts(run, graph)
        resume = {i.id: i.value for i in interrupts if is_wait(i.value)}
        answer = await self._store.pending_answer(run.id)
        if answer is not None:
            if answer.interrupt_id is not None:
                asked = {i.id for i in interrupts if not is_wait(i.value)}
                current = answer.interrupt_id in asked
            else:
                current = answer.checkpoint_id == await self._checkpoints.latest_id(run.id)
            if not current:
                await self._store.drop_answer(run.id, answer)
                log.info("stale_answer_dropped", run_id=run.id, checkpoint_id=answer.checkpoint_id)
            elif answer.interrupt_id is None:
                # Several questions: answered as LangGraph takes them, a map by interrupt id
                # (kept with the waits' own markers), or one value.
                if isinstance(answer.value, dict) and resume:
                    return Command(resume={**resume, **answer.value})
                return Command(resume=answer.value)
            else:
                resume[answer.interrupt_id] = answer.value
        return Command(resume=resume) if resume else None
