"""Sub-workflows (DESIGN §11): the child runs a node starts, and how a node waits for one.

A node's child has an id made from the parent run's and the node's (`child_id`), so a node
that runs again (after a wait, a crash, a retry) finds the child it started instead of
starting another. The child is a run like any other, with `parent_run_id`, `parent_node_id`
and `trigger = {"type": "subworkflow", "id": <parent>, "depth": n}`, of its graph's version
at its creation (the parent pins its own).

Waiting is `core.waits`': the parent parks until the child ends. What happens on the node's
next look at a child that ended:

- completed: the node returns the child's `output`;
- failed or cancelled, first seen: the node fails with the child's error and id (and the
  child is marked `reported` in its trigger);
- failed or cancelled, reported before (the node is retried, or the parent executed again):
  the child is executed again — from its failure point; a cancelled one from its start —
  and the node waits for it once more.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

from langgraph.types import interrupt as _interrupt

from core import changes
from core.domain import EventType, Run, RunStatus
from core.errors import Conflict, InvalidTransition, NotFound
from core.ports import Change, Clock, RunChange, Store
from core.waits import MAX_REWAITS, child

# How deep sub-workflows may nest at run time (a cycle through data, not through the graphs
# as stored, which validation refuses, ends here).
MAX_DEPTH = 10
_NAMESPACE = uuid.UUID("5b0f5f2a-6d62-4a8e-9a55-0d7f4cb1a001")
ENDED = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})


def child_id(parent_run_id: str, node_id: str, task_id: str) -> str:
    """The child of one execution of a node: LangGraph's task id stays the same wherever that
    task runs again (a replay after the wait, a retry, a recovery, an execute from the failure
    point) and changes for a new one (a loop's next pass, a run started over)."""
    return str(uuid.uuid5(_NAMESPACE, f"{parent_run_id}/{node_id}/{task_id}"))


class ChildFailed(Exception):
    """The child run failed or was cancelled: the node fails with its error and id."""

    def __init__(self, child: Run, *, retryable: bool = True) -> None:
        self.retryable = retryable
        error = child.error or {}
        reason = error.get("message") or child.status.value
        super().__init__(f"sub-workflow run {child.id} {child.status.value}: {reason}")
        self.error_details = {"child_run_id": child.id, "child_error": child.error}


class ChildStartFailed(Exception):
    """The child cannot be started (no such graph, too deep): retrying will not help."""

    retryable = False


class Children:
    """What a node's context uses to start, read and execute again the children of its run."""

    def __init__(
        self, store: Store, clock: Clock, wake: Callable[[], None], max_depth: int = MAX_DEPTH
    ) -> None:
        self._store = store
        self._clock = clock
        self._wake = wake
        self._max_depth = max_depth

    async def ensure(
        self,
        parent: Run,
        node_id: str,
        task_id: str,
        workflow_id: str,
        run_input: dict[str, Any],
    ) -> Run:
        """The node's child: the one this task started before, else a new pending run."""
        ident = child_id(parent.id, node_id, task_id)
        found = await self._store.get_run(parent.project_id, ident)
        if found is not None:
            return found
        depth = int(parent.trigger.get("depth", 0)) + 1 if parent.parent_run_id else 1
        if depth > self._max_depth:
            raise ChildStartFailed(
                f"sub-workflows nest {depth} deep here; at most {self._max_depth}"
            )
        graph = await self._store.get_graph(parent.project_id, workflow_id)
        if graph is None or not graph.nodes:
            missing = "no graph" if graph is None else "an empty graph"
            raise ChildStartFailed(f"{missing} {workflow_id!r} in project {parent.project_id!r}")
        now = self._clock.now()
        child = Run(
            id=ident,
            workflow_id=graph.id,
            status=RunStatus.PENDING,
            project_id=parent.project_id,
            graph_version=graph.version,
            input=run_input,
            created_at=now,
            last_message="queued",
            trigger={"type": "subworkflow", "id": parent.id, "depth": depth},
            parent_run_id=parent.id,
            parent_node_id=node_id,
        )
        try:
            await self._store.create_run(child)
        except NotFound as gone:  # deleted since it was read
            raise ChildStartFailed(
                f"no graph {workflow_id!r} in project {parent.project_id!r}"
            ) from gone
        self._wake()
        # A cancel or pause of the parent that listed its children before this one existed
        # must still reach it.
        now_parent = await self._store.get_run(parent.project_id, parent.id)
        if now_parent is None or now_parent.status is RunStatus.CANCELLED:
            with contextlib.suppress(InvalidTransition, NotFound):
                child = await self._store.change_run(
                    child.project_id, child.id, changes.cancel(self._clock.now())
                )
        elif now_parent.status is RunStatus.PAUSED:
            with contextlib.suppress(InvalidTransition, NotFound):
                child = await self._store.change_run(
                    child.project_id, child.id, changes.pause(self._clock.now())
                )
        return child

    async def get(self, project_id: str, run_id: str) -> Run:
        found = await self._store.get_run(project_id, run_id)
        if found is None:
            raise ChildStartFailed(f"sub-workflow run {run_id} is gone")
        return found

    async def reported(self, child: Run) -> None:
        """Mark the child's failure as seen by its parent node."""

        def mark(run: Run) -> RunChange:
            marked = run.model_copy(update={"trigger": {**run.trigger, "reported": True}})
            return RunChange(marked, EventType.RUN_UPDATED, self._clock.now())

        with contextlib.suppress(NotFound):
            await self._store.change_run(child.project_id, child.id, mark)

    async def again(self, child: Run) -> Run:
        """Execute a failed or cancelled child again (a failed one from its failure point),
        counting it in the child's `trigger.reruns`."""

        def rerun(run: Run) -> RunChange:
            result = changes.execute(self._clock.now(), new_input=None, from_start=False)(run)
            trigger = {k: v for k, v in run.trigger.items() if k != "reported"}
            trigger["reruns"] = int(run.trigger.get("reruns", 0)) + 1
            return replace(result, run=result.run.model_copy(update={"trigger": trigger}))

        try:
            run = await self._store.change_run(child.project_id, child.id, rerun)
        except Conflict as gone:  # its graph was deleted
            raise ChildStartFailed(str(gone)) from gone
        self._wake()
        return run


def rearm(now: datetime) -> Change:
    """The parent was executed again: its failed child gets a fresh budget of reruns (its
    node's `max_attempts`, as at the first failure, plus this execute's own)."""

    def change(run: Run) -> RunChange:
        trigger = {**run.trigger, "reruns": -1}
        return RunChange(run.model_copy(update={"trigger": trigger}), EventType.RUN_UPDATED, now)

    return change


class NodeChildren:
    """One node's side of its child (what `NodeContext.run_child` calls). `max_attempts`: the
    node's retry policy, which bounds how often the child is executed again for it."""

    def __init__(
        self, children: Children, parent: Run, node_id: str, task_id: str, max_attempts: int = 1
    ) -> None:
        self._children = children
        self._parent = parent
        self._node_id = node_id
        self._task_id = task_id
        self._max_attempts = max_attempts

    async def run(self, workflow_id: str, run_input: dict[str, Any]) -> dict[str, Any]:
        found = await self._children.ensure(
            self._parent, self._node_id, self._task_id, workflow_id, run_input
        )
        if found.status in (RunStatus.FAILED, RunStatus.CANCELLED) and found.trigger.get(
            "reported"
        ):
            # The node is tried again, so is its child: as often as the node's retry policy
            # allows (counted in the child: a replay after a wait starts LangGraph's count
            # over); an `execute` of the parent gives it a fresh budget (`rearm`).
            if int(found.trigger.get("reruns", 0)) + 1 >= self._max_attempts:
                raise ChildFailed(found, retryable=False)
            found = await self._children.again(found)
        for _ in range(MAX_REWAITS):
            if found.status is RunStatus.COMPLETED:
                return dict(found.output or {})
            if found.status in (RunStatus.FAILED, RunStatus.CANCELLED):
                await self._children.reported(found)
                raise ChildFailed(found)
            # Parks the parent until the child ends (or returns at once on a replay).
            _interrupt(child(found.id))
            found = await self._children.get(found.project_id, found.id)
        raise RuntimeError(f"woken {MAX_REWAITS} times before run {found.id} ended")
