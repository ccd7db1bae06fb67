"""Branching, joins, loops, human input and the built-in transform, end to end on the app."""

from __future__ import annotations

from typing import Any

from tests.integration.conftest import Api, P

ON_BOTH_STORES = True  # every test here runs on SQLite and on PostgreSQL


def graph(nodes: list[dict[str, Any]], edges: list[tuple[Any, ...]]) -> dict[str, Any]:
    return {
        "id": "g",
        "name": "g",
        "nodes": nodes,
        "edges": [
            {"source": e[0], "target": e[1], **({"condition": e[2]} if len(e) > 2 else {})}
            for e in edges
        ],
    }


def n(node_id: str, node_type: str = "count", **extra: Any) -> dict[str, Any]:
    return {"id": node_id, "type": node_type, **extra}


async def node_statuses(api: Api, run_id: str) -> dict[str, str]:
    status = await api.call("GET", f"{P}/runs/{run_id}/status", status=200)
    return {s["node_id"]: s["status"] for s in status["node_states"]}


async def test_a_condition_picks_the_branch_and_the_other_is_skipped(api: Api) -> None:
    await api.graph(
        graph(
            [n("start"), n("yes"), n("no")],
            [
                ("start", "yes", "input.approved == `true`"),
                ("start", "no", "input.approved != `true`"),
            ],
        )
    )
    run_id = await api.start("g", {"approved": True})
    await api.idle()
    assert (await api.run(run_id))["status"] == "completed"
    assert await node_statuses(api, run_id) == {
        "start": "completed",
        "yes": "completed",
        "no": "skipped",
    }
    assert api.kit.count(run_id, "no") == 0


async def test_a_join_after_unequal_branches_runs_once_after_both(api: Api) -> None:
    await api.graph(
        graph(
            [n("a"), n("b1"), n("b2"), n("c"), n("join")],
            [("a", "b1"), ("b1", "b2"), ("b2", "join"), ("a", "c"), ("c", "join")],
        )
    )
    run_id = await api.start("g")
    await api.idle()
    run = await api.run(run_id)
    assert run["status"] == "completed"
    assert api.kit.count(run_id, "join") == 1
    order = [node for r, node in api.kit.started if r == run_id]
    assert order.index("join") > max(order.index("b2"), order.index("c"))
    assert set(run["output"]["outputs"]) == {"a", "b1", "b2", "c", "join"}


async def test_a_join_after_a_conditional_fan_out_waits_only_for_taken_branches(
    api: Api,
) -> None:
    await api.graph(
        graph(
            [n("a"), n("left"), n("right"), n("join")],
            [
                ("a", "left", "`true`"),
                ("a", "right", "`false`"),
                ("left", "join"),
                ("right", "join"),
            ],
        )
    )
    run_id = await api.start("g")
    await api.idle()
    assert (await api.run(run_id))["status"] == "completed"
    assert await node_statuses(api, run_id) == {
        "a": "completed",
        "left": "completed",
        "right": "skipped",
        "join": "completed",
    }
    assert api.kit.count(run_id, "join") == 1


async def test_a_loop_with_a_conditional_exit_runs_until_the_condition_fails(api: Api) -> None:
    await api.graph(
        graph(
            [n("body"), n("after")],
            [
                ("body", "body", "outputs.body.count < `3`"),
                ("body", "after", "outputs.body.count >= `3`"),
            ],
        )
    )
    run_id = await api.start("g")
    await api.idle()
    assert (await api.run(run_id))["status"] == "completed"
    assert api.kit.count(run_id, "body") == 3
    assert api.kit.count(run_id, "after") == 1


async def test_an_endless_loop_is_stopped_by_the_recursion_limit(make_api: Any) -> None:
    api = await make_api(CORTEXD_EXECUTION__RECURSION_LIMIT="10")
    await api.graph(graph([n("spin")], [("spin", "spin", "`true`")]))
    run_id = await api.start("g")
    await api.idle()
    run = await api.run(run_id)
    assert run["status"] == "failed"
    assert run["error"]["type"] == "RecursionLimit"
    assert api.kit.count(run_id, "spin") == 10


async def test_approval_pauses_for_input_and_resume_value_becomes_its_output(api: Api) -> None:
    approval = n("ok", "approval", config={"prompt": "Ship it?", "choices": ["yes", "no"]})
    await api.graph(graph([n("before"), approval, n("after")], [("before", "ok"), ("ok", "after")]))
    run_id = await api.start("g")
    await api.idle()
    run = await api.run(run_id)
    assert run["status"] == "paused"
    assert run["pause_reason"] == "input_required"
    assert run["prompt"] == {"prompt": "Ship it?", "choices": ["yes", "no"]}
    status = await api.call("GET", f"{P}/runs/{run_id}/status", status=200)
    assert status["current_node"] == "ok"

    await api.call("POST", f"{P}/runs/{run_id}/resume", {"value": "yes"}, 200)
    await api.idle()
    run = await api.run(run_id)
    assert run["status"] == "completed"
    assert run["prompt"] is None
    assert run["output"]["outputs"]["ok"] == {"value": "yes"}
    assert api.kit.count(run_id, "before") == 1
    assert api.kit.count(run_id, "after") == 1


async def test_approval_asks_again_after_an_answer_outside_its_choices(api: Api) -> None:
    approval = n("ok", "approval", config={"choices": ["yes", "no"]})
    await api.graph(graph([approval], []))
    run_id = await api.start("g")
    await api.idle()
    await api.call("POST", f"{P}/runs/{run_id}/resume", {"value": "maybe"}, 200)
    await api.idle()
    run = await api.run(run_id)
    assert run["status"] == "paused"
    assert run["pause_reason"] == "input_required"
    assert "'maybe' is not one of" in run["prompt"]["error"]
    await api.call("POST", f"{P}/runs/{run_id}/resume", {"value": "no"}, 200)
    await api.idle()
    run = await api.run(run_id)
    assert run["status"] == "completed"
    assert run["output"]["outputs"]["ok"] == {"value": "no"}


async def test_transform_maps_state_into_its_output_and_shared_data(api: Api) -> None:
    transform = n(
        "t",
        "transform",
        config={
            "output": {"greeting": "join(' ', ['hello', input.name])"},
            "data": {"user": "input.name"},
        },
    )
    reader = n("r", "transform", config={"output": {"seen": "data.user"}})
    await api.graph(graph([transform, reader], [("t", "r")]))
    run_id = await api.start("g", {"name": "ada"})
    await api.idle()
    run = await api.run(run_id)
    assert run["status"] == "completed"
    assert run["output"]["outputs"]["t"] == {"greeting": "hello ada"}
    assert run["output"]["data"] == {"user": "ada"}
    assert run["output"]["outputs"]["r"] == {"seen": "ada"}


async def test_an_invalid_jmespath_in_a_transform_is_refused_when_saved(api: Api) -> None:
    bad = n("t", "transform", config={"output": {"x": "input.[["}})
    body = await api.call("POST", f"{P}/graphs", graph([bad], []), 422)
    assert body["problems"][0]["path"] == "/nodes/0/config/output/x"


async def test_a_question_does_not_cut_off_the_branch_running_beside_it(api: Api) -> None:
    ask = n("ask", "approval", config={"prompt": "go?"})
    await api.graph(
        graph(
            [n("a"), ask, n("slow", "gate"), n("end")],
            [("a", "ask"), ("a", "slow"), ("ask", "end"), ("slow", "end")],
        )
    )
    run_id = await api.start("g")
    await api.arrived()
    api.kit.gate("default").set()
    await api.idle()
    run = await api.run(run_id)
    assert run["status"] == "paused"
    assert run["prompt"] == {"prompt": "go?"}
    statuses = await node_statuses(api, run_id)
    assert statuses["slow"] == "completed"  # finished, not cancelled by the interrupt
    await api.call("POST", f"{P}/runs/{run_id}/resume", {"value": "yes"}, 200)
    await api.idle()
    assert (await api.run(run_id))["status"] == "completed"
    assert api.kit.count(run_id, "slow") == 1
    assert api.kit.count(run_id, "end") == 1
