"""Driving one execution of a run: from its claim to its outcome, every write under its lease.

The run's LangGraph thread is streamed with `durability="sync"` (a checkpoint is durable before
the next step starts); a `RunScope` records its nodes; the outcome (completed, failed, paused
for input) is recorded with the lease's release. A drained execution (a pause, a shutdown)
releases the run as it stands, for whichever daemon claims it next. Once the lease is lost
(the run was cancelled or taken back by another daemon) nothing more is written.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
import structlog.contextvars
from langgraph.errors import GraphDrained, GraphRecursionError
from langgraph.runtime import RunControl

from core import changes
from core.answers import Answers
from core.children import Children
from core.compiler import initial_state
from core.domain import Graph, NodeState, NodeStatus, PauseReason, Run, RunStatus
from core.errors import InvalidTransition, LeaseLost, StoreUnavailable
from core.graphs import GraphCache
from core.loopwatch import NodeActivity
from core.nodes import NodeType
from core.ports import EXECUTION_KEY, Checkpoints, Claim, Clock, RunExecution, Store
from core.runner import RunScope, error_json
from core.waits import Wait, combined, is_wait

log = structlog.get_logger("cortexd.engine")


@dataclass(frozen=True, slots=True)
class DriveSettings:
    recursion_limit: int = 100
    node_timeout_s: float = 300.0
    checkpoint_retention: int = 1
    park_after_s: float = 5.0


@dataclass(slots=True)
class Execution:
    """One execution in flight on this daemon: what the engine steers it by."""

    claim: Claim
    writes: RunExecution
    control: RunControl
    started_at: datetime
    scope: RunScope | None = None
    released: bool = False  # it ended by letting go of the run, which may be claimable now

    @property
    def run_id(self) -> str:
        return self.claim.run.id


@dataclass(slots=True)
class _Outcome:
    status: RunStatus
    changes: dict[str, Any] = field(default_factory=dict)
    wait: Wait | None = None  # every node left waits on a timer or a child: park the run


class Driver:
    def __init__(
        self,
        store: Store,
        checkpoints: Checkpoints,
        clock: Clock,
        node_types: Mapping[str, NodeType],
        graphs: GraphCache,
        answers: Answers,
        settings: DriveSettings,
        activity: NodeActivity | None = None,
        children: Children | None = None,
    ) -> None:
        self._children = children
        self._store = store
        self._checkpoints = checkpoints
        self._clock = clock
        self._node_types = node_types
        self._graphs = graphs
        self._answers = answers
        self._settings = settings
        self._activity = activity

    async def drive(self, execution: Execution) -> None:
        run = execution.claim.run
        # Every line logged in this task, LangGraph's included, says which run it is about.
        structlog.contextvars.bind_contextvars(run_id=run.id, project_id=run.project_id)
        try:
            await self._drive(execution)
        except LeaseLost:
            log.warning("lease_lost", run_id=run.id, epoch=execution.claim.lease.epoch)
        except StoreUnavailable as exc:
            # The store could not take a write of this execution: nothing of the run is lost
            # (what was not written will be done again from the last checkpoint), and it must
            # not be recorded as failed. It goes back to the queue when the store is back:
            # released now if the store takes that, else by the owner's upkeep.
            log.warning("run_interrupted_by_store", run_id=run.id, error=str(exc))
            execution.released = True  # before: its own release event must not stop it
            with contextlib.suppress(StoreUnavailable, LeaseLost):
                await execution.writes.release(self._clock.now())
        except Exception as exc:
            # A store or plugin error outside the graph: the run must not stay `running`
            # without a task. Recorded as failed (execute retries it from its checkpoint).
            log.exception("run_task_failed", run_id=run.id)
            error = error_json(exc)
            failed = _Outcome(RunStatus.FAILED, _failed(error["message"]))
            with contextlib.suppress(LeaseLost):
                await self._finish(execution, failed)

    async def _drive(self, execution: Execution) -> None:
        run, fresh = execution.claim.run, execution.claim.fresh
        graph = await self._graphs.graph(run)
        if graph is None:
            await self._finish(execution, _Outcome(RunStatus.FAILED, _failed("graph missing")))
            return
        # A run that never ran has no checkpoint and no node states to read back.
        stored = [] if fresh else await self._store.list_node_states(run.id)
        scope = RunScope(
            run,
            {s.node_id: s for s in stored},
            execution=execution.writes,
            clock=self._clock,
            node_types=self._node_types,
            node_timeout_s=self._settings.node_timeout_s,
            activity=self._activity,
            park_after_s=self._settings.park_after_s,
            children=self._children,
        )
        execution.scope = scope
        try:
            outcome = await self._execute(graph, run, scope, execution, fresh)
            await scope.settle()
        finally:
            scope.close()
        if outcome is None:  # drained: paused (the status says so already) or shutting down
            execution.released = True  # before: its own release event must not stop it
            await execution.writes.release(self._clock.now())
            return
        if outcome.status is RunStatus.COMPLETED:
            await self._mark_skipped(execution.writes, scope, graph)
        await self._finish(execution, outcome)

    async def _execute(
        self, graph: Graph, run: Run, scope: RunScope, execution: Execution, fresh: bool
    ) -> _Outcome | None:
        config: Any = {
            "configurable": {"thread_id": run.id, EXECUTION_KEY: execution.writes},
            "recursion_limit": self._settings.recursion_limit,
        }
        graph_input: Any = None if fresh else await self._answers.command(run, graph)
        if graph_input is None:
            if not fresh and await self._checkpoints.exists(run.id):
                graph_input = None  # continue from the last checkpoint
            else:
                graph_input = initial_state(run.input)
        final: dict[str, Any] = {}
        prompts: list[Any] = []
        # Typed as an iterator; it is an async generator, which is what aclosing() needs.
        stream: AsyncGenerator[Any, None] = self._graphs.compiled(graph).astream(  # type: ignore[assignment]
            graph_input,
            config,
            context=scope,
            stream_mode="values",
            durability="sync",
            control=execution.control,
        )
        try:
            # Read to the end even after an interrupt: the step's other branches finish and are
            # checkpointed; leaving early would cancel them from an orphaned generator close.
            async with contextlib.aclosing(stream):
                async for chunk in stream:
                    if "__interrupt__" in chunk:
                        prompts.extend(i.value for i in chunk["__interrupt__"])
                    else:
                        final = chunk
        except GraphDrained:
            return None
        except (LeaseLost, StoreUnavailable):
            raise
        except GraphRecursionError as exc:
            return _Outcome(RunStatus.FAILED, _failed(str(exc), "RecursionLimit"))
        except Exception as exc:
            error = scope.failure or error_json(exc)
            return _Outcome(RunStatus.FAILED, {"error": error, "last_message": _summary(error)})
        questions = [p for p in prompts if not is_wait(p)]
        if questions:
            return _Outcome(
                RunStatus.PAUSED,
                {
                    "pause_reason": PauseReason.INPUT_REQUIRED,
                    # One question is the usual case; parallel ones are all kept.
                    "prompt": questions[0] if len(questions) == 1 else questions,
                    "last_message": "waiting for input",
                },
            )
        if prompts:  # waits only: the run gives its slot back until they are over
            return _Outcome(RunStatus.RUNNING, wait=combined(prompts))
        output = {"outputs": final.get("outputs", {}), "data": final.get("data", {})}
        return _Outcome(RunStatus.COMPLETED, {"output": output, "last_message": "completed"})

    async def _finish(self, execution: Execution, outcome: _Outcome) -> None:
        if outcome.wait is not None:
            change = changes.park(self._clock.now(), outcome.wait)
            execution.released = True  # before: its own release event must not stop it
        else:
            change = changes.outcome(
                outcome.status,
                self._clock.now(),
                self._settings.checkpoint_retention,
                outcome.changes,
            )
        try:
            finished = await execution.writes.finish(change)
        except InvalidTransition:
            # Paused meanwhile: the request that paused it wins; the run's work is
            # checkpointed, so a resume finishes it.
            execution.released = True  # before: its own release event must not stop it
            await execution.writes.release(self._clock.now())
            return
        if outcome.wait is not None:
            log.info("run_parked", run_id=finished.id, waiting_for=finished.waiting_for)
            return
        log_summary(finished, execution.scope, execution.started_at)

    async def _mark_skipped(self, writes: RunExecution, scope: RunScope, graph: Graph) -> None:
        """A completed run's nodes that never ran were on branches not taken."""
        skipped = [
            NodeState(node_id=n.id, status=NodeStatus.SKIPPED, message="branch not taken")
            for n in graph.nodes
            if scope.states.get(n.id) is None or scope.states[n.id].status is NodeStatus.IDLE
        ]
        if skipped:
            await writes.save(skipped, self._clock.now())


def log_summary(run: Run, scope: RunScope | None, began: datetime | None) -> None:
    """The one line per run an operator reads: how it ended, how long this execution took,
    how many nodes completed."""
    began = began or run.started_at
    duration = (run.finished_at - began).total_seconds() if run.finished_at and began else None
    states = scope.states.values() if scope else ()
    log.info(
        "run_finished",
        run_id=run.id,
        project_id=run.project_id,
        workflow_id=run.workflow_id,
        status=run.status.value,
        duration_s=duration,
        nodes_completed=sum(s.status is NodeStatus.COMPLETED for s in states),
        error=run.error["message"] if run.error else None,
    )


def _failed(message: str, kind: str = "RunError") -> dict[str, Any]:
    return {"error": {"type": kind, "message": message}, "last_message": f"failed: {message}"}


def _summary(error: dict[str, Any]) -> str:
    where = f" in node {error['node_id']!r}" if "node_id" in error else ""
    return f"failed{where}: {error['message']}"
