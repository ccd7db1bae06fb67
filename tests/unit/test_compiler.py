"""Compiled graphs on LangGraph with a fake runner: entry, branches, conditions, joins, loops."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from core.compiler import JSON, RunState, compile_graph, initial_state
from core.domain import Edge, Graph, Node

T0 = datetime(2026, 3, 1, tzinfo=UTC)

Behaviour = Callable[[RunState, int], JSON]


class FakeRunner:
    """Stands in for a run's RunScope: records which nodes ran, in order, and what they saw."""

    def __init__(self, behaviours: dict[str, Behaviour] | None = None) -> None:
        self.behaviours = behaviours or {}
        self.calls: list[str] = []
        self.seen: dict[str, RunState] = {}

    def count(self, node_id: str) -> int:
        return Counter(self.calls)[node_id]

    async def run_node(self, node: Node, state: RunState, attempt: int, task_id: str = "") -> JSON:
        self.calls.append(node.id)
        self.seen[node.id] = state
        behaviour = self.behaviours.get(node.id)
        output = behaviour(state, self.count(node.id)) if behaviour else {"ran": node.id}
        return {"outputs": {node.id: output}}


def make_graph(nodes: list[str], edges: list[tuple[str, ...]]) -> Graph:
    """Edges are (source, target) or (source, target, condition)."""
    return Graph(
        id="g",
        name="g",
        nodes=[Node(id=n) for n in nodes],
        edges=[
            Edge(source=e[0], target=e[1], condition=e[2] if len(e) > 2 else None) for e in edges
        ],
        project_id="p",
        version=1,
        created_at=T0,
        updated_at=T0,
    )


async def run(
    graph: Graph, runner: FakeRunner | None = None, run_input: JSON | None = None
) -> tuple[FakeRunner, dict[str, Any]]:
    runner = runner or FakeRunner()
    compiled = compile_graph(graph, checkpointer=None)
    final = await compiled.ainvoke(initial_state(run_input or {}), context=runner)
    return runner, final


# -- entry and ends ---------------------------------------------------------------------------


async def test_start_edges_choose_the_entry() -> None:
    graph = make_graph(["a", "b", "c"], [("__start__", "b"), ("b", "c"), ("a", "c")])

    runner, _ = await run(graph)

    assert runner.calls == ["b", "c"]


async def test_several_start_edges_run_in_parallel() -> None:
    graph = make_graph(["a", "b"], [("__start__", "a"), ("__start__", "b")])

    runner, _ = await run(graph)

    assert sorted(runner.calls) == ["a", "b"]


async def test_without_start_edges_the_first_node_is_the_entry() -> None:
    graph = make_graph(["b", "a"], [("a", "b")])

    runner, _ = await run(graph)

    assert runner.calls == ["b"]


async def test_without_start_edges_a_chain_runs_from_its_first_node() -> None:
    graph = make_graph(["a", "b", "c"], [("a", "b"), ("b", "c")])

    runner, final = await run(graph)

    assert runner.calls == ["a", "b", "c"]
    assert final["outputs"] == {"a": {"ran": "a"}, "b": {"ran": "b"}, "c": {"ran": "c"}}


async def test_a_node_without_outgoing_edges_ends_its_branch() -> None:
    graph = make_graph(["a", "b", "c", "d"], [("a", "b"), ("c", "d")])

    runner, final = await run(graph)

    assert runner.calls == ["a", "b"]
    assert set(final["outputs"]) == {"a", "b"}


async def test_edge_to_end_ends_the_run() -> None:
    graph = make_graph(["a", "b"], [("__start__", "a"), ("a", "__end__"), ("b", "a")])

    runner, _ = await run(graph)

    assert runner.calls == ["a"]


async def test_input_is_visible_to_every_node() -> None:
    graph = make_graph(["a", "b"], [("a", "b")])

    runner, final = await run(graph, run_input={"word": "hello"})

    assert runner.seen["b"]["input"] == {"word": "hello"}
    assert runner.seen["b"]["outputs"] == {"a": {"ran": "a"}}
    assert final["input"] == {"word": "hello"}


# -- conditions -------------------------------------------------------------------------------

BRANCH = make_graph(
    ["a", "yes", "no"],
    [("a", "yes", "input.go == `true`"), ("a", "no", "input.go != `true`")],
)


async def test_condition_true_takes_its_branch() -> None:
    runner, _ = await run(BRANCH, run_input={"go": True})

    assert runner.calls == ["a", "yes"]


async def test_condition_false_takes_the_other_branch() -> None:
    runner, _ = await run(BRANCH, run_input={"go": False})

    assert runner.calls == ["a", "no"]


async def test_condition_reads_outputs_of_earlier_nodes() -> None:
    graph = make_graph(
        ["check", "big", "small"],
        [
            ("check", "big", "outputs.check.size > `10`"),
            ("check", "small", "outputs.check.size <= `10`"),
        ],
    )
    runner = FakeRunner({"check": lambda state, n: {"size": state["input"]["size"]}})

    await run(graph, runner, {"size": 42})

    assert runner.calls == ["check", "big"]


CONDITION_ON_V = make_graph(["a", "b"], [("a", "b", "input.v")])


@pytest.mark.parametrize("value", [None, False, "", [], {}], ids=repr)
async def test_falsy_condition_is_not_taken(value: Any) -> None:
    runner, _ = await run(CONDITION_ON_V, run_input={"v": value})

    assert runner.calls == ["a"]


async def test_missing_value_is_not_taken() -> None:
    runner, _ = await run(CONDITION_ON_V, run_input={})

    assert runner.calls == ["a"]


# JMESPath truthiness: only false, null, "", [] and {} are false; 0 is true.
@pytest.mark.parametrize("value", [True, "no", [0], {"k": None}, 1, 0, 0.0], ids=repr)
async def test_truthy_condition_is_taken(value: Any) -> None:
    runner, _ = await run(CONDITION_ON_V, run_input={"v": value})

    assert runner.calls == ["a", "b"]


async def test_no_taken_edge_ends_the_run() -> None:
    graph = make_graph(["a", "b", "c"], [("a", "b", "input.left"), ("a", "c", "input.right")])

    runner, final = await run(graph, run_input={"left": False, "right": None})

    assert runner.calls == ["a"]
    assert set(final["outputs"]) == {"a"}


async def test_unconditional_edge_beside_a_conditional_one_is_always_taken() -> None:
    graph = make_graph(["a", "b", "c"], [("a", "b"), ("a", "c", "input.extra")])

    runner, _ = await run(graph, run_input={"extra": False})

    assert runner.calls == ["a", "b"]


@pytest.mark.parametrize(("stop", "expected"), [(True, ["a"]), (False, ["a", "b"])])
async def test_conditional_edge_to_end_stops_the_run(stop: bool, expected: list[str]) -> None:
    graph = make_graph(["a", "b"], [("a", "__end__", "input.stop"), ("a", "b", "!(input.stop)")])

    runner, _ = await run(graph, run_input={"stop": stop})

    assert runner.calls == expected


# -- fan-out and fan-in -----------------------------------------------------------------------


async def test_fan_out_runs_both_branches_then_the_join_once() -> None:
    graph = make_graph(
        ["a", "b", "c", "join"], [("a", "b"), ("a", "c"), ("b", "join"), ("c", "join")]
    )

    runner, _ = await run(graph)

    assert runner.calls[0] == "a"
    assert sorted(runner.calls[1:3]) == ["b", "c"]
    assert runner.calls[3:] == ["join"]


async def test_join_after_branches_of_unequal_length_runs_once() -> None:
    # The LangGraph fan-in trap: with plain edges `join` would run after `d` and again after `c`.
    graph = make_graph(
        ["a", "b", "c", "d", "join"],
        [("a", "b"), ("b", "c"), ("c", "join"), ("a", "d"), ("d", "join")],
    )

    runner, _ = await run(graph)

    assert runner.count("join") == 1
    assert runner.calls[-1] == "join"
    assert sorted(runner.calls) == ["a", "b", "c", "d", "join"]


async def test_join_sees_the_outputs_of_every_branch() -> None:
    graph = make_graph(
        ["a", "b", "c", "d", "join"],
        [("a", "b"), ("b", "c"), ("c", "join"), ("a", "d"), ("d", "join")],
    )

    runner, _ = await run(graph)

    assert set(runner.seen["join"]["outputs"]) == {"a", "b", "c", "d"}


async def test_outputs_of_parallel_branches_are_merged() -> None:
    graph = make_graph(["a", "left", "right"], [("a", "left"), ("a", "right")])
    runner = FakeRunner(
        {"left": lambda state, n: {"side": "L"}, "right": lambda state, n: {"side": "R"}}
    )

    _, final = await run(graph, runner)

    assert final["outputs"] == {"a": {"ran": "a"}, "left": {"side": "L"}, "right": {"side": "R"}}


async def test_join_after_a_branch_not_taken_runs_once() -> None:
    graph = make_graph(
        ["a", "b", "c", "join"],
        [("a", "b", "input.b"), ("a", "c", "input.c"), ("b", "join"), ("c", "join")],
    )

    runner, _ = await run(graph, run_input={"b": True, "c": False})

    assert runner.calls == ["a", "b", "join"]


async def test_wide_fan_out_with_unequal_branches_joins_once() -> None:
    graph = make_graph(
        ["a", "b1", "c1", "c2", "d1", "d2", "d3", "join"],
        [
            ("a", "b1"),
            ("b1", "join"),
            ("a", "c1"),
            ("c1", "c2"),
            ("c2", "join"),
            ("a", "d1"),
            ("d1", "d2"),
            ("d2", "d3"),
            ("d3", "join"),
        ],
    )

    runner, _ = await run(graph)

    assert runner.count("join") == 1
    assert runner.calls[-1] == "join"
    assert len(runner.calls) == 8


# -- loops ------------------------------------------------------------------------------------


async def test_loop_with_a_conditional_exit_terminates() -> None:
    graph = make_graph(
        ["work", "done"],
        [
            ("work", "work", "outputs.work.n < `3`"),
            ("work", "done", "outputs.work.n >= `3`"),
        ],
    )
    runner = FakeRunner({"work": lambda state, n: {"n": n}})

    _, final = await run(graph, runner)

    assert runner.calls == ["work", "work", "work", "done"]
    assert final["outputs"]["work"] == {"n": 3}


async def test_two_node_loop_runs_until_its_condition_says_stop() -> None:
    graph = make_graph(
        ["fetch", "check", "report"],
        [
            ("fetch", "check"),
            ("check", "fetch", "!(outputs.check.ok)"),
            ("check", "report", "outputs.check.ok"),
        ],
    )
    runner = FakeRunner({"check": lambda state, n: {"ok": n >= 2}})

    await run(graph, runner)

    assert runner.calls == ["fetch", "check", "fetch", "check", "report"]


async def test_loop_head_with_a_start_edge_still_loops() -> None:
    # `fetch` has two incoming edges (from __start__ and the loop): it is a join, yet must rerun.
    graph = make_graph(
        ["fetch", "check", "report"],
        [
            ("__start__", "fetch"),
            ("fetch", "check"),
            ("check", "fetch", "!(outputs.check.ok)"),
            ("check", "report", "outputs.check.ok"),
        ],
    )
    runner = FakeRunner({"check": lambda state, n: {"ok": n >= 2}})

    await run(graph, runner)

    assert runner.calls == ["fetch", "check", "fetch", "check", "report"]


async def test_fan_out_and_join_inside_a_loop_join_once_per_round() -> None:
    graph = make_graph(
        ["a", "b", "c", "join"],
        [("a", "b"), ("a", "c"), ("b", "join"), ("c", "join"), ("join", "a", "outputs.join.again")],
    )
    runner = FakeRunner({"join": lambda state, n: {"again": n < 2}})

    await run(graph, runner)

    assert runner.count("join") == 2
    assert runner.count("a") == 2
    assert runner.calls[-1] == "join"
