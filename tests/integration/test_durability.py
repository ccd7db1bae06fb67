"""Durable execution on the real app and SQLite: restarts, stubborn nodes, retention, backlog."""

from __future__ import annotations

import asyncio
import json

from tests.conftest import SQL
from tests.integration.conftest import Api, ApiFactory, P, linear, until
from tests.support.nodes import TestKit

ON_BOTH_STORES = True  # every test here runs on SQLite and on PostgreSQL


async def test_resume_after_a_restart_while_paused_runs_no_completed_node_again(
    make_api: ApiFactory,
) -> None:
    kit = TestKit()
    first: Api = await make_api(kit=kit)
    await first.graph(linear("g", "count", "gate", "count", "count"))
    run_id = await first.start("g")
    await first.arrived()
    await first.call("POST", f"{P}/runs/{run_id}/pause", status=200)
    kit.gate("default").set()
    await first.idle()
    await first.client.close()  # the daemon stops; the run stays paused

    second = await make_api(kit=kit)
    assert (await second.run(run_id))["status"] == "paused"
    assert second.engine.running == 0  # paused runs are not recovered into the queue
    await second.call("POST", f"{P}/runs/{run_id}/resume", status=200)
    await second.idle()
    assert (await second.run(run_id))["status"] == "completed"
    assert [kit.count(run_id, n) for n in ("n1", "n2", "n3", "n4")] == [1, 1, 1, 1]


async def test_resume_runs_the_version_the_run_was_created_with(api: Api) -> None:
    await api.graph(linear("g", "gate", "count"))
    run_id = await api.start("g")
    await api.arrived()
    await api.call("POST", f"{P}/runs/{run_id}/pause", status=200)
    api.kit.gate("default").set()
    await api.idle()
    await api.call("PUT", f"{P}/graphs/g", linear("g", "count"), 200)  # a different graph
    await api.call("POST", f"{P}/runs/{run_id}/resume", status=200)
    await api.idle()
    run = await api.run(run_id)
    assert run["status"] == "completed"
    assert set(run["output"]["outputs"]) == {"n1", "n2"}
    assert run["output"]["outputs"]["n1"] == {"passed": True}


async def test_a_node_ignoring_cancellation_does_not_keep_the_run_alive(
    make_api: ApiFactory,
) -> None:
    api = await make_api(CORTEXD_EXECUTION__MAX_CONCURRENT_RUNS="1")
    await api.graph(linear("g", "stubborn", "count"))
    await api.graph(linear("h", "count"))
    stuck = await api.start("g")
    await api.arrived("stubborn")
    after = await api.start("h")

    cancelled = await api.call("POST", f"{P}/runs/{stuck}/cancel", status=200)
    assert cancelled["status"] == "cancelled"
    await until(lambda: api.kit.count(after, "n1") == 1)  # its slot was free at once
    assert (await api.run(after))["status"] in {"running", "completed"}
    assert api.kit.executions[("cancel-ignored", "n1")] >= 1

    api.kit.gate("stubborn").set()  # it finishes at last: nothing of it is recorded
    await api.idle()
    run = await api.run(stuck)
    assert run["status"] == "cancelled"
    status = await api.call("GET", f"{P}/runs/{stuck}/status", status=200)
    assert [s["status"] for s in status["node_states"]] == ["cancelled", "idle"]
    assert api.kit.count(stuck, "n2") == 0
    types = [e["type"] for e in await api.call("GET", f"{P}/runs/{stuck}/events")]
    assert types[-1] != "workflow.run.completed"


async def test_a_finished_run_keeps_only_its_last_checkpoint(api: Api, store_sql: SQL) -> None:
    await api.graph(linear("g", "count", "count", "count"))
    run_id = await api.start("g")
    await api.idle()
    [(kept,)] = store_sql("SELECT COUNT(*) FROM checkpoints WHERE thread_id = ?", run_id)
    assert kept == 1
    await api.call("GET", f"{P}/runs/{run_id}/status", status=200)


async def test_retention_zero_keeps_every_checkpoint(make_api: ApiFactory, store_sql: SQL) -> None:
    api = await make_api(CORTEXD_STORAGE__CHECKPOINT_RETENTION="0")
    await api.graph(linear("g", "count", "count", "count"))
    run_id = await api.start("g")
    await api.idle()
    [(kept,)] = store_sql("SELECT COUNT(*) FROM checkpoints WHERE thread_id = ?", run_id)
    assert kept > 3


async def test_a_thousand_queued_runs_drain_in_order(make_api: ApiFactory, store_sql: SQL) -> None:
    api = await make_api(CORTEXD_EXECUTION__MAX_CONCURRENT_RUNS="4")
    await api.graph(linear("g", "count"))
    run_ids = [await api.start("g") for _ in range(1000)]
    assert api.engine.running <= 4
    await api.idle(timeout=120)
    # The order the store took them out of the queue (pending -> running, in the log). Runs
    # taken together then execute at once: which one's node comes first is not promised (on
    # PostgreSQL their reads race).
    rows = store_sql(
        "SELECT run_id, body FROM events WHERE type = 'workflow.run.updated' ORDER BY seq"
    )
    taken = [run_id for run_id, body in rows if json.loads(body)["run"]["status"] == "running"]
    assert taken == run_ids
    assert sorted(run for run, _ in api.kit.started) == sorted(run_ids)
    completed = await api.call("GET", f"{P}/runs?status=completed", status=200)
    assert len(completed) == 1000


async def test_execute_after_cancel_waits_for_a_node_still_ending(api: Api) -> None:
    await api.graph(linear("g", "stubborn", "count"))
    run_id = await api.start("g")
    await api.arrived("stubborn")
    await api.call("POST", f"{P}/runs/{run_id}/cancel", status=200)
    api.kit.arrived("stubborn").clear()
    execute = asyncio.create_task(api.call("POST", f"{P}/runs/{run_id}/execute", status=200))
    await asyncio.sleep(0)
    api.kit.gate("stubborn").set()  # the old task ends; only then does the fresh start begin
    assert (await execute)["status"] == "pending"
    await api.idle()
    run = await api.run(run_id)
    assert run["status"] == "completed"
    assert api.kit.count(run_id, "n2") == 1
