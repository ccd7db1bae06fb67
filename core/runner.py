"""One execution of a run: the single place node states are recorded and node types called.

A `RunScope` is LangGraph's runtime context for every node of the run. It records each node
attempt (running, then completed, retrying or failed) and the progress a node type reports.
Once the run is cancelled the scope is closed: nothing it records afterwards is kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from typing import Any

import structlog
import structlog.contextvars
from langgraph.errors import GraphBubbleUp

from core.children import Children, NodeChildren
from core.compiler import JSON, RunState
from core.domain import Node, NodeState, NodeStatus, Run
from core.loopwatch import NodeActivity
from core.nodes import NodeContext, NodeType
from core.ports import Clock, RunExecution
from core.waits import WAIT_KEY, is_wait, message


class NodeFailure(Exception):
    """Raised by cortexd itself about a node (timeout, bad output, missing type)."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


def error_json(exc: BaseException, node_id: str | None = None, attempt: int | None = None) -> JSON:
    error: JSON = {"type": type(exc).__name__, "message": str(exc) or type(exc).__name__}
    if node_id is not None:
        error["node_id"] = node_id
    if attempt is not None:
        error["attempt"] = attempt
    details = getattr(exc, "error_details", None)  # e.g. a failed child's id and error
    if isinstance(details, dict):
        error.update(details)
    return error


class RunScope:
    def __init__(
        self,
        run: Run,
        states: Mapping[str, NodeState],
        *,
        execution: RunExecution,
        clock: Clock,
        node_types: Mapping[str, NodeType],
        node_timeout_s: float,
        activity: NodeActivity | None = None,
        park_after_s: float | None = None,
        children: Children | None = None,
    ) -> None:
        self.run = run
        self._children = children
        self._park_after_s = park_after_s
        self.states = dict(states)
        self.closed = False
        self.failure: JSON | None = None  # the error of the node that failed the run
        self._execution = execution
        self._clock = clock
        self._node_types = node_types
        self._node_timeout_s = node_timeout_s
        self._activity = activity
        self._writes: list[Awaitable[None]] = []
        self.log = structlog.get_logger("cortexd.run").bind(
            run_id=run.id, project_id=run.project_id
        )

    def close(self) -> None:
        """Record nothing more (the run was cancelled, or its execution ended). Idempotent."""
        if not self.closed:
            self.closed = True
            self._execution.close()

    async def run_node(self, node: Node, state: RunState, attempt: int, task_id: str) -> JSON:
        with structlog.contextvars.bound_contextvars(node_id=node.id):
            return await self._run_node(node, state, attempt, task_id)

    async def _run_node(self, node: Node, state: RunState, attempt: int, task_id: str) -> JSON:
        if self.closed:  # cancelled: a node that swallowed the cancellation must not go on
            raise asyncio.CancelledError("the run was cancelled")
        node_type = self._node_types.get(node.type)
        previous = self.states.get(node.id) or NodeState(node_id=node.id)
        now = self._clock.now()
        # Not awaited: the writer keeps every write in call order, so this commits before the
        # node's outcome; waiting for it would only add a commit round trip to every node.
        self._note(
            previous.model_copy(
                update={
                    "status": NodeStatus.RUNNING,
                    "progress": 0.0,
                    "attempts": previous.attempts + 1,
                    "started_at": now,
                    "completed_at": None,
                    "message": f"attempt {attempt}" if attempt > 1 else "started",
                    "error": None,
                }
            )
        )
        ctx = NodeContext(
            run_id=self.run.id,
            project_id=self.run.project_id,
            node_id=node.id,
            attempt=attempt,
            log=self.log.bind(node_id=node.id),
            _on_progress=lambda f, m: self._progress(node.id, f, m),
            park_after_s=self._park_after_s,
            _now=self._clock.now,
            _children=(
                None
                if self._children is None
                else NodeChildren(
                    self._children,
                    self.run,
                    node.id,
                    task_id,
                    node.retry.max_attempts if node.retry else 1,
                )
            ),
        )
        try:
            if node_type is None:
                raise NodeFailure(f"node type {node.type!r} is not loaded", retryable=False)
            output = await self._call(node, node_type, ctx, state)
        except asyncio.CancelledError:
            raise
        except GraphBubbleUp as exc:  # ctx.interrupt() or a wait: not a failure
            self._note(self.states[node.id].model_copy(update={"message": _waiting(exc)}))
            raise
        except Exception as exc:
            self._record_failure(node, attempt, exc)
            raise
        if self.closed:
            raise asyncio.CancelledError("the run was cancelled")
        done = self.states[node.id].model_copy(
            update={
                "status": NodeStatus.COMPLETED,
                "progress": 1.0,
                "completed_at": self._clock.now(),
                "message": "completed",
            }
        )
        self.states[node.id] = done
        if not self.closed:
            # Committed with LangGraph's writes of this task, not before them: see ports.
            self._execution.record_with_task(task_id, [done], self._clock.now())
        update: JSON = {"outputs": {node.id: output}}
        if ctx.data_updates:
            update["data"] = ctx.data_updates
        return update

    async def _call(
        self, node: Node, node_type: NodeType, ctx: NodeContext, state: RunState
    ) -> JSON:
        timeout = node.timeout_s or self._node_timeout_s
        view = {"input": state["input"], "outputs": state["outputs"], "data": state["data"]}
        key = self._activity.begin(node.type, self.run.id, node.id) if self._activity else None
        try:
            async with asyncio.timeout(timeout) as deadline:
                output = await node_type.execute(ctx, dict(node.config), view)
        except TimeoutError:
            if deadline.expired():
                raise NodeFailure(f"node {node.id!r} timed out after {timeout:g}s") from None
            raise
        finally:
            if key is not None and self._activity is not None:
                self._activity.end(key)
        if not isinstance(output, dict):
            raise NodeFailure(
                f"node type {node.type!r} returned {type(output).__name__}, not a JSON object",
                retryable=False,
            )
        return output

    def _record_failure(self, node: Node, attempt: int, exc: Exception) -> None:
        max_attempts = node.retry.max_attempts if node.retry else 1
        will_retry = attempt < max_attempts and bool(getattr(exc, "retryable", True))
        error = error_json(exc, node.id, attempt)
        current = self.states[node.id]
        line = f"attempt {attempt} failed: {error['message']}"
        if not will_retry:
            self.failure = error
        self._note(
            current.model_copy(
                update={
                    "status": NodeStatus.RUNNING if will_retry else NodeStatus.FAILED,
                    "error": error,
                    "message": line + ("; retrying" if will_retry else ""),
                    "messages": [*current.messages, line],
                    "completed_at": None if will_retry else self._clock.now(),
                }
            )
        )
        self.log.warning("node_attempt_failed", node_id=node.id, attempt=attempt, error=error)

    def _progress(self, node_id: str, fraction: float, message: str | None) -> None:
        current = self.states[node_id]
        if self.closed or current.status is not NodeStatus.RUNNING:
            return
        update: dict[str, Any] = {"progress": fraction}
        if message is not None:
            update.update(message=message, messages=[*current.messages, message])
        self._note(current.model_copy(update=update))

    def _note(self, state: NodeState) -> None:
        """Record a node state: queued for the writer at once (so events keep the order things
        happened in), its outcome owned here and checked by `settle()`."""
        self.states[state.node_id] = state
        if self.closed:
            return
        self._writes = [w for w in self._writes if not _succeeded(w)]
        self._writes.append(self._execution.record([state], self._clock.now()))

    async def settle(self) -> None:
        """Wait until every node state recorded so far is durable; raise if one failed."""
        writes, self._writes = self._writes, []
        for write in writes:
            await write


def _waiting(bubble: GraphBubbleUp) -> str:
    """What a node that interrupted waits for: a timer, a child run, or (else) input."""
    first = bubble.args[0] if bubble.args else ()
    for interrupt in first if isinstance(first, list | tuple) else ():
        value = getattr(interrupt, "value", None)
        if is_wait(value):
            shown: dict[str, Any] = value[WAIT_KEY]
            return message(shown)
    return "waiting for input"


def _succeeded(write: Awaitable[None]) -> bool:
    return isinstance(write, asyncio.Future) and write.done() and write.exception() is None
