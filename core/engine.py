"""The executor: a durable FIFO of runs, a concurrency limit, and one owned task per run.

Every status change of a run happens here, under that run's lock, through `core.states` and
recorded by `core.records`. The queue's truth is the store (status `pending`); the ordered dict
here is its in-memory index, rebuilt at start-up by `start()` (crash recovery).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

import structlog
import structlog.contextvars
from langgraph.errors import GraphDrained, GraphRecursionError
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import RunControl
from langgraph.types import Command

from core.compiler import compile_graph, initial_state
from core.domain import Graph, NodeStatus, PauseReason, Run, RunStatus
from core.errors import Conflict
from core.loopwatch import NodeActivity
from core.nodes import NodeType
from core.ports import Checkpoints, Clock, PendingAnswer, Store
from core.records import RunRecords
from core.runner import RunScope, error_json
from core.states import transition

log = structlog.get_logger("cortexd.engine")
_NO_VALUE = object()


@dataclass(frozen=True, slots=True)
class EngineSettings:
    max_concurrent_runs: int = 8
    recursion_limit: int = 100
    node_timeout_s: float = 300.0
    shutdown_grace_s: float = 10.0
    cancel_grace_s: float = 5.0
    checkpoint_retention: int = 1
    compiled_cache_size: int = 128


@dataclass(slots=True)
class _Active:
    task: asyncio.Task[None]
    control: RunControl
    scope: RunScope | None = None
    project_id: str | None = None
    started_at: datetime | None = None  # this execution's start (a run may execute again)


@dataclass(slots=True)
class _Outcome:
    status: RunStatus
    changes: dict[str, Any] = field(default_factory=dict)


class Engine:
    def __init__(
        self,
        store: Store,
        checkpoints: Checkpoints,
        clock: Clock,
        node_types: Mapping[str, NodeType],
        settings: EngineSettings,
        activity: NodeActivity | None = None,
    ) -> None:
        self._store = store
        self._checkpoints = checkpoints
        self._clock = clock
        self._node_types = node_types
        self.settings = settings
        self.activity = activity
        self.max_concurrent_runs = settings.max_concurrent_runs
        self._queue: OrderedDict[str, None] = OrderedDict()
        self._active: dict[str, _Active] = {}
        self._detached: dict[asyncio.Task[None], str] = {}  # cancelled, not yet finished
        self._records = RunRecords(store, checkpoints, clock, settings.compiled_cache_size)
        self._compiled: OrderedDict[tuple[str, str, int], CompiledStateGraph[Any, Any, Any, Any]]
        self._compiled = OrderedDict()
        self._accepting = False
        self.idle = asyncio.Event()
        self.idle.set()

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def running(self) -> int:
        return len(self._active)

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def accepting(self) -> bool:
        return self._accepting

    async def start(self) -> int:
        """Recover: runs left `running` resume first, then `pending` ones in FIFO order.
        Returns how many runs were queued."""
        interrupted = await self._store.runs_by_status([RunStatus.RUNNING])
        pending = await self._store.runs_by_status([RunStatus.PENDING])
        for run in [*interrupted, *pending]:
            self._queue[run.id] = None
        self._accepting = True
        if interrupted:
            log.info("recovering_runs", running=len(interrupted), pending=len(pending))
        queued = len(self._queue)
        self._fill()
        return queued

    async def stop(self) -> None:
        """Stop taking runs; let running nodes finish within the grace period (their runs stay
        `running` and resume at the next start), then cancel what is left."""
        self._accepting = False
        for active in self._active.values():
            active.control.request_drain("shutdown")
        tasks = [a.task for a in self._active.values()]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self.settings.shutdown_grace_s)
            for task in late:
                task.cancel()
        leftovers = [a.task for a in self._active.values()] + list(self._detached)
        if leftovers:
            await asyncio.wait(leftovers, timeout=self.settings.cancel_grace_s)

    def set_max_concurrent_runs(self, limit: int) -> None:
        """Change the limit live (SIGHUP). Lowering it lets running runs finish; raising it
        starts queued runs at once."""
        self.max_concurrent_runs = max(1, limit)
        self._fill()

    async def wait_idle(self) -> None:
        """Until nothing runs or waits (tests and burst mode)."""
        await self.idle.wait()

    # -- commands --------------------------------------------------------------------------

    def submit(self, run: Run) -> None:
        """Queue a pending run (just created, or executed again)."""
        self._records.remember(run)
        self._queue[run.id] = None
        self._fill()

    async def execute(self, run: Run, *, new_input: dict[str, Any] | None, from_start: bool) -> Run:
        async with self._records.lock(run.id):
            run = await self._records.fresh(run)
            if run.status is RunStatus.COMPLETED:
                raise Conflict(f"run {run.id!r} is completed; create a new run to run it again")
            fresh = from_start or new_input is not None or run.status is RunStatus.CANCELLED
            # Checked before anything is deleted, so a refused execute changes nothing.
            transition(run, RunStatus.PENDING, self._clock.now(), action="execute")
            await self._wait_detached(run.id)
            if fresh:
                await self._checkpoints.delete(run.id)
                await self._store.clear_node_states(run.id)
            changes: dict[str, Any] = {"last_message": "queued"}
            if new_input is not None:
                changes["input"] = new_input
            # An answer kept for a checkpoint just deleted answers nothing any more.
            run = await self._records.move(
                run, RunStatus.PENDING, action="execute", drop_answer=fresh, **changes
            )
        self.submit(run)
        return run

    async def cancel(self, run: Run) -> Run:
        async with self._records.lock(run.id):
            run = await self._records.fresh(run)
            run = await self._records.move(
                run,
                RunStatus.CANCELLED,
                action="cancel",
                drop_answer=True,
                last_message="cancelled",
            )
            self._queue.pop(run.id, None)
            active = self._active.pop(run.id, None)
            if active is not None:
                if active.scope is not None:
                    active.scope.close()
                # Both: no new step even if a node swallows its CancelledError.
                active.control.request_drain("cancel")
                active.task.cancel()
                self._detached[active.task] = run.id
                await self._records.cancel_running_nodes(run, active.scope)
        self._fill()
        self._log_summary(run, active.scope if active else None, active)
        return run

    async def _wait_detached(self, run_id: str) -> None:
        """A cancelled task of this run that is still ending (a node ignoring its cancellation)
        could write into the run's thread: wait for it a while, else refuse."""
        ending = [task for task, owner in self._detached.items() if owner == run_id]
        if ending:
            _, late = await asyncio.wait(ending, timeout=self.settings.cancel_grace_s)
            if late:
                raise Conflict(
                    f"run {run_id!r} is still ending a cancelled node; try again shortly"
                )

    async def pause(self, run: Run) -> Run:
        async with self._records.lock(run.id):
            run = await self._records.fresh(run)
            run = await self._records.move(
                run,
                RunStatus.PAUSED,
                action="pause",
                pause_reason=PauseReason.REQUESTED,
                last_message="paused",
            )
            self._queue.pop(run.id, None)
            active = self._active.get(run.id)
            if active is not None:
                # The nodes in flight finish and are checkpointed; no new superstep starts.
                active.control.request_drain("pause")
        return run

    async def resume(self, run: Run, value: Any = _NO_VALUE) -> Run:
        """Continue a paused run. An answer to a run waiting for input is stored with the
        resume, so it survives a crash before the run gets a slot again."""
        async with self._records.lock(run.id):
            run = await self._records.fresh(run)
            answer = None
            if run.pause_reason is PauseReason.INPUT_REQUIRED:
                # The run is paused and has no task: what its thread waits for is settled.
                asked = await self._questions(run, await self._records.graph(run))
                answer = PendingAnswer(
                    await self._checkpoints.latest_id(run.id),
                    None if value is _NO_VALUE else value,
                    # The one question answered; parallel ones get the value as LangGraph
                    # takes it (it refuses a single value for several).
                    interrupt_id=asked[0] if len(asked) == 1 else None,
                )
            run = await self._records.move(
                run, RunStatus.RUNNING, action="resume", answer=answer, last_message="resumed"
            )
        # Ahead of pending runs: it was already admitted once.
        self._queue[run.id] = None
        self._queue.move_to_end(run.id, last=False)
        self._fill()
        return run

    # -- scheduling ------------------------------------------------------------------------

    def _fill(self) -> None:
        free = self.max_concurrent_runs - len(self._active)
        if self._accepting and free > 0:
            # Only as far into the queue as there are free slots: this runs at every submit
            # and every run's end, with up to thousands of runs queued.
            ending = set(self._detached.values())
            starting: list[str] = []
            for run_id in self._queue:
                if len(starting) >= free:
                    break
                if run_id not in self._active and run_id not in ending:
                    starting.append(run_id)  # else its previous task is still ending
            for run_id in starting:
                del self._queue[run_id]
                control = RunControl()
                # A context of its own: not the one of whichever request happened to free a slot.
                task = asyncio.create_task(
                    self._drive(run_id, control),
                    name=f"run:{run_id}",
                    context=contextvars.Context(),
                )
                self._active[run_id] = _Active(task, control)
                task.add_done_callback(partial(self._reap, run_id))
        if not self._active and not self._queue and not self._detached:
            self.idle.set()
        else:
            self.idle.clear()

    def _reap(self, run_id: str, task: asyncio.Task[None]) -> None:
        active = self._active.get(run_id)
        if active is not None and active.task is task:
            del self._active[run_id]
        self._detached.pop(task, None)
        if not task.cancelled() and (exc := task.exception()) is not None:
            project_id = active.project_id if active is not None else None
            log.error("run_task_crashed", run_id=run_id, project_id=project_id, exc_info=exc)
        self._fill()

    # -- one run ---------------------------------------------------------------------------

    async def _drive(self, run_id: str, control: RunControl) -> None:
        try:
            await self._drive_run(run_id, control)
        except Exception as exc:
            # A store or plugin error outside the graph: the run must not stay `running`
            # without a task. Recorded as failed (execute retries it from its checkpoint).
            log.exception("run_task_failed", run_id=run_id)
            error = error_json(exc)
            await self._finish(run_id, _Outcome(RunStatus.FAILED, self._failed(error["message"])))

    async def _drive_run(self, run_id: str, control: RunControl) -> None:
        async with self._records.lock(run_id):
            run = await self._records.current(run_id)
            if run is None:
                return
            # Every line logged in this task, LangGraph's included, says which run it is about.
            structlog.contextvars.bind_contextvars(run_id=run.id, project_id=run.project_id)
            # A run that never ran has no checkpoint and no node states to read back.
            first_start = run.started_at is None
            started: Awaitable[None] | None = None
            if run.status is RunStatus.PENDING:
                run, started = self._records.start(run)
            elif run.status is not RunStatus.RUNNING:
                return  # paused or cancelled while it waited
        graph = await self._records.graph(run)
        if graph is None:
            if started is not None:
                await started
            await self._finish(run_id, _Outcome(RunStatus.FAILED, self._failed("graph missing")))
            return
        stored = [] if first_start else await self._store.list_node_states(run_id)
        states = {s.node_id: s for s in stored}
        scope = RunScope(
            run,
            states,
            store=self._store,
            clock=self._clock,
            node_types=self._node_types,
            node_timeout_s=self.settings.node_timeout_s,
            activity=self.activity,
        )
        if started is not None:
            scope.track(started)
        if (active := self._active.get(run_id)) is not None:
            active.scope = scope
            active.project_id = run.project_id
            active.started_at = self._clock.now()
        try:
            outcome = await self._execute(graph, run, scope, control, first_start)
            await scope.settle()
        finally:
            scope.close()
        if outcome is not None:
            await self._finish(run_id, outcome, scope)

    async def _execute(
        self,
        graph: Graph,
        run: Run,
        scope: RunScope,
        control: RunControl,
        first_start: bool,
    ) -> _Outcome | None:
        config: Any = {
            "configurable": {"thread_id": run.id},
            "recursion_limit": self.settings.recursion_limit,
        }
        answer = None if first_start else await self._answer(run, graph)
        graph_input: Any
        if answer is not None and answer.interrupt_id is not None:
            graph_input = Command(resume={answer.interrupt_id: answer.value})
        elif answer is not None:
            graph_input = Command(resume=answer.value)
        elif not first_start and await self._checkpoints.exists(run.id):
            graph_input = None  # continue from the last checkpoint
        else:
            graph_input = initial_state(run.input)
        final: dict[str, Any] = {}
        prompts: list[Any] = []
        compiled = self._compile(graph)
        # Typed as an iterator; it is an async generator, which is what aclosing() needs.
        stream: AsyncGenerator[Any, None] = compiled.astream(  # type: ignore[assignment]
            graph_input,
            config,
            context=scope,
            stream_mode="values",
            durability="sync",
            control=control,
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
            return None  # paused (status already says so) or shutting down (resumes on start)
        except GraphRecursionError as exc:
            return _Outcome(RunStatus.FAILED, self._failed(str(exc), "RecursionLimit"))
        except Exception as exc:
            error = scope.failure or error_json(exc)
            return _Outcome(RunStatus.FAILED, {"error": error, "last_message": _summary(error)})
        if prompts:
            return _Outcome(
                RunStatus.PAUSED,
                {
                    "pause_reason": PauseReason.INPUT_REQUIRED,
                    # One question is the usual case; parallel ones are all kept.
                    "prompt": prompts[0] if len(prompts) == 1 else prompts,
                    "last_message": "waiting for input",
                },
            )
        output = {"outputs": final.get("outputs", {}), "data": final.get("data", {})}
        await self._records.mark_skipped(run, scope, graph)
        return _Outcome(RunStatus.COMPLETED, {"output": output, "last_message": "completed"})

    async def _finish(self, run_id: str, outcome: _Outcome, scope: RunScope | None = None) -> None:
        async with self._records.lock(run_id):
            run = await self._records.current(run_id)
            # Paused or cancelled meanwhile: the request that changed it wins; the run's work
            # is checkpointed, so a resume finishes it.
            if run is None or run.status is not RunStatus.RUNNING:
                return
            # Completed, failed or asking again: LangGraph took the answer before any node ran
            # (or refused it, and giving it again would fail the same way).
            move = self._records.move(run, outcome.status, drop_answer=True, **outcome.changes)
            if outcome.status is RunStatus.COMPLETED and self.settings.checkpoint_retention > 0:
                # Submitted together, so the store commits both in one transaction.
                prune = self._checkpoints.prune(run_id, self.settings.checkpoint_retention)
                moved, _ = await asyncio.gather(move, prune)
            else:
                moved = await move
        self._log_summary(moved, scope, self._active.get(run_id))

    @staticmethod
    def _log_summary(run: Run, scope: RunScope | None, active: _Active | None) -> None:
        """The one line per run an operator reads: how it ended, how long this execution took,
        how many nodes completed."""
        began = (active.started_at if active else None) or run.started_at
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

    async def _questions(self, run: Run, graph: Graph | None) -> list[str]:
        """Ids of the questions (LangGraph interrupts) the run's thread waits for. An id names
        one question of one node: a node's second `interrupt()` has another id than its first."""
        if graph is None:
            return []
        config: Any = {"configurable": {"thread_id": run.id}}
        state = await self._compile(graph).aget_state(config)
        return [interrupt.id for interrupt in state.interrupts]

    async def _answer(self, run: Run, graph: Graph) -> PendingAnswer | None:
        """The answer a resume kept for the run, while the question it answers is still asked.
        Past it, LangGraph has the answer in its checkpoints; given again it would answer the
        next question, so it is dropped instead."""
        answer = await self._store.pending_answer(run.id)
        if answer is None:
            return None
        if answer.interrupt_id is not None:
            current = answer.interrupt_id in await self._questions(run, graph)
        else:
            current = answer.checkpoint_id == await self._checkpoints.latest_id(run.id)
        if current:
            return answer
        await self._store.drop_answer(run.id)
        log.info("stale_answer_dropped", run_id=run.id, checkpoint_id=answer.checkpoint_id)
        return None

    def _compile(self, graph: Graph) -> CompiledStateGraph[Any, Any, Any, Any]:
        key = (graph.project_id, graph.id, graph.version)
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = compile_graph(graph, self._checkpoints.saver)
            self._compiled[key] = compiled
            while len(self._compiled) > self.settings.compiled_cache_size:
                self._compiled.popitem(last=False)
        else:
            self._compiled.move_to_end(key)
        return compiled

    @staticmethod
    def _failed(message: str, kind: str = "RunError") -> dict[str, Any]:
        return {"error": {"type": kind, "message": message}, "last_message": f"failed: {message}"}


def _summary(error: dict[str, Any]) -> str:
    where = f" in node {error['node_id']!r}" if "node_id" in error else ""
    return f"failed{where}: {error['message']}"
