"""Cron in a timezone, DST, and what a firing pass decides (core.schedules, pure)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.domain import Graph, Node
from core.schedules import (
    MAX_CATCHUP,
    Schedule,
    ScheduleState,
    next_time,
    parse_cron,
    plan,
    times_after,
    zone,
)

NOW = datetime(2026, 6, 1, 12, 0, 30, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def graph(version: int = 1, nodes: bool = True) -> Graph:
    return Graph(
        id="g",
        name="g",
        nodes=[Node(id="n1")] if nodes else [],
        edges=[],
        project_id="acme",
        version=version,
        created_at=NOW,
        updated_at=NOW,
    )


def schedule(**fields: Any) -> Schedule:
    values: dict[str, Any] = {
        "id": "s",
        "project_id": "acme",
        "workflow_id": "g",
        "cron": "* * * * *",
        "timezone": "UTC",
        "input": {"x": 1},
        "enabled": True,
        "catchup": "latest",
        "state": ScheduleState.ACTIVE,
        "next_run_at": utc(2026, 6, 1, 12, 0),
        "created_at": NOW,
        "updated_at": NOW,
    }
    return Schedule(**(values | fields))


def ids() -> Any:
    counter = itertools.count()
    return lambda: f"run-{next(counter)}"


def first(cron: str, tz: str, after: datetime, n: int) -> list[datetime]:
    return list(itertools.islice(times_after(cron, tz, after), n))


@pytest.mark.parametrize(
    ("cron", "reason"),
    [
        ("* * * *", "five fields"),
        ("0 * * * * *", "five fields"),
        ("61 * * * *", "not a valid cron"),
        ("0 0 30 2 *", "not a valid cron"),
        ("hello world a b c", "not a valid cron"),
    ],
)
def test_bad_cron_is_refused_with_its_reason(cron: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_cron(cron)


def test_cron_is_normalised() -> None:
    assert parse_cron("  */5   9-17 * * 1-5 ") == "*/5 9-17 * * 1-5"


@pytest.mark.parametrize("name", ["Mars/Olympus", "", "../etc/passwd", "UTC\x00"])
def test_unknown_timezone_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="unknown timezone"):
        zone(name)


def test_times_are_strictly_after_and_in_utc() -> None:
    times = first("0 9 * * *", "Europe/Paris", utc(2026, 6, 1, 7, 0), 2)
    assert times == [utc(2026, 6, 2, 7, 0), utc(2026, 6, 3, 7, 0)]  # 09:00 CEST is 07:00 UTC


def test_a_local_time_that_does_not_exist_is_skipped() -> None:
    # 2026-03-08 in New York: 02:00 EST jumps to 03:00 EDT, so 02:30 does not exist that day.
    times = first("30 2 * * *", "America/New_York", utc(2026, 3, 7, 12, 0), 2)
    assert times == [utc(2026, 3, 9, 6, 30), utc(2026, 3, 10, 6, 30)]  # 03-08 skipped
    assert next_time("30 2 * * *", "America/New_York", utc(2026, 3, 7, 12, 0)) == times[0]


def test_a_local_time_that_occurs_twice_fires_once() -> None:
    # 2026-11-01 in New York: 02:00 EDT falls back to 01:00 EST; 01:00-01:59 occur twice.
    start = utc(2026, 11, 1, 4, 0) - timedelta(minutes=1)  # 23:59 EDT on Oct 31
    times = list(
        itertools.takewhile(
            lambda t: t < utc(2026, 11, 1, 8, 0),  # 03:00 EST
            times_after("*/30 * * * *", "America/New_York", start),
        )
    )
    local = [t.astimezone(zone("America/New_York")).strftime("%H:%M") for t in times]
    assert local == ["00:00", "00:30", "01:00", "01:30", "02:00", "02:30"]
    assert times[2] == utc(2026, 11, 1, 5, 0)  # the first 01:00 (EDT), not the second


def test_a_time_asked_for_during_the_repeated_hour_is_not_fired_again() -> None:
    second_pass = utc(2026, 11, 1, 6, 10)  # 01:10 EST, the second 01:10
    assert next_time("30 1 * * *", "America/New_York", second_pass) == utc(2026, 11, 2, 6, 30)


def test_latest_fires_one_run_for_the_latest_missed_time() -> None:
    missed = schedule(next_run_at=utc(2026, 6, 1, 11, 0), catchup="latest")
    firing = plan(missed, graph(version=3), NOW, ids())
    assert [r.trigger for r in firing.runs] == [
        {"type": "schedule", "id": "s", "scheduled_for": "2026-06-01T12:00:00Z"}
    ]
    run = firing.runs[0]
    assert (run.graph_version, run.input, run.workflow_id) == (3, {"x": 1}, "g")
    assert firing.schedule.last_run_at == utc(2026, 6, 1, 12, 0)
    assert firing.schedule.next_run_at == utc(2026, 6, 1, 12, 1)


def test_all_fires_each_missed_time_up_to_the_maximum() -> None:
    few = plan(schedule(next_run_at=utc(2026, 6, 1, 11, 50), catchup="all"), graph(), NOW, ids())
    assert len(few.runs) == 11  # 11:50 .. 12:00
    times = [r.trigger["scheduled_for"] for r in few.runs]
    assert times == sorted(set(times))
    many = plan(schedule(next_run_at=utc(2026, 5, 1, 0, 0), catchup="all"), graph(), NOW, ids())
    assert len(many.runs) == MAX_CATCHUP
    assert many.runs[-1].trigger["scheduled_for"] == "2026-06-01T12:00:00Z"  # the newest kept
    assert many.schedule.next_run_at == utc(2026, 6, 1, 12, 1)


def test_skip_fires_only_a_time_that_is_on_time() -> None:
    on_time = plan(
        schedule(next_run_at=utc(2026, 6, 1, 11, 0), catchup="skip"), graph(), NOW, ids()
    )
    assert [r.trigger["scheduled_for"] for r in on_time.runs] == ["2026-06-01T12:00:00Z"]
    hourly = schedule(cron="0 * * * *", next_run_at=utc(2026, 6, 1, 9, 0), catchup="skip")
    late = plan(hourly, graph(), NOW + timedelta(minutes=30), ids())
    assert late.runs == []  # 09:00 .. 12:00 were all missed
    assert late.schedule.next_run_at == utc(2026, 6, 1, 13, 0)


def test_nothing_is_due_before_its_time() -> None:
    firing = plan(schedule(next_run_at=utc(2026, 6, 1, 12, 1)), graph(), NOW, ids())
    assert firing.runs == []
    assert firing.schedule.next_run_at == utc(2026, 6, 1, 12, 1)


def test_a_schedule_of_a_deleted_graph_stops_with_a_clear_state() -> None:
    firing = plan(schedule(), None, NOW, ids())
    assert firing.runs == []
    assert firing.schedule.state is ScheduleState.GRAPH_DELETED
    assert firing.schedule.next_run_at is None


def test_a_disabled_schedule_fires_nothing() -> None:
    off = schedule(enabled=False, state=ScheduleState.DISABLED)
    assert plan(off, graph(), NOW, ids()).runs == []
