"""The changes the engine makes to runs, as functions of the run as stored (`ports.Change`).

The store applies one inside the transaction that records it, on the row as it is then: so a
command given to any daemon is decided on the truth, and two daemons cannot both move a run.
Each goes through `core.states` like every other transition.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from core import waits
from core.domain import EventType, PauseReason, Run, RunStatus
from core.errors import Conflict, InvalidTransition
from core.ports import Change, PendingAnswer, RunChange
from core.states import event_type, transition
from core.waits import Wait


def move(
    target: RunStatus,
    now: datetime,
    *,
    action: str | None = None,
    answer: PendingAnswer | None = None,
    drop_answer: bool = False,
    release: bool = False,
    **changes: Any,
) -> Change:
    def change(run: Run) -> RunChange:
        moved = transition(run, target, now, action=action, **changes)
        return RunChange(
            moved,
            event_type(run.status, target),
            now,
            answer=answer,
            drop_answer=drop_answer,
            release=release,
        )

    return change


def start(now: datetime) -> Change:
    """A claimed pending run begins; a claimed parked one wakes (its wait is over)."""
    begin = move(RunStatus.RUNNING, now, last_message="running")

    def change(run: Run) -> RunChange:
        if run.status is RunStatus.RUNNING and run.waiting_for is not None:
            woken = run.model_copy(update={"waiting_for": None, "last_message": "running"})
            return RunChange(woken, EventType.RUN_UPDATED, now)
        return begin(run)

    return change


def park(now: datetime, wait: Wait) -> Change:
    """An execution whose nodes all wait (a timer, a child) ends: the run stays `running`,
    gives its slot back (released), and is claimed again when the wait is over."""

    def change(run: Run) -> RunChange:
        if run.status is not RunStatus.RUNNING:
            raise InvalidTransition(run.id, run.status.value, "running", "park the run")
        shown = wait.shown or {}
        parked = run.model_copy(update={"waiting_for": shown, "last_message": waits.message(shown)})
        # An answer it was given is in its checkpoints now (as when it asks again).
        return RunChange(
            parked, EventType.RUN_UPDATED, now, release=True, wait=wait, drop_answer=True
        )

    return change


def execute(now: datetime, *, new_input: dict[str, Any] | None, from_start: bool) -> Change:
    def change(run: Run) -> RunChange:
        if run.status is RunStatus.COMPLETED:
            raise Conflict(f"run {run.id!r} is completed; create a new run to run it again")
        fresh = from_start or new_input is not None or run.status is RunStatus.CANCELLED
        # A new execution: crashes of the earlier ones do not count against its recovery limit.
        updates: dict[str, Any] = {"last_message": "queued", "recoveries": 0}
        if new_input is not None:
            updates["input"] = new_input
        moved = transition(run, RunStatus.PENDING, now, action="execute", **updates)
        # A fresh start drops the thread's checkpoints and node states, and with them any
        # answer kept for a checkpoint that is gone.
        return RunChange(
            moved, event_type(run.status, RunStatus.PENDING), now, drop_answer=fresh, reset=fresh
        )

    return change


def cancel(now: datetime) -> Change:
    def change(run: Run) -> RunChange:
        moved = transition(run, RunStatus.CANCELLED, now, action="cancel", last_message="cancelled")
        # Released: the epoch moves on, so whatever its executor still writes is refused.
        return RunChange(
            moved,
            event_type(run.status, RunStatus.CANCELLED),
            now,
            drop_answer=True,
            release=True,
            cancel_nodes=True,
        )

    return change


def pause(now: datetime) -> Change:
    # Not released: the executor drains (the node in flight finishes and is checkpointed under
    # its lease), then releases the run.
    return move(
        RunStatus.PAUSED,
        now,
        action="pause",
        pause_reason=PauseReason.REQUESTED,
        last_message="paused",
    )


def resume(now: datetime, answer: PendingAnswer | None) -> Change:
    """Only a paused run resumes (the original's rule): pending -> running is a claim's move."""
    resumed = move(RunStatus.RUNNING, now, action="resume", answer=answer, last_message="resumed")

    def change(run: Run) -> RunChange:
        if run.status is not RunStatus.PAUSED:
            raise InvalidTransition(run.id, run.status.value, RunStatus.RUNNING.value, "resume")
        return resumed(run)

    return change


def outcome(
    target: RunStatus, now: datetime, keep_checkpoints: int, changes: dict[str, Any]
) -> Change:
    """How an execution ended (completed, failed, paused for input), recorded under its lease.
    Refused (InvalidTransition) when a command moved the run meanwhile: paused, the request
    wins and the run's work is checkpointed, so a resume finishes it."""

    def change(run: Run) -> RunChange:
        if run.status is not RunStatus.RUNNING:
            action = f"record the run as {target.value}"
            raise InvalidTransition(run.id, run.status.value, target.value, action)
        moved = transition(run, target, now, **changes)
        # Completed, failed or asking again: LangGraph took the answer before any node ran
        # (or refused it, and giving it again would fail the same way).
        return RunChange(
            moved,
            event_type(run.status, target),
            now,
            drop_answer=True,
            release=True,
            keep_checkpoints=keep_checkpoints if target is RunStatus.COMPLETED else 0,
        )

    return change


def recover(now: datetime) -> Change:
    """A running run whose daemon died or stalled goes back to the queue (the store counted
    the recovery); it continues from its last checkpoint wherever it is claimed next."""

    def change(run: Run) -> RunChange:
        message = f"recovering (recovery {run.recoveries}): its daemon stopped executing it"
        moved = run.model_copy(update={"last_message": message})
        return RunChange(moved, event_type(run.status, RunStatus.RUNNING), now, release=True)

    return change


def give_up(now: datetime, max_recoveries: int) -> Change:
    """A run that keeps taking its daemons down fails instead of crashing them forever."""
    message = f"recovered {max_recoveries} times; not recovered again"
    return move(
        RunStatus.FAILED,
        now,
        drop_answer=True,
        release=True,
        error={"type": "recovery_limit", "message": message},
        last_message=f"failed: {message}",
    )
