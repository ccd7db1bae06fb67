"""Sub-workflows (DESIGN §11) on the real app, on SQLite and PostgreSQL: the child is a run of
its own, the parent waits for it without a slot, failures and retries, commands reaching the
children, and cycles refused."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import SQL
from tests.integration.conftest import Api, ApiFactory, P, linear

ON_BOTH_STORES = True


def parent(graph_id: str, child: str, **config: Any) -> dict[str, Any]:
    return linear(
        graph_id, "passthrough", "subworkflow", "count", n2={"workflow_id": child, **config}
    )


async def settled(
    api: Api, run_id: str, statuses: set[str], timeout_s: float = 30
) -> dict[str, Any]:
    """The run once its status is one of `statuses` (bounded polling: the test's own clock)."""
    run: dict[str, Any] = {}
    for _ in range(int(timeout_s / 0.05)):
        run = await api.run(run_id)
        if run["status"] in statuses:
            return run
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} is {run.get('status')}, not one of {statuses}")


async def children(api: Api, run_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = await api.call(
        "GET", f"{P}/runs?parent_run_id={run_id}", status=200
    )
    return found


async def test_a_child_is_a_run_of_its_own_and_its_output_the_nodes(make_api: ApiFactory) -> None:
    # One slot: the parent gives it back while its child runs (no deadlock). A lease of an
    # hour: no upkeep looks meanwhile, the child's end itself must wake the parent.
    api = await make_api(
        CORTEXD_EXECUTION__MAX_CONCURRENT_RUNS="1", CORTEXD_EXECUTION__LEASE_S="3600"
    )
    await api.graph(linear("child", "count", "passthrough"))
    await api.graph(parent("parent", "child", input="{order: input.order}"))
    run_id = await api.start("parent", {"order": 7, "other": 1})
    done = await settled(api, run_id, {"completed", "failed"})
    assert done["status"] == "completed", done
    [child] = await children(api, run_id)
    assert child["status"] == "completed"
    assert (child["parent_run_id"], child["parent_node_id"]) == (run_id, "n2")
    assert child["trigger"] == {"type": "subworkflow", "id": run_id, "depth": 1}
    assert child["input"] == {"order": 7}
    assert done["output"]["outputs"]["n2"] == child["output"]
    assert child["output"]["outputs"]["n1"] == {"count": 1}
    assert api.kit.count(run_id, "n3") == 1
    assert api.kit.count(child["id"], "n1") == 1
    by_trigger = await api.call("GET", f"{P}/runs?trigger=subworkflow", status=200)
    assert [r["id"] for r in by_trigger] == [child["id"]]


async def test_the_parent_waits_without_a_slot_and_says_for_what(
    make_api: ApiFactory, store_sql: SQL
) -> None:
    api = await make_api(CORTEXD_EXECUTION__MAX_CONCURRENT_RUNS="1")
    await api.graph(linear("child", "gate"))
    await api.graph(parent("parent", "child"))
    run_id = await api.start("parent", {"a": 1})
    await api.arrived()  # the child holds the only slot: the parent gave it back
    status = await api.call("GET", f"{P}/runs/{run_id}/status", status=200)
    [child] = await children(api, run_id)
    assert status["status"] == "running"
    assert status["waiting_for"] == {"type": "subworkflow", "run_id": child["id"]}
    assert store_sql("SELECT owner FROM runs WHERE id = ?", run_id) == [(None,)]
    assert child["input"] == {"a": 1}  # the parent's input by default
    api.kit.gate("default").set()
    done = await settled(api, run_id, {"completed", "failed"})
    assert done["status"] == "completed"


async def test_a_failed_child_fails_the_node_and_an_execute_reruns_it_from_its_failure(
    make_api: ApiFactory,
) -> None:
    # Free slots and a lease of an hour: nothing but the child's end can wake the parent.
    api = await make_api(CORTEXD_EXECUTION__LEASE_S="3600")
    await api.graph(linear("child", "count", "fail", n2={"fail_times": 1, "message": "flaky"}))
    await api.graph(parent("parent", "child"))
    run_id = await api.start("parent")
    failed = await settled(api, run_id, {"completed", "failed"})
    [child] = await children(api, run_id)
    assert failed["status"] == "failed"
    assert child["status"] == "failed"
    assert failed["error"]["node_id"] == "n2"
    assert failed["error"]["child_run_id"] == child["id"]
    assert failed["error"]["child_error"]["message"] == "flaky"
    assert child["id"] in failed["error"]["message"]

    await api.call("POST", f"{P}/runs/{run_id}/execute", {}, status=200)
    done = await settled(api, run_id, {"completed", "failed"})
    assert done["status"] == "completed", done
    [again] = await children(api, run_id)
    assert again["id"] == child["id"]  # the same child, executed again
    assert again["status"] == "completed"
    assert api.kit.count(child["id"], "n1") == 1  # from its failure point: n1 not again


async def test_cancelling_or_pausing_the_parent_reaches_its_running_child(api: Api) -> None:
    await api.graph(linear("child", "gate", "count"))
    await api.graph(parent("parent", "child"))
    paused_parent = await api.start("parent")
    await api.arrived()
    [child] = await children(api, paused_parent)
    await api.call("POST", f"{P}/runs/{paused_parent}/pause", status=200)
    api.kit.gate("default").set()  # the child's node in flight finishes; no new one starts
    await settled(api, child["id"], {"paused"})
    assert (await api.run(paused_parent))["status"] == "paused"
    await api.call("POST", f"{P}/runs/{paused_parent}/resume", {}, status=200)
    done = await settled(api, paused_parent, {"completed", "failed"})
    assert done["status"] == "completed"
    assert (await api.run(child["id"]))["status"] == "completed"

    api.kit.gate("default").clear()
    cancelled_parent = await api.start("parent")
    await settled(api, cancelled_parent, {"running"})
    for _ in range(600):
        found = await children(api, cancelled_parent)
        if found and found[0]["status"] == "running":
            break
        await asyncio.sleep(0.05)
    await api.call("POST", f"{P}/runs/{cancelled_parent}/cancel", status=200)
    [child] = await children(api, cancelled_parent)
    assert (await settled(api, child["id"], {"cancelled"}))["status"] == "cancelled"
    api.kit.gate("default").set()
    await api.idle()
    assert (await api.run(cancelled_parent))["status"] == "cancelled"


async def test_a_graph_calling_itself_through_subworkflows_is_refused(api: Api) -> None:
    await api.graph(linear("a", "passthrough"))
    await api.graph(parent("b", "a"))
    problem = await api.call("PUT", f"{P}/graphs/a", parent("a", "b"), status=422)
    assert problem["problems"][0]["path"] == "/nodes/1/config/workflow_id"
    assert "a -> b -> a" in problem["problems"][0]["message"]
    problem = await api.call("POST", f"{P}/graphs", parent("self", "self"), status=422)
    assert "self -> self" in problem["problems"][0]["message"]
    await api.call("POST", f"{P}/graphs", parent("c", "a"), status=201)  # not a cycle


async def test_a_child_of_a_missing_graph_fails_the_node_without_retrying(api: Api) -> None:
    await api.graph(parent("orphan", "nowhere"))
    run_id = await api.start("orphan")
    failed = await settled(api, run_id, {"completed", "failed"})
    assert failed["status"] == "failed"
    assert "no graph 'nowhere'" in failed["error"]["message"]
    assert await children(api, run_id) == []


async def test_nesting_deeper_than_the_limit_fails_the_deepest_node(api: Api) -> None:
    from core.children import MAX_DEPTH

    await api.graph(linear(f"g{MAX_DEPTH + 1}", "passthrough"))
    for level in range(MAX_DEPTH, -1, -1):
        await api.graph(linear(f"g{level}", "subworkflow", n1={"workflow_id": f"g{level + 1}"}))
    top = await api.start("g0")
    failed = await settled(api, top, {"completed", "failed"}, timeout_s=60)
    assert failed["status"] == "failed"
    # Down the chain: the run at the limit could not start its child.
    run_id, depth = top, 0
    while found := await children(api, run_id):
        [run_id] = [c["id"] for c in found]
        depth += 1
    assert depth == MAX_DEPTH
    deepest = await api.run(run_id)
    assert f"nest {MAX_DEPTH + 1} deep here; at most {MAX_DEPTH}" in deepest["error"]["message"]


def looped(graph_id: str, child: str) -> dict[str, Any]:
    """counter -> sub (the child, with the pass number as input) -> counter while < 3."""
    nodes = [
        {"id": "counter", "type": "count"},
        {
            "id": "sub",
            "type": "subworkflow",
            "config": {"workflow_id": child, "input": "{i: outputs.counter.count}"},
        },
        {"id": "done", "type": "passthrough"},
    ]
    edges = [
        {"source": "counter", "target": "sub"},
        {"source": "sub", "target": "counter", "condition": "outputs.counter.count < `3`"},
        {"source": "sub", "target": "done", "condition": "outputs.counter.count >= `3`"},
    ]
    return {"id": graph_id, "name": graph_id, "nodes": nodes, "edges": edges}


async def test_each_pass_of_a_loop_runs_a_child_of_its_own(api: Api) -> None:
    await api.graph(linear("echo", "passthrough"))
    await api.graph(looped("loop", "echo"))
    run_id = await api.start("loop")
    done = await settled(api, run_id, {"completed", "failed"})
    assert done["status"] == "completed", done
    found = await children(api, run_id)
    assert sorted(c["input"]["i"] for c in found) == [1, 2, 3]
    assert done["output"]["outputs"]["sub"]["outputs"]["n1"]["input"] == {"i": 3}


async def test_a_parent_started_over_runs_new_children(api: Api) -> None:
    await api.graph(linear("child", "count"))
    spec = linear(
        "parent", "passthrough", "subworkflow", "fail", n2={"workflow_id": "child"},
        n3={"fail_times": 1},
    )  # fmt: skip
    await api.graph(spec)
    run_id = await api.start("parent", {"v": 1})
    assert (await settled(api, run_id, {"completed", "failed"}))["status"] == "failed"
    await api.call(
        "POST", f"{P}/runs/{run_id}/execute", {"from_start": True, "input": {"v": 2}}, status=200
    )
    assert (await settled(api, run_id, {"completed", "failed"}))["status"] == "completed"
    found = await children(api, run_id)
    assert sorted(c["input"]["v"] for c in found) == [1, 2]
    # A cancelled parent started over (its child cancelled with it) completes too.
    await api.graph(linear("slow", "gate"))
    await api.graph(parent("waits", "slow"))
    cancelled = await api.start("waits")
    await api.arrived()
    await api.call("POST", f"{P}/runs/{cancelled}/cancel", status=200)
    api.kit.gate("default").set()
    await api.call("POST", f"{P}/runs/{cancelled}/execute", {}, status=200)
    done = await settled(api, cancelled, {"completed", "failed"})
    assert done["status"] == "completed", done
    statuses = sorted(c["status"] for c in await children(api, cancelled))
    assert statuses == ["cancelled", "completed"]


async def test_a_failing_child_is_executed_as_often_as_its_nodes_retry_policy_allows(
    api: Api,
) -> None:
    await api.graph(linear("always", "fail"))
    spec = parent("parent", "always")
    spec["nodes"][1]["retry"] = {"max_attempts": 2, "backoff_s": 0}
    await api.graph(spec)
    run_id = await api.start("parent")
    failed = await settled(api, run_id, {"completed", "failed"})
    assert failed["status"] == "failed"
    [child] = await children(api, run_id)
    assert api.kit.count(child["id"], "n1") == 2  # the first execution and one retry
    # An execute of the parent gives its child a fresh budget: two more.
    await api.call("POST", f"{P}/runs/{run_id}/execute", {}, status=200)
    assert (await settled(api, run_id, {"completed", "failed"}))["status"] == "failed"
    await api.idle()
    assert api.kit.count(child["id"], "n1") == 4
    assert [c["id"] for c in await children(api, run_id)] == [child["id"]]
