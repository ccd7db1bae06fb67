"""Schedules (DESIGN §10): cron in a timezone, and what one firing pass decides.

Cron expressions (five fields, minute resolution) are evaluated by `cronsim` on naive local
wall-clock times; the timezone is applied here, so daylight saving time means one thing: a
local time that does not exist (the hour skipped in spring) is skipped, and one that occurs
twice (the hour repeated in autumn) fires once, at its first occurrence.

`plan` is pure: given the schedule as stored, its graph as stored (None once deleted) and the
time, it says which scheduled times to fire and where the schedule goes next. The store applies
it in the transaction that read those rows, and a unique key on (schedule, scheduled time)
makes each time fire at most once per database, whoever applies it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from pydantic import Field, StrictBool, field_validator

from core.domain import ID_PATTERN, Graph, Model, Run, RunStatus

# At most this many runs for one schedule's missed times with `catchup = "all"` (the newest).
MAX_CATCHUP = 100
# A scheduled time at most this old is on time, not missed (a daemon taking over the duties
# after another died fires it even with `catchup = "skip"`).
ON_TIME_S = 60.0
# A cron expression with no time in this many years from now has no next time.
_HORIZON_YEARS = 5

Catchup = Literal["skip", "latest", "all"]


class ScheduleState(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"
    GRAPH_DELETED = "graph_deleted"  # stopped: its graph was deleted; a PUT starts it again


class ScheduleSpec(Model):
    """What a client sends to create or replace a schedule."""

    id: str | None = Field(default=None, pattern=ID_PATTERN)
    workflow_id: str = Field(pattern=ID_PATTERN)
    cron: str = Field(max_length=200)
    timezone: str = Field(default="UTC", max_length=100)
    input: dict[str, Any] = Field(default_factory=dict)
    enabled: StrictBool = True
    catchup: Catchup = "latest"

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        return parse_cron(value)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        zone(value)
        return value


class Schedule(Model):
    id: str
    project_id: str
    workflow_id: str
    cron: str
    timezone: str
    input: dict[str, Any]
    enabled: bool
    catchup: Catchup
    state: ScheduleState
    next_run_at: datetime | None = None
    last_run_at: datetime | None = None
    created_at: datetime
    updated_at: datetime


def parse_cron(expr: str) -> str:
    """The expression, normalised; ValueError (with the reason) unless it is five valid fields."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(
            f"a cron expression has five fields (minute resolution), not {len(fields)}"
        )
    normal = " ".join(fields)
    try:
        CronSim(normal, datetime(2000, 1, 1))
    except CronSimError as exc:
        raise ValueError(f"not a valid cron expression: {exc}") from None
    return normal


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"unknown timezone {name!r} (an IANA name such as 'Europe/Paris')"
        ) from None


def times_after(cron: str, timezone: str, after: datetime) -> Iterator[datetime]:
    """The schedule's times strictly after `after`, in UTC, in order (ends past the horizon)."""
    tz = zone(timezone)
    local = after.astimezone(tz).replace(tzinfo=None)
    horizon = local + timedelta(days=366 * _HORIZON_YEARS)
    for wall in CronSim(cron, local):
        if wall > horizon:
            return
        aware = wall.replace(tzinfo=tz, fold=0)
        utc = aware.astimezone(UTC)
        if utc.astimezone(tz).replace(tzinfo=None) != wall:
            continue  # skipped by a DST change: this local time does not exist
        if utc > after:  # a repeated local time maps to its first occurrence: once
            yield utc


def next_time(cron: str, timezone: str, after: datetime) -> datetime | None:
    return next(times_after(cron, timezone, after), None)


def due_times(schedule: Schedule, now: datetime, most: int) -> list[datetime]:
    """The newest `most` times from `next_run_at` up to `now`, oldest first. It looks back from
    `now` in widening windows, so a long downtime costs no walk through every missed time."""
    first = schedule.next_run_at
    if first is None or first > now:
        return []
    window = timedelta(hours=1)
    while True:
        start = max(first - timedelta(microseconds=1), now - window)
        found: list[datetime] = []
        for t in times_after(schedule.cron, schedule.timezone, start):
            if t > now:
                break
            found.append(t)
        if len(found) >= most or start < first:
            return found[-most:]
        window *= 4


@dataclass(frozen=True, slots=True)
class Firing:
    schedule: Schedule  # as it is to be stored (next_run_at, last_run_at, state)
    runs: list[Run]  # one per time to fire, each with its trigger's `scheduled_for`


def plan(
    schedule: Schedule, graph: Graph | None, now: datetime, new_id: Callable[[], str]
) -> Firing:
    """What a firing pass at `now` does with `schedule` (see the module's docstring)."""
    if schedule.state is not ScheduleState.ACTIVE or not schedule.enabled:
        return Firing(schedule, [])
    if graph is None:
        stopped = schedule.model_copy(
            update={"state": ScheduleState.GRAPH_DELETED, "next_run_at": None, "updated_at": now}
        )
        return Firing(stopped, [])
    due = due_times(schedule, now, MAX_CATCHUP)
    on_time = [t for t in due if (now - t).total_seconds() <= ON_TIME_S]
    if schedule.catchup == "skip":
        fire = on_time[-1:]
    elif schedule.catchup == "latest":
        fire = due[-1:]
    else:
        fire = due
    if not graph.nodes:
        fire = []  # a graph emptied since: nothing to run, the times pass
    runs = [scheduled_run(schedule, graph, t, now, new_id()) for t in fire]
    last = fire[-1] if fire else schedule.last_run_at
    after = next_time(schedule.cron, schedule.timezone, now)
    moved = schedule.model_copy(update={"next_run_at": after, "last_run_at": last})
    return Firing(moved, runs)


def scheduled_run(
    schedule: Schedule, graph: Graph, scheduled_for: datetime, now: datetime, run_id: str
) -> Run:
    return Run(
        id=run_id,
        workflow_id=graph.id,
        status=RunStatus.PENDING,
        project_id=schedule.project_id,
        graph_version=graph.version,
        input=dict(schedule.input),
        created_at=now,
        last_message="queued",
        trigger={"type": "schedule", "id": schedule.id, "scheduled_for": iso(scheduled_for)},
    )


def iso(t: datetime) -> str:
    """The form of a time in keys and triggers: UTC, seconds, `Z`."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
