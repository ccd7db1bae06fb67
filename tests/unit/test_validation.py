"""Graph validation: what a client is told about a graph it sends, each problem with its path."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import pytest

from core.errors import Problem
from core.nodes import NodeType
from core.validation import GraphLimits, parse_graph, validate_graph

JSON = dict[str, Any]


@dataclass
class FakeNodeType:
    name: str
    config_schema: JSON = field(default_factory=lambda: {"type": "object"})
    title: str = "fake"
    description: str = "a node type for tests"

    async def execute(self, ctx: Any, config: JSON, state: JSON) -> JSON:
        return {}


NODE_TYPES: dict[str, NodeType] = {
    "passthrough": FakeNodeType("passthrough"),
    "delay": FakeNodeType(
        "delay",
        {
            "type": "object",
            "properties": {"seconds": {"type": "number", "minimum": 0}},
            "required": ["seconds"],
        },
    ),
}


def node(node_id: str, **fields: Any) -> JSON:
    return {"id": node_id, "label": node_id.upper(), "x": 0, "y": 0, **fields}


def edge(source: str, target: str, **fields: Any) -> JSON:
    return {"id": f"{source}-{target}", "source": source, "target": target, **fields}


def graph(nodes: list[Any], edges: list[JSON], **fields: Any) -> JSON:
    return {"id": "wf", "name": "Workflow", "nodes": nodes, "edges": edges, **fields}


def check(data: Any, limits: GraphLimits | None = None) -> list[Problem]:
    """Every problem a client would be told about `data` (parse, then validate)."""
    spec, problems = parse_graph(data)
    if spec is None:
        assert problems, "an unparsable graph must say why"
        return problems
    return validate_graph(spec, NODE_TYPES, limits or GraphLimits())


def paths(problems: list[Problem]) -> list[str]:
    return [p.path for p in problems]


def only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, problems
    return problems[0]


def chain(*ids: str) -> list[JSON]:
    return [edge(a, b) for a, b in itertools.pairwise(ids)]


# -- the original service's graphs ------------------------------------------------------------

ORIGINAL = {
    "id": "wf-1",
    "name": "Original",
    "description": "as the original service stored it",
    "nodes": [
        {"id": "fetch", "label": "Fetch", "x": 10, "y": 20},
        {"id": "parse", "label": "Parse", "x": 110.5, "y": 20},
    ],
    "edges": [
        {"id": "e1", "source": "__start__", "target": "fetch"},
        {"id": "e2", "source": "fetch", "target": "parse"},
        {"id": "e3", "source": "parse", "target": "__end__"},
    ],
}


def test_original_service_graph_is_valid() -> None:
    assert check(ORIGINAL) == []


def test_original_service_nodes_default_to_passthrough() -> None:
    spec, _ = parse_graph(ORIGINAL)

    assert spec is not None
    assert [n.type for n in spec.nodes] == ["passthrough", "passthrough"]
    assert [n.config for n in spec.nodes] == [{}, {}]


def test_edge_without_id_gets_one() -> None:
    spec, problems = parse_graph(graph([node("a"), node("b")], [{"source": "a", "target": "b"}]))

    assert problems == []
    assert spec is not None
    assert spec.edges[0].id == "a->b"


# -- parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [[1, 2], "graph", None, 42])
def test_non_object_is_rejected_at_the_root(data: Any) -> None:
    problem = only(check(data))

    assert problem.path == ""
    assert "JSON object" in problem.message


def test_missing_name_is_reported_at_its_path() -> None:
    data: JSON = {"nodes": [], "edges": []}

    problem = only(check(data))

    assert problem.path == "/name"
    assert "required" in problem.message.lower()


def test_node_without_id_is_reported_at_its_path() -> None:
    data = graph([node("a"), {"label": "no id"}], [])

    assert paths(check(data)) == ["/nodes/1/id"]


def test_misspelt_field_is_reported_not_ignored() -> None:
    data = graph([node("a", confg={"seconds": 1})], [])

    problem = only(check(data))

    assert problem.path == "/nodes/0/confg"
    assert "not permitted" in problem.message


def test_node_that_is_not_an_object_is_reported() -> None:
    assert paths(check(graph(["a"], []))) == ["/nodes/0"]


# -- nodes ------------------------------------------------------------------------------------


def test_duplicate_node_id_is_reported_on_the_second() -> None:
    data = graph([node("a"), node("b"), node("a")], chain("a", "b"))

    problem = only(check(data))

    assert problem.path == "/nodes/2/id"
    assert "duplicate node id 'a'" in problem.message


@pytest.mark.parametrize("bad_id", ["a b", "../x", "__start__", "__end__", "", "x/y", "-a"])
def test_invalid_node_id_is_reported(bad_id: str) -> None:
    data = graph([node("ok"), node(bad_id)], [])

    problem = only(check(data))

    assert problem.path == "/nodes/1/id"
    assert "not a valid node id" in problem.message
    assert repr(bad_id) in problem.message


@pytest.mark.parametrize("good_id", ["a", "node-1", "step_2", "ns:fetch", "v1.2", "A" * 128])
def test_valid_node_ids_are_accepted(good_id: str) -> None:
    assert check(graph([node(good_id)], [])) == []


def test_invalid_graph_id_is_reported() -> None:
    problem = only(check(graph([node("a")], [], id="my graph")))

    assert problem.path == "/id"


def test_unknown_node_type_lists_the_known_ones() -> None:
    data = graph([node("a"), node("b", type="reverse")], chain("a", "b"))

    problem = only(check(data))

    assert problem.path == "/nodes/1/type"
    assert "unknown node type 'reverse'" in problem.message
    assert "delay" in problem.message
    assert "passthrough" in problem.message


def test_config_failing_the_schema_points_at_the_key() -> None:
    data = graph([node("a"), node("wait", type="delay", config={"seconds": "soon"})], [])

    problem = only(check(data))

    assert problem.path == "/nodes/1/config/seconds"
    assert "'soon'" in problem.message
    assert "number" in problem.message


def test_config_violating_a_bound_points_at_the_key() -> None:
    data = graph([node("wait", type="delay", config={"seconds": -1})], [])

    problem = only(check(data))

    assert problem.path == "/nodes/0/config/seconds"
    assert "minimum" in problem.message


def test_config_missing_a_required_key_points_at_the_config() -> None:
    problem = only(check(graph([node("wait", type="delay", config={})], [])))

    assert problem.path == "/nodes/0/config"
    assert "'seconds' is a required property" in problem.message


def test_config_matching_the_schema_is_valid() -> None:
    assert check(graph([node("wait", type="delay", config={"seconds": 1.5})], [])) == []


def test_every_bad_node_is_reported_at_once() -> None:
    data = graph(
        [node("a b"), node("b", type="nope"), node("c", type="delay", config={"seconds": "x"})],
        [],
    )

    assert paths(check(data)) == ["/nodes/0/id", "/nodes/1/type", "/nodes/2/config/seconds"]


# -- edges ------------------------------------------------------------------------------------


def test_duplicate_edge_id_is_reported_on_the_second() -> None:
    data = graph(
        [node("a"), node("b"), node("c")],
        [edge("a", "b", id="e1"), edge("b", "c", id="e1")],
    )

    problem = only(check(data))

    assert problem.path == "/edges/1/id"
    assert "duplicate edge id 'e1'" in problem.message


def test_edge_to_a_missing_node_is_reported() -> None:
    data = graph([node("a")], [edge("a", "ghost")])

    problem = only(check(data))

    assert problem.path == "/edges/0/target"
    assert "'ghost'" in problem.message


def test_edge_from_a_missing_node_is_reported() -> None:
    data = graph([node("a")], [edge("__start__", "a"), edge("ghost", "a")])

    problem = only(check(data))

    assert problem.path == "/edges/1/source"
    assert "'ghost'" in problem.message


def test_end_as_source_is_rejected() -> None:
    data = graph([node("a")], [edge("__end__", "a")])

    problem = only(check(data))

    assert problem.path == "/edges/0/source"
    assert "'__end__'" in problem.message


def test_start_as_target_is_rejected() -> None:
    data = graph([node("a")], [edge("a", "__start__")])

    problem = only(check(data))

    assert problem.path == "/edges/0/target"
    assert "'__start__'" in problem.message


def test_start_straight_to_end_is_valid() -> None:
    assert check(graph([node("a")], [edge("__start__", "__end__")])) == []


@pytest.mark.parametrize("condition", ["input.[", "outputs.a ==", "`unterminated", "a &&"])
def test_invalid_condition_is_reported(condition: str) -> None:
    data = graph([node("a"), node("b")], [edge("a", "b", condition=condition)])

    problem = only(check(data))

    assert problem.path == "/edges/0/condition"
    assert "invalid JMESPath" in problem.message


def test_valid_condition_is_accepted() -> None:
    data = graph([node("a"), node("b")], [edge("a", "b", condition="input.go == `true`")])

    assert check(data) == []


# -- cycles -----------------------------------------------------------------------------------


def test_cycle_without_a_conditional_edge_is_rejected() -> None:
    data = graph([node("a"), node("b"), node("c")], chain("a", "b", "c", "a"))

    problem = only(check(data))

    assert problem.path == "/edges"
    assert "cycle with no conditional exit" in problem.message
    assert "a, b, c" in problem.message


def test_cycle_with_a_conditional_exit_to_a_node_is_accepted() -> None:
    data = graph(
        [node("a"), node("b"), node("done")],
        [
            edge("a", "b"),
            edge("b", "a", condition="!(outputs.b.finished)"),
            edge("b", "done", condition="outputs.b.finished"),
        ],
    )

    assert check(data) == []


def test_cycle_with_a_conditional_exit_to_end_is_accepted() -> None:
    # The loop's way out may be to end the run: `b -> __end__` when b says it is finished.
    data = graph(
        [node("a"), node("b")],
        [
            edge("__start__", "a"),
            edge("a", "b"),
            edge("b", "a", condition="!(outputs.b.finished)"),
            edge("b", "__end__", condition="outputs.b.finished"),
        ],
    )

    assert check(data) == []


def test_self_loop_without_condition_is_rejected() -> None:
    data = graph([node("a"), node("b")], [edge("a", "a"), edge("a", "b")])

    problem = only(check(data))

    assert problem.path == "/edges"
    assert "cycle with no conditional exit: a" in problem.message


def test_self_loop_with_condition_is_accepted() -> None:
    data = graph([node("a")], [edge("a", "a", condition="outputs.a.again")])

    assert check(data) == []


def test_only_the_cycle_without_exit_is_named() -> None:
    data = graph(
        [node(n) for n in ("a", "b", "c", "d", "e")],
        [
            *chain("a", "b"),
            edge("b", "a", condition="outputs.b.again"),
            *chain("b", "c", "d", "c"),
            edge("d", "e"),
        ],
    )

    problem = only(check(data))

    assert problem.message.endswith("cycle with no conditional exit: c, d")


def test_diamond_is_not_a_cycle() -> None:
    data = graph(
        [node(n) for n in ("a", "b", "c", "d")],
        [*chain("a", "b", "d"), *chain("a", "c", "d")],
    )

    assert check(data) == []


DEEP = 3_000
ROOMY = GraphLimits(max_nodes=DEEP + 10, max_edges=DEEP + 10)


def deep_chain(n: int) -> tuple[list[JSON], list[JSON]]:
    ids = [f"n{i:05d}" for i in range(n)]
    return [node(i) for i in ids], chain(*ids)


def test_deep_chain_is_validated_without_recursion_error() -> None:
    nodes, edges = deep_chain(DEEP)

    assert check(graph(nodes, edges), ROOMY) == []


def test_deep_cycle_without_exit_is_found() -> None:
    nodes, edges = deep_chain(DEEP)
    edges.append(edge(nodes[-1]["id"], nodes[0]["id"]))

    problem = only(check(graph(nodes, edges), ROOMY))

    assert problem.path == "/edges"
    assert problem.message.startswith("cycle with no conditional exit: n00000, n00001")


def test_deep_cycle_with_exit_is_accepted() -> None:
    nodes, edges = deep_chain(DEEP)
    edges.append(edge(nodes[-1]["id"], nodes[0]["id"], condition="outputs.again"))

    assert check(graph(nodes, edges), ROOMY) == []


# -- limits -----------------------------------------------------------------------------------


def test_too_many_nodes_is_reported() -> None:
    data = graph([node(n) for n in ("a", "b", "c")], [])

    problem = only(check(data, GraphLimits(max_nodes=2)))

    assert problem.path == "/nodes"
    assert "3 nodes; at most 2" in problem.message


def test_too_many_edges_is_reported() -> None:
    data = graph([node(n) for n in ("a", "b", "c")], chain("a", "b", "c"))

    problem = only(check(data, GraphLimits(max_edges=1)))

    assert problem.path == "/edges"
    assert "2 edges; at most 1" in problem.message


def test_limits_are_inclusive() -> None:
    data = graph([node(n) for n in ("a", "b", "c")], chain("a", "b", "c"))

    assert check(data, GraphLimits(max_nodes=3, max_edges=2)) == []


def test_too_large_node_config_is_reported() -> None:
    data = graph([node("a"), node("b", config={"text": "x" * 200})], [])

    problem = only(check(data, GraphLimits(max_node_config_bytes=100)))

    assert problem.path == "/nodes/1/config"
    assert "at most 100" in problem.message


def test_a_concurrency_key_must_be_a_cheap_valid_expression() -> None:
    nodes = [node("a")]
    assert check(graph(nodes, [], concurrency={"limit": 2, "key": "customer.id"})) == []
    bad = check(graph(nodes, [], concurrency={"limit": 2, "key": "customer["}))
    assert [p.path for p in bad] == ["/concurrency/key"]
    costly = " | ".join(["[@, @][]"] * 7)
    assert [p.path for p in check(graph(nodes, [], concurrency={"limit": 1, "key": costly}))] == [
        "/concurrency/key"
    ]
    assert [p.path for p in check(graph(nodes, [], concurrency={"limit": 0}))] == [
        "/concurrency/limit"
    ]
