"""Schedules over HTTP on the real app, on SQLite and PostgreSQL: the routes, validation, and
firing by the daemon holding the duties (a downtime is simulated by moving a schedule's next
time back in the store), and the unique key that gives a scheduled time one run at most."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from adapters.http.keys import SCHEDULES
from core.domain import Graph
from core.schedules import Firing, Schedule, iso, scheduled_run
from core.scheduling import ScheduleFirer
from tests.conftest import SQL
from tests.integration.conftest import Api, P, linear

ON_BOTH_STORES = True  # every test here runs on SQLite and on PostgreSQL

S = f"{P}/schedules"


def spec(**fields: Any) -> dict[str, Any]:
    return {"id": "every-minute", "workflow_id": "g", "cron": "* * * * *"} | fields


def far_daily() -> str:
    """A daily cron whose time is about 12 hours away: no time of it comes due during a test,
    so the only times due are those a test moves into the past."""
    later = datetime.now(UTC) + timedelta(hours=12)
    return f"{later.minute} {later.hour} * * *"


async def runs_of(api: Api, schedule_id: str, count: int, timeout: float = 20) -> list[Any]:
    """Poll, with a deadline, until the schedule has `count` runs (no more are expected)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        runs = await api.call("GET", f"{P}/runs", status=200)
        mine = [r for r in runs if r["trigger"].get("id") == schedule_id]
        if len(mine) >= count or loop.time() > deadline:
            return mine
        await asyncio.sleep(0.05)


def back_in_time(store_sql: SQL, schedule_id: str, days: int) -> None:
    """What a downtime leaves: the schedule's next time `days` in the past."""
    store_sql(
        "UPDATE schedules SET next_run_at = next_run_at - ? WHERE id = ?",
        days * 86400.0,
        schedule_id,
    )


async def test_create_get_list_replace_delete(api: Api) -> None:
    await api.graph(linear("g", "passthrough"))
    made = await api.call("POST", S, spec(timezone="Europe/Paris", input={"a": 1}), 201)
    assert made["id"] == "every-minute"
    assert (made["timezone"], made["input"], made["enabled"], made["catchup"]) == (
        "Europe/Paris",
        {"a": 1},
        True,
        "latest",
    )
    assert made["state"] == "active"
    assert made["last_run_at"] is None
    next_run = datetime.fromisoformat(made["next_run_at"])
    assert timedelta(0) < next_run - datetime.now(UTC) <= timedelta(minutes=1)
    assert await api.call("GET", f"{S}/every-minute", status=200) == made
    assert await api.call("GET", S, status=200) == [made]

    off = await api.call("PUT", f"{S}/every-minute", spec(enabled=False, catchup="all"), 200)
    assert (off["enabled"], off["state"], off["next_run_at"], off["catchup"]) == (
        False,
        "disabled",
        None,
        "all",
    )
    assert off["created_at"] == made["created_at"]

    await api.call("DELETE", f"{S}/every-minute", status=204)
    await api.call("GET", f"{S}/every-minute", status=404)
    await api.call("DELETE", f"{S}/every-minute", status=404)
    await api.call("PUT", f"{S}/every-minute", spec(), 404)


async def test_a_schedule_without_an_id_gets_one_and_ids_are_unique(api: Api) -> None:
    await api.graph(linear("g", "passthrough"))
    made = await api.call("POST", S, {"workflow_id": "g", "cron": "0 9 * * 1-5"}, 201)
    assert made["id"]
    await api.call("POST", S, spec(), 201)
    problem = await api.call("POST", S, spec(), 409)
    assert "already exists" in problem["detail"]


@pytest.mark.parametrize(
    ("fields", "path", "words"),
    [
        ({"cron": "* * * *"}, "/cron", "five fields"),
        ({"cron": "99 * * * *"}, "/cron", "not a valid cron"),
        ({"timezone": "Mars/Olympus"}, "/timezone", "unknown timezone"),
        ({"catchup": "sometimes"}, "/catchup", "skip"),
        ({"workflow_id": "nope"}, "/workflow_id", "no graph"),
        ({"enabled": "yes"}, "/enabled", "boolean"),
        ({"input": [1]}, "/input", "dictionary"),
        ({"when": "now"}, "/when", "Extra"),
    ],
)
async def test_bad_schedules_are_422_with_a_detail(
    api: Api, fields: dict[str, Any], path: str, words: str
) -> None:
    await api.graph(linear("g", "passthrough"))
    problem = await api.call("POST", S, spec(**fields), 422)
    assert problem["detail"]
    assert [p for p in problem["problems"] if p["path"] == path and words in p["message"]], problem
    await api.call("GET", f"{S}/every-minute", status=404)


async def test_not_json_is_400_and_an_array_is_422(api: Api) -> None:
    response = await api.client.post(S, data=b"{", headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert (await response.json())["detail"]
    await api.call("POST", S, [1, 2], 422)


async def test_api_runs_have_an_api_trigger(api: Api) -> None:
    await api.graph(linear("g", "passthrough"))
    run_id = await api.start("g")
    assert (await api.run(run_id))["trigger"] == {"type": "api"}


async def test_missed_times_are_caught_up_once_each(api: Api, store_sql: SQL) -> None:
    await api.graph(linear("g", "passthrough"))
    await api.call("POST", S, spec(cron=far_daily(), catchup="all", input={"from": "cron"}), 201)
    back_in_time(store_sql, "every-minute", 5)  # 5 days missed, today's time not due yet

    runs = await runs_of(api, "every-minute", 5)
    assert len(runs) == 5
    times = sorted(r["trigger"]["scheduled_for"] for r in runs)
    assert len(set(times)) == 5
    assert all(r["trigger"]["type"] == "schedule" for r in runs)
    assert all(r["input"] == {"from": "cron"} for r in runs)
    await api.idle()
    statuses = [(await api.run(r["id"]))["status"] for r in runs]
    assert statuses == ["completed"] * 5

    schedule = await api.call("GET", f"{S}/every-minute", status=200)
    assert iso(datetime.fromisoformat(schedule["last_run_at"])) == times[-1]
    assert datetime.fromisoformat(schedule["next_run_at"]) > datetime.now(UTC)
    keys = store_sql("SELECT COUNT(*) FROM schedule_firings WHERE schedule_id = 'every-minute'")
    assert keys == [(5,)]
    assert store_sql("SELECT DISTINCT trigger_type FROM runs") == [("schedule",)]


async def test_latest_catches_up_one_run(api: Api, store_sql: SQL) -> None:
    await api.graph(linear("g", "passthrough"))
    await api.call("POST", S, spec(cron=far_daily()), 201)
    back_in_time(store_sql, "every-minute", 30)
    runs = await runs_of(api, "every-minute", 1)
    assert len(runs) == 1
    await api.idle()
    schedule = await api.call("GET", f"{S}/every-minute", status=200)
    assert (
        iso(datetime.fromisoformat(schedule["last_run_at"])) == runs[0]["trigger"]["scheduled_for"]
    )
    assert len(await runs_of(api, "every-minute", 1)) == 1  # and no second one


async def test_a_time_that_has_a_run_never_gets_another(api: Api) -> None:
    """The unique key, not the duty, is what holds: a plan asking again for times already
    fired (a second daemon's stale decision, a restored schedule row) creates nothing."""
    await api.graph(linear("g", "passthrough"))
    await api.call("POST", S, spec(enabled=False), 201)
    store = api.client.app[SCHEDULES].store
    counter = itertools.count()
    times = [datetime(2026, 1, 1, 9, m, tzinfo=UTC) for m in range(3)]

    def again(schedule: Schedule, graph: Graph | None) -> Firing:
        assert graph is not None
        now = datetime.now(UTC)
        runs = [
            scheduled_run(
                schedule, graph, t, now, f"{next(counter):08d}-0000-4000-8000-000000000000"
            )
            for t in times
        ]
        return Firing(schedule, runs)

    first = await store.fire_schedule("acme", "every-minute", again)
    both = await asyncio.gather(
        store.fire_schedule("acme", "every-minute", again),
        store.fire_schedule("acme", "every-minute", again),
    )
    assert len(first) == 3
    assert both == [[], []]
    runs = await api.call("GET", f"{P}/runs", status=200)
    assert sorted(r["trigger"]["scheduled_for"] for r in runs) == [iso(t) for t in times]


async def test_deleted_graph_stops_the_schedule_and_an_edit_applies_next(
    api: Api, store_sql: SQL
) -> None:
    await api.graph(linear("g", "passthrough"))
    await api.call("POST", S, spec(cron=far_daily()), 201)
    edited = linear("g", "passthrough", "count")
    await api.call("PUT", f"{P}/graphs/g", edited, 200)
    back_in_time(store_sql, "every-minute", 2)
    [run] = await runs_of(api, "every-minute", 1)
    assert run["graph_version"] == 2  # the version current at the firing
    await api.idle()

    await api.call("DELETE", f"{P}/graphs/g", status=204)
    back_in_time(store_sql, "every-minute", 2)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while (await api.call("GET", f"{S}/every-minute", status=200))["state"] != "graph_deleted":
        assert loop.time() < deadline, "the schedule did not stop"
        await asyncio.sleep(0.05)
    stopped = await api.call("GET", f"{S}/every-minute", status=200)
    assert stopped["next_run_at"] is None
    assert len(await runs_of(api, "every-minute", 1)) == 1

    await api.graph(linear("g", "passthrough"))  # the graph again: a PUT restarts it
    again = await api.call("PUT", f"{S}/every-minute", spec(), 200)
    assert (again["state"], again["next_run_at"] is not None) == ("active", True)


async def test_an_input_over_the_run_input_limit_is_413(make_api: Any) -> None:
    api = await make_api(CORTEXD_LIMITS__MAX_RUN_INPUT_BYTES="100")
    await api.graph(linear("g", "passthrough"))
    problem = await api.call("POST", S, spec(input={"x": "y" * 200}), 413)
    assert "limit is 100" in problem["detail"]


class Clock:
    def __init__(self, now: datetime) -> None:
        self.at = now

    def now(self) -> datetime:
        return self.at


async def test_a_pass_after_a_downtime_by_the_firers_own_clock(api: Api) -> None:
    """The firing duty with an injected clock three days ahead: the missed times of a daily
    schedule fire once each, and a second pass at the same moment fires nothing."""
    await api.graph(linear("g", "passthrough"))
    made = await api.call("POST", S, spec(cron=far_daily(), catchup="all"), 201)
    next_run = datetime.fromisoformat(made["next_run_at"])
    counter = itertools.count()
    clock = Clock(next_run + timedelta(days=2, hours=1))
    firer = ScheduleFirer(
        api.client.app[SCHEDULES].store,
        clock,
        lambda: f"{next(counter):08d}-0000-4000-8000-000000000000",
    )
    runs = await firer.fire_due()
    assert [r.trigger["scheduled_for"] for r in runs] == [
        iso(next_run + timedelta(days=d)) for d in range(3)
    ]
    assert await firer.fire_due() == []
    schedule = await api.call("GET", f"{S}/every-minute", status=200)
    assert datetime.fromisoformat(schedule["next_run_at"]) == next_run + timedelta(days=3)
    assert datetime.fromisoformat(schedule["last_run_at"]) == next_run + timedelta(days=2)
    await api.idle()
    assert [(await api.run(r.id))["status"] for r in runs] == ["completed"] * 3
