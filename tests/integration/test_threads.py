"""Node types doing CPU work in worker threads report progress, log and write data from there."""

from __future__ import annotations

from typing import Any

from structlog.testing import capture_logs

from tests.integration.conftest import Api, ApiFactory, P, linear
from tests.integration.test_ws import stored_events
from tests.support.thread_nodes import ThreadNodes

ON_BOTH_STORES = True  # every test here runs on SQLite and on PostgreSQL


async def threaded_api(make_api: ApiFactory) -> Api:
    return await make_api(extra=[("threads", ThreadNodes())])


def progress_events(events: list[dict[str, Any]], node_id: str) -> list[tuple[float, str]]:
    return [
        (e["nodeState"]["progress"], e["nodeState"]["message"])
        for e in events
        if e.get("nodeState", {}).get("node_id") == node_id
        and e["nodeState"]["status"] == "running"
    ]


async def test_progress_logs_and_data_from_to_thread_arrive_in_order(make_api: ApiFactory) -> None:
    api = await threaded_api(make_api)
    steps = 25
    await api.graph(linear("g", "threaded", "count", n1={"steps": steps}))
    with capture_logs() as logs:
        run_id = await api.start("g")
        await api.idle()
    run = await api.run(run_id)
    assert run["status"] == "completed", run.get("error")
    assert run["output"]["data"]["threaded_total"] == run["output"]["outputs"]["n1"]["total"]

    status = await api.call("GET", f"{P}/runs/{run_id}/status", status=200)
    [n1] = [s for s in status["node_states"] if s["node_id"] == "n1"]
    assert n1["status"] == "completed"
    assert n1["messages"] == [f"step {i}" for i in range(1, steps + 1)]

    # Every report became a node-state event, in the order the thread made them.
    reported = progress_events(await stored_events(api), "n1")[1:]  # after "started"
    assert reported == [(i / steps, f"step {i}") for i in range(1, steps + 1)]

    lines = [e for e in logs if e["event"] == "threaded_step"]
    assert [e["step"] for e in lines] == list(range(1, steps + 1))
    assert all(e["run_id"] == run_id and e["node_id"] == "n1" for e in lines)


async def test_progress_from_a_thread_the_node_started_itself(make_api: ApiFactory) -> None:
    api = await threaded_api(make_api)
    await api.graph(linear("g", "plain_thread", n1={"steps": 10}))
    run_id = await api.start("g")
    await api.idle()
    run = await api.run(run_id)
    assert run["status"] == "completed", run.get("error")
    reported = progress_events(await stored_events(api), "n1")[1:]
    assert reported == [(i / 10, f"plain {i}") for i in range(1, 11)]
