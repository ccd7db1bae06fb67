"""Waiting without a slot (DESIGN §11): a run that waits on a timer or on a child run gives its
concurrency slot back, and any daemon takes it up again when the wait ends.

A node waits by a LangGraph interrupt whose value is a *wait marker* (`{"__cortexd_wait__":
{"type": "timer", "until": ...}}` or `{... "type": "subworkflow", "run_id": ...}}`), not a
question for a human. An execution whose interrupts are all waits ends *parked*: the run stays
`running`, without an owner, with `waiting_for` and a wake-up time in the store (a timer's
`until`; for a child, when the child ends: the child's final transaction wakes its parent, and
parking checks the child in its own transaction, so no wake-up is lost). When a daemon claims
it again, every wait is resumed with its own marker: the node sees what it waited for and
either goes on or waits again (a timer not due yet keeps its `until`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeGuard

WAIT_KEY = "__cortexd_wait__"
# How often one node may wait again in one execution before it fails (a bound on a loop).
MAX_REWAITS = 1000


@dataclass(frozen=True, slots=True)
class Wait:
    """What a parked run waits for: the earliest timer (`until`, None without one) and the
    children whose end wakes it."""

    until: datetime | None = None
    children: tuple[str, ...] = ()
    shown: dict[str, Any] | None = None  # `waiting_for`, as GET .../status shows it


def timer(until: datetime) -> dict[str, Any]:
    return {WAIT_KEY: {"type": "timer", "until": until.astimezone(UTC).isoformat()}}


def child(run_id: str) -> dict[str, Any]:
    return {WAIT_KEY: {"type": "subworkflow", "run_id": run_id}}


def is_wait(value: Any) -> TypeGuard[dict[str, Any]]:
    return isinstance(value, dict) and isinstance(value.get(WAIT_KEY), dict)


def until_of(marker: dict[str, Any]) -> datetime | None:
    wait = marker[WAIT_KEY]
    return datetime.fromisoformat(wait["until"]) if wait.get("type") == "timer" else None


def combined(markers: Sequence[dict[str, Any]]) -> Wait:
    """The wait of an execution whose interrupts were all waits (parallel branches may wait
    on several things: it wakes at the earliest timer, or when any child ends)."""
    untils = [u for u in (until_of(m) for m in markers) if u is not None]
    children = tuple(m[WAIT_KEY]["run_id"] for m in markers if m[WAIT_KEY]["type"] != "timer")
    first = markers[0][WAIT_KEY]
    return Wait(min(untils) if untils else None, children, dict(first))


def message(shown: dict[str, Any]) -> str:
    if shown.get("type") == "timer":
        return f"waiting until {shown['until']}"
    return f"waiting for run {shown.get('run_id')}"
