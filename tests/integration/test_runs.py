"""Runs over HTTP: the original service's lifecycle contract, on the real app and SQLite."""

from __future__ import annotations

import asyncio

from tests.integration.conftest import Api, ApiFactory, P, linear, until

ON_BOTH_STORES = True  # every test here runs on SQLite and on PostgreSQL


async def test_run_completes_with_node_states_output_and_events(api: Api) -> None:
    await api.graph(linear("g", "passthrough", "count"))
    run_id = await api.start("g", {"word": "hi"})
    await api.idle()

    run = await api.run(run_id)
    assert run["status"] == "completed"
    assert run["started_at"]
    assert run["finished_at"]
    assert run["graph_version"] == 1
    assert run["output"]["outputs"]["n1"]["input"] == {"word": "hi"}
    assert run["output"]["outputs"]["n2"] == {"count": 1}

    status = await api.call("GET", f"{P}/runs/{run_id}/status", status=200)
    assert status["status"] == "completed"
    assert status["progress"] == 1.0
    assert status["current_node"] is None
    states = {s["node_id"]: s for s in status["node_states"]}
    assert set(states) == {"n1", "n2"}
    for state in states.values():
        assert state["status"] == "completed"
        assert state["progress"] == 1.0
        assert state["attempts"] == 1
        assert state["started_at"]
        assert state["completed_at"]

    events = await api.call("GET", f"{P}/runs/{run_id}/events", status=200)
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    types = [e["type"] for e in events]
    assert types[0] == "workflow.run.created"
    assert types[-1] == "workflow.run.completed"
    assert types.count("workflow.node_state.updated") == 4  # running + completed, per node
    assert all(e["run_id"] == run_id and e["project_id"] == "acme" for e in events)


async def test_events_since_returns_only_later_events(api: Api) -> None:
    await api.graph(linear("g", "passthrough"))
    run_id = await api.start("g")
    await api.idle()
    events = await api.call("GET", f"{P}/runs/{run_id}/events", status=200)
    later = await api.call("GET", f"{P}/runs/{run_id}/events?since={events[1]['seq']}", status=200)
    assert later == events[2:]


async def test_failed_node_fails_the_run_and_execute_retries_from_the_failure(api: Api) -> None:
    graph = linear("g", "count", "fail", "count", n2={"fail_times": 1, "message": "flaky"})
    await api.graph(graph)
    run_id = await api.start("g")
    await api.idle()

    run = await api.run(run_id)
    assert run["status"] == "failed"
    assert run["error"]["node_id"] == "n2"
    assert run["error"]["message"] == "flaky"
    assert run["finished_at"]
    status = await api.call("GET", f"{P}/runs/{run_id}/status", status=200)
    states = {s["node_id"]: s for s in status["node_states"]}
    assert states["n2"]["status"] == "failed"
    assert states["n2"]["error"]["message"] == "flaky"
    assert states["n3"]["status"] == "idle"

    again = await api.call("POST", f"{P}/runs/{run_id}/execute", status=200)
    assert again["status"] == "pending"
    assert again["finished_at"] is None
    assert again["error"] is None
    await api.idle()

    run = await api.run(run_id)
    assert run["status"] == "completed"
    assert api.kit.count(run_id, "n1") == 1  # completed before the failure: never again
    assert api.kit.count(run_id, "n2") == 2
    assert api.kit.count(run_id, "n3") == 1


async def test_execute_from_start_runs_every_node_again(api: Api) -> None:
    await api.graph(linear("g", "count", "fail"))
    run_id = await api.start("g")
    await api.idle()
    await api.call("POST", f"{P}/runs/{run_id}/execute", {"from_start": True}, 200)
    await api.idle()
    assert api.kit.count(run_id, "n1") == 2


async def test_execute_with_new_input_starts_fresh_with_that_input(api: Api) -> None:
    await api.graph(linear("g", "passthrough", "fail"))
    run_id = await api.start("g", {"v": 1})
    await api.idle()
    run = await api.call("POST", f"{P}/runs/{run_id}/execute", {"input": {"v": 2}}, 200)
    assert run["input"] == {"v": 2}
    await api.idle()
    status = await api.call("GET", f"{P}/runs/{run_id}/status", status=200)
    n1 = next(s for s in status["node_states"] if s["node_id"] == "n1")
    assert n1["attempts"] == 1  # node states start over with a fresh run


async def test_status_codes_of_the_original_service(api: Api) -> None:
    await api.graph(linear("g", "passthrough"))
    missing = await api.call("POST", f"{P}/runs", {"workflow_id": "nope"}, 404)
    assert "nope" in missing["detail"]
    await api.call("GET", f"{P}/runs/nope", status=404)
    await api.call("GET", f"{P}/runs/nope/status", status=404)
    await api.call("POST", f"{P}/runs/nope/cancel", status=404)

    run_id = await api.start("g")
    await api.idle()
    conflict = await api.call("POST", f"{P}/runs/{run_id}/execute", status=409)
    assert "completed" in conflict["detail"]
    for action in ("cancel", "pause", "resume"):
        body = await api.call("POST", f"{P}/runs/{run_id}/{action}", status=400)
        assert "completed" in body["detail"]


async def test_execute_on_a_running_run_is_400(api: Api) -> None:
    await api.graph(linear("g", "gate"))
    run_id = await api.start("g")
    await api.arrived()
    body = await api.call("POST", f"{P}/runs/{run_id}/execute", status=400)
    assert "running" in body["detail"]
    api.kit.gate("default").set()
    await api.idle()


async def test_another_projects_runs_and_graphs_are_not_found(api: Api) -> None:
    await api.graph(linear("g", "passthrough"))
    run_id = await api.start("g")
    await api.idle()
    other = "/api/projects/other/workflows"
    await api.call("GET", f"{other}/runs/{run_id}", status=404)
    await api.call("GET", f"{other}/runs/{run_id}/status", status=404)
    await api.call("GET", f"{other}/runs/{run_id}/events", status=404)
    await api.call("POST", f"{other}/runs/{run_id}/cancel", status=404)
    await api.call("GET", f"{other}/graphs/g", status=404)
    await api.call("POST", f"{other}/runs", {"workflow_id": "g"}, 404)
    assert await api.call("GET", f"{other}/runs", status=200) == []
    assert await api.call("GET", f"{other}/graphs", status=200) == []


async def test_cancel_a_running_run_frees_its_slot_at_once(make_api: ApiFactory) -> None:
    api = await make_api(CORTEXD_EXECUTION__MAX_CONCURRENT_RUNS="1")
    await api.graph(linear("g", "gate", "count"))
    await api.graph(linear("h", "count"))
    blocked = await api.start("g")
    await api.arrived()
    waiting = await api.start("h")
    assert (await api.run(waiting))["status"] == "pending"

    run = await api.call("POST", f"{P}/runs/{blocked}/cancel", status=200)
    assert run["status"] == "cancelled"
    assert run["cancelled_at"]
    assert run["finished_at"]
    await api.idle()

    assert (await api.run(waiting))["status"] == "completed"
    assert (await api.run(blocked))["status"] == "cancelled"
    status = await api.call("GET", f"{P}/runs/{blocked}/status", status=200)
    states = {s["node_id"]: s["status"] for s in status["node_states"]}
    assert states == {"n1": "cancelled", "n2": "idle"}
    assert api.kit.count(blocked, "n2") == 0


async def test_cancel_a_pending_run_and_execute_it_again(make_api: ApiFactory) -> None:
    api = await make_api(CORTEXD_EXECUTION__MAX_CONCURRENT_RUNS="1")
    await api.graph(linear("g", "gate"))
    await api.graph(linear("h", "count"))
    first = await api.start("g")
    await api.arrived()
    queued = await api.start("h")
    cancelled = await api.call("POST", f"{P}/runs/{queued}/cancel", status=200)
    assert cancelled["status"] == "cancelled"
    restarted = await api.call("POST", f"{P}/runs/{queued}/execute", status=200)
    assert restarted["status"] == "pending"
    assert restarted["cancelled_at"] is None
    api.kit.gate("default").set()
    await api.idle()
    assert (await api.run(first))["status"] == "completed"
    assert (await api.run(queued))["status"] == "completed"
    assert api.kit.count(queued, "n1") == 1


async def test_pause_lets_the_node_in_flight_finish_and_resume_runs_the_rest_once(
    api: Api,
) -> None:
    await api.graph(linear("g", "count", "gate", "count"))
    run_id = await api.start("g")
    await api.arrived()

    paused = await api.call("POST", f"{P}/runs/{run_id}/pause", status=200)
    assert paused["status"] == "paused"
    assert paused["paused_at"]
    assert paused["pause_reason"] == "requested"
    api.kit.gate("default").set()
    await api.idle()

    assert (await api.run(run_id))["status"] == "paused"
    status = await api.call("GET", f"{P}/runs/{run_id}/status", status=200)
    states = {s["node_id"]: s["status"] for s in status["node_states"]}
    assert states == {"n1": "completed", "n2": "completed", "n3": "idle"}

    resumed = await api.call("POST", f"{P}/runs/{run_id}/resume", status=200)
    assert resumed["status"] == "running"
    assert resumed["pause_reason"] is None
    await api.idle()
    assert (await api.run(run_id))["status"] == "completed"
    assert [api.kit.count(run_id, n) for n in ("n1", "n2", "n3")] == [1, 1, 1]
    types = [e["type"] for e in await api.call("GET", f"{P}/runs/{run_id}/events")]
    assert "workflow.run.paused" in types
    assert "workflow.run.resumed" in types


async def test_pause_a_pending_run_holds_it_until_resumed(make_api: ApiFactory) -> None:
    api = await make_api(CORTEXD_EXECUTION__MAX_CONCURRENT_RUNS="1")
    await api.graph(linear("g", "gate"))
    await api.graph(linear("h", "count"))
    first = await api.start("g")
    await api.arrived()
    held = await api.start("h")
    assert (await api.call("POST", f"{P}/runs/{held}/pause", status=200))["status"] == "paused"
    api.kit.gate("default").set()
    await api.idle()
    assert (await api.run(first))["status"] == "completed"
    assert (await api.run(held))["status"] == "paused"
    assert api.kit.count(held, "n1") == 0

    await api.call("POST", f"{P}/runs/{held}/resume", status=200)
    await api.idle()
    assert (await api.run(held))["status"] == "completed"


async def test_runs_start_in_fifo_order_within_the_concurrency_limit(
    make_api: ApiFactory,
) -> None:
    api = await make_api(CORTEXD_EXECUTION__MAX_CONCURRENT_RUNS="2")
    await api.graph(linear("g", "count"))
    run_ids = [await api.start("g") for _ in range(6)]
    await api.idle()
    started = [run for run, _ in api.kit.started]
    assert started == run_ids
    for run_id in run_ids:
        assert (await api.run(run_id))["status"] == "completed"


async def test_concurrency_limit_is_never_exceeded(make_api: ApiFactory) -> None:
    api = await make_api(CORTEXD_EXECUTION__MAX_CONCURRENT_RUNS="2")
    await api.graph(linear("g", "gate"))
    run_ids = [await api.start("g") for _ in range(4)]
    await until(lambda: sum(api.kit.executions.values()) == 2)
    statuses = [(await api.run(r))["status"] for r in run_ids]
    assert statuses.count("running") == 2
    assert statuses.count("pending") == 2
    assert api.engine.running == 2
    assert (await api.engine.counts()).claimable == 2
    api.kit.gate("default").set()
    await api.idle()
    assert [(await api.run(r))["status"] for r in run_ids] == ["completed"] * 4


async def test_a_run_executes_the_graph_version_it_was_created_with(api: Api) -> None:
    await api.graph(linear("g", "gate", "count"))
    run_id = await api.start("g")
    await api.arrived()
    replaced = linear("g", "gate", "count", "count")
    updated = await api.call("PUT", f"{P}/graphs/g", replaced, 200)
    assert updated["version"] == 2
    api.kit.gate("default").set()
    await api.idle()
    run = await api.run(run_id)
    assert run["status"] == "completed"
    assert run["graph_version"] == 1
    assert set(run["output"]["outputs"]) == {"n1", "n2"}


async def test_list_runs_filters_by_workflow_and_status(api: Api) -> None:
    await api.graph(linear("g", "passthrough"))
    await api.graph(linear("h", "fail"))
    g_run = await api.start("g")
    h_run = await api.start("h")
    await api.idle()
    assert [r["id"] for r in await api.call("GET", f"{P}/runs?workflow_id=g")] == [g_run]
    assert [r["id"] for r in await api.call("GET", f"{P}/runs?status=failed")] == [h_run]
    newest_first = [r["id"] for r in await api.call("GET", f"{P}/runs")]
    assert newest_first == [h_run, g_run]
    bad = await api.call("GET", f"{P}/runs?status=bogus", status=400)
    assert "bogus" in bad["detail"]


async def test_sinks_receive_every_stored_event_in_order(api: Api) -> None:
    await api.graph(linear("g", "passthrough", "count"))
    run_id = await api.start("g")
    await api.idle()
    stored = await api.call("GET", f"{P}/runs/{run_id}/events")
    # The sink's own queue delivers asynchronously.
    await until(lambda: len([e for e in api.kit.events if e.get("run_id") == run_id]) >= 6)
    assert [e for e in api.kit.events if e.get("run_id") == run_id] == stored


async def test_status_averages_progress_and_names_the_running_node(api: Api) -> None:
    await api.graph(linear("g", "count", "gate", "count"))
    run_id = await api.start("g")
    await api.arrived()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while True:  # the progress report is written asynchronously: poll until it is visible
        status = await api.call("GET", f"{P}/runs/{run_id}/status", status=200)
        if status["progress"] > 1 / 3 or loop.time() > deadline:
            break
    assert status["status"] == "running"
    assert status["current_node"] == "n2"
    # n1 done (1.0), n2 reported 0.5 at the gate, n3 not started (0.0)
    assert status["progress"] == 0.5
    gate = next(s for s in status["node_states"] if s["node_id"] == "n2")
    assert gate["message"] == "waiting at the gate"
    assert gate["messages"] == ["waiting at the gate"]
    api.kit.gate("default").set()
    await api.idle()
