"""Cancel, pause, resume and execute, accepted by any daemon (DESIGN §8).

Each is one change of the run as stored, decided in the transaction that records it and
published as its event. The daemon executing the run acts on that event, wherever the command
came from; here the local engine is told at once as well, so a command for a run this daemon
executes acts without waiting for the event to travel.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from core import changes
from core.answers import Answers
from core.children import rearm
from core.domain import PauseReason, Run, RunStatus
from core.driver import Execution, log_summary
from core.errors import InvalidTransition, NotFound
from core.pages import MAX_PAGE, RunFilter
from core.ports import Clock, Store
from core.states import ACTIVE

_PAUSABLE = frozenset({RunStatus.PENDING, RunStatus.RUNNING})


class Executor(Protocol):
    """The engine, as commands see it."""

    def changed(self, run: Run) -> Execution | None:
        """React to a change of a run this daemon may be executing; the execution, if so."""
        ...

    def wake(self) -> None: ...

    async def wait_detached(self, run_id: str) -> None: ...


class Commands:
    def __init__(self, store: Store, clock: Clock, answers: Answers, executor: Executor) -> None:
        self._store = store
        self._clock = clock
        self._answers = answers
        self._executor = executor

    async def execute(self, run: Run, *, new_input: dict[str, Any] | None, from_start: bool) -> Run:
        # A cancelled task of this run still ending here (a node ignoring its cancellation)
        # can no longer write, but could still act: let it end first, within a while.
        await self._executor.wait_detached(run.id)
        change = changes.execute(self._clock.now(), new_input=new_input, from_start=from_start)
        change(run)  # an execute the run refuses (InvalidTransition) rearms none of its children
        # Before the run is pending: a daemon may take it at once, and its node must find its
        # children with their fresh budget (found by a gate: the node found the old one spent).
        ended = frozenset({RunStatus.FAILED, RunStatus.CANCELLED})
        children = await self._store.list_runs(
            run.project_id, RunFilter(parent_run_id=run.id, statuses=ended), limit=MAX_PAGE
        )
        for child in children.items:  # their nodes may execute them again
            with contextlib.suppress(NotFound):
                await self._store.change_run(child.project_id, child.id, rearm(self._clock.now()))
        run = await self._store.change_run(run.project_id, run.id, change)
        self._executor.wake()
        return run

    async def cancel(self, run: Run) -> Run:
        run = await self._store.change_run(
            run.project_id, run.id, changes.cancel(self._clock.now())
        )
        execution = self._executor.changed(run)
        if execution is not None:
            log_summary(run, execution.scope, execution.started_at)
        else:
            log_summary(run, None, None)
        await self._to_children(run, ACTIVE, self.cancel)
        return run

    async def pause(self, run: Run) -> Run:
        run = await self._store.change_run(run.project_id, run.id, changes.pause(self._clock.now()))
        self._executor.changed(run)  # the nodes in flight finish; no new step starts
        await self._to_children(run, _PAUSABLE, self.pause)
        return run

    async def _to_children(
        self, run: Run, statuses: frozenset[RunStatus], command: Callable[[Run], Awaitable[Run]]
    ) -> None:
        """A cancel, pause or resume of a run reaches the children it started that are in
        `statuses` (and theirs, through the same command)."""
        children = await self._store.list_runs(
            run.project_id, RunFilter(parent_run_id=run.id, statuses=statuses), limit=MAX_PAGE
        )
        for child in children.items:
            with contextlib.suppress(InvalidTransition, NotFound):  # it moved meanwhile
                await command(child)

    async def resume(self, run: Run, value: Any) -> Run:
        """Continue a paused run. An answer to a run waiting for input is stored with the
        resume, so it survives a crash before the run gets a slot again."""
        current = await self._store.get_run(run.project_id, run.id)
        if current is None:
            raise NotFound("run", run.id)
        answer = None
        if current.pause_reason is PauseReason.INPUT_REQUIRED:
            answer = await self._answers.for_resume(current, value)
        change = changes.resume(self._clock.now(), answer)
        run = await self._store.change_run(run.project_id, run.id, change)
        self._executor.wake()
        await self._to_children(run, frozenset({RunStatus.PAUSED}), self._resume_child)
        return run

    async def _resume_child(self, child: Run) -> Run:
        if child.pause_reason is not PauseReason.REQUESTED:
            return child  # one waiting for input stays so: a resume would answer it
        return await self.resume(child, None)
