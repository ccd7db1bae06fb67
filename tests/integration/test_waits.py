"""Waiting without a slot (DESIGN §11) on the real app, on SQLite and PostgreSQL: a long
`delay` parks its run (still `running`, no owner, `waiting_for` a timer) and gives its slot
back, and the run continues when the time comes."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import SQL
from tests.integration.conftest import ApiFactory, P, linear

ON_BOTH_STORES = True


async def status(api: Any, run_id: str) -> dict[str, Any]:
    result: dict[str, Any] = await api.call("GET", f"{P}/runs/{run_id}/status", status=200)
    return result


async def test_a_long_delay_gives_its_slot_back_and_continues_on_time(
    make_api: ApiFactory, store_sql: SQL
) -> None:
    # A lease of an hour: no upkeep looks meanwhile, the daemon's own timer must wake it.
    api = await make_api(
        CORTEXD_EXECUTION__MAX_CONCURRENT_RUNS="1",
        CORTEXD_EXECUTION__PARK_AFTER_S="0.2",
        CORTEXD_EXECUTION__LEASE_S="3600",
    )
    await api.graph(linear("wait", "passthrough", "delay", "count", n2={"seconds": 4}))
    await api.graph(linear("quick", "count"))
    waiting = await api.start("wait", {"v": 1})
    parked: dict[str, Any] = {}

    async def is_parked() -> bool:
        parked.update(await status(api, waiting))
        return parked.get("waiting_for") is not None

    for _ in range(400):  # bounded: ~20 s
        if await is_parked():
            break
        await asyncio.sleep(0.05)
    assert parked["status"] == "running"
    assert parked["waiting_for"]["type"] == "timer"
    row = store_sql("SELECT owner, wake_at FROM runs WHERE id = ?", waiting)[0]
    assert row[0] is None
    assert row[1] is not None
    nodes = {s["node_id"]: s for s in parked["node_states"]}
    assert nodes["n1"]["status"] == "completed"
    assert nodes["n2"]["message"].startswith("waiting until ")

    # Its slot is free: a run submitted after it completes while it waits.
    quick = await api.start("quick")
    await api.idle()
    done = await api.run(quick)
    assert done["status"] == "completed"

    # It wakes when its time comes (woken by this daemon's timer) and completes.
    for _ in range(600):  # bounded: ~30 s
        if (await api.run(waiting))["status"] == "completed":
            break
        await asyncio.sleep(0.05)
    finished = await status(api, waiting)
    assert finished["status"] == "completed"
    assert finished["waiting_for"] is None
    events = await api.call("GET", f"{P}/runs/{waiting}/events", status=200)
    completions = [
        e["nodeState"]["node_id"]
        for e in events
        if e["type"] == "workflow.node_state.updated" and e["nodeState"]["status"] == "completed"
    ]
    assert completions == ["n1", "n2", "n3"]  # n1 did not run again after the wait
    assert api.kit.count(waiting, "n3") == 1
    quick_events = await api.call("GET", f"{P}/runs/{quick}/events", status=200)
    assert quick_events[-1]["seq"] < events[-1]["seq"]  # it finished during the wait
    assert store_sql("SELECT wake_at FROM runs WHERE id = ?", waiting) == [(None,)]
