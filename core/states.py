"""The run state machine: the one table of legal transitions and the timestamps they set.

Every code path that changes a run's status goes through `transition`; nothing else sets
`started_at`, `finished_at`, `paused_at` or `cancelled_at`, and no caller passes flags for it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from core.domain import EventType, Run
from core.domain import RunStatus as S
from core.errors import InvalidTransition

TRANSITIONS: dict[S, frozenset[S]] = {
    S.PENDING: frozenset({S.RUNNING, S.CANCELLED, S.PAUSED}),
    S.RUNNING: frozenset({S.COMPLETED, S.FAILED, S.CANCELLED, S.PAUSED}),
    S.PAUSED: frozenset({S.RUNNING, S.CANCELLED}),
    S.FAILED: frozenset({S.PENDING}),
    S.CANCELLED: frozenset({S.PENDING}),
    S.COMPLETED: frozenset(),
}

TERMINAL = frozenset({S.COMPLETED, S.FAILED, S.CANCELLED})
ACTIVE = frozenset({S.PENDING, S.RUNNING, S.PAUSED})

_EVENT_BY_TARGET = {
    S.PAUSED: EventType.RUN_PAUSED,
    S.CANCELLED: EventType.RUN_CANCELLED,
    S.COMPLETED: EventType.RUN_COMPLETED,
    S.FAILED: EventType.RUN_FAILED,
}


def can_transition(current: S, target: S) -> bool:
    return target in TRANSITIONS[current]


def transition(
    run: Run, target: S, now: datetime, *, action: str | None = None, **changes: Any
) -> Run:
    """Return `run` moved to `target` with its timestamps set; raise if the move is illegal.

    `changes` carries the other fields the move records (last_message, error, output, ...).
    """
    if not can_transition(run.status, target):
        raise InvalidTransition(run.id, run.status.value, target.value, action)
    update: dict[str, Any] = {"status": target, **changes}
    # Whatever moves a run, the wait it was parked in is over (a resumed run waits again).
    update.setdefault("waiting_for", None)
    if run.status is S.PAUSED:
        # Leaving a pause, whichever way: what the pause asked for is over.
        update.setdefault("pause_reason", None)
        update.setdefault("prompt", None)
    if target is S.RUNNING:
        if run.started_at is None:
            update["started_at"] = now
    elif target is S.PAUSED:
        update["paused_at"] = now
    elif target is S.PENDING:
        # Executed again: the run is no longer finished, and its old outcome is history.
        update.update(finished_at=None, cancelled_at=None, error=None, output=None)
    if target in TERMINAL:
        update["finished_at"] = now
    if target is S.CANCELLED:
        update["cancelled_at"] = now
    return run.model_copy(update=update)


def event_type(previous: S, target: S) -> EventType:
    """The event a transition is published as (the original service's names)."""
    if previous is S.PAUSED and target is S.RUNNING:
        return EventType.RUN_RESUMED
    return _EVENT_BY_TARGET.get(target, EventType.RUN_UPDATED)
