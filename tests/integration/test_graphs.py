"""Graphs over HTTP: create, read, replace (versions), delete, validate; bad input."""

from __future__ import annotations

from typing import Any

from tests.integration.conftest import Api, P, linear

ON_BOTH_STORES = True  # every test here runs on SQLite and on PostgreSQL

ORIGINAL_SHAPE: dict[str, Any] = {
    "id": "legacy",
    "name": "From the original service",
    "description": "nodes without type or config",
    "nodes": [
        {"id": "a", "label": "A", "x": 10.5, "y": 20.0},
        {"id": "b", "label": "B", "x": 110.0, "y": 20.0},
    ],
    "edges": [
        {"id": "e0", "source": "__start__", "target": "a"},
        {"id": "e1", "source": "a", "target": "b"},
        {"id": "e2", "source": "b", "target": "__end__"},
    ],
}


async def test_a_graph_of_the_original_service_loads_and_runs(api: Api) -> None:
    graph = await api.graph(ORIGINAL_SHAPE)
    assert graph["version"] == 1
    assert graph["project_id"] == "acme"
    assert [n["type"] for n in graph["nodes"]] == ["passthrough", "passthrough"]
    assert graph["nodes"][0]["x"] == 10.5
    assert await api.call("GET", f"{P}/graphs/legacy", status=200) == graph
    assert await api.call("GET", f"{P}/graphs", status=200) == [graph]

    run_id = await api.start("legacy", {"k": "v"})
    await api.idle()
    assert (await api.run(run_id))["status"] == "completed"


async def test_create_without_id_assigns_one(api: Api) -> None:
    spec = {k: v for k, v in ORIGINAL_SHAPE.items() if k != "id"}
    graph = await api.graph(spec)
    assert graph["id"]
    await api.call("GET", f"{P}/graphs/{graph['id']}", status=200)


async def test_create_an_existing_id_is_a_conflict(api: Api) -> None:
    await api.graph(ORIGINAL_SHAPE)
    body = await api.call("POST", f"{P}/graphs", ORIGINAL_SHAPE, 409)
    assert "already exists" in body["detail"]


async def test_replace_makes_a_new_version_and_keeps_created_at(api: Api) -> None:
    first = await api.graph(ORIGINAL_SHAPE)
    second = await api.call("PUT", f"{P}/graphs/legacy", {**ORIGINAL_SHAPE, "name": "v2"}, 200)
    assert second["version"] == 2
    assert second["name"] == "v2"
    assert second["created_at"] == first["created_at"]
    assert second["updated_at"] >= first["updated_at"]
    await api.call("PUT", f"{P}/graphs/missing", ORIGINAL_SHAPE | {"id": "missing"}, 404)
    mismatch = await api.call("PUT", f"{P}/graphs/legacy", ORIGINAL_SHAPE | {"id": "x"}, 422)
    assert mismatch["problems"][0]["path"] == "/id"


async def test_delete_refuses_while_runs_are_active_then_deletes(api: Api) -> None:
    await api.graph(linear("g", "gate"))
    run_id = await api.start("g")
    await api.arrived()
    body = await api.call("DELETE", f"{P}/graphs/g", status=409)
    assert "active run" in body["detail"]
    api.kit.gate("default").set()
    await api.idle()

    await api.call("DELETE", f"{P}/graphs/g", status=204)
    await api.call("GET", f"{P}/graphs/g", status=404)
    await api.call("DELETE", f"{P}/graphs/g", status=404)
    # The run of a deleted graph can still be read, with its status.
    status = await api.call("GET", f"{P}/runs/{run_id}/status", status=200)
    assert status["status"] == "completed"
    assert len(status["node_states"]) == 1


async def test_invalid_graph_is_422_with_every_problem_and_its_path(api: Api) -> None:
    graph = {
        "name": "bad",
        "nodes": [
            {"id": "a", "type": "delay", "config": {"seconds": "soon"}},
            {"id": "a"},
            {"id": "c", "type": "nope"},
        ],
        "edges": [{"source": "a", "target": "zz"}],
    }
    body = await api.call("POST", f"{P}/graphs", graph, 422)
    assert body["detail"] == "the graph is not valid"
    paths = {p["path"]: p["message"] for p in body["problems"]}
    assert "number" in paths["/nodes/0/config/seconds"]
    assert "duplicate" in paths["/nodes/1/id"]
    assert "unknown node type 'nope'" in paths["/nodes/2/type"]
    assert "zz" in paths["/edges/0/target"]
    assert await api.call("GET", f"{P}/graphs", status=200) == []


async def test_validate_endpoint_says_valid_or_lists_problems(api: Api) -> None:
    ok = await api.call("POST", f"{P}/graphs/validate", ORIGINAL_SHAPE, 200)
    assert ok == {"valid": True, "problems": []}
    loop = linear("loop", "passthrough", "passthrough")
    loop["edges"].append({"id": "back", "source": "n2", "target": "n1"})
    body = await api.call("POST", f"{P}/graphs/validate", loop, 422)
    assert "cycle" in body["problems"][0]["message"]
    assert await api.call("GET", f"{P}/graphs", status=200) == []  # validate stores nothing


async def test_missing_fields_are_reported_with_paths(api: Api) -> None:
    body = await api.call("POST", f"{P}/graphs", {"nodes": [{"label": "no id"}]}, 422)
    paths = {p["path"] for p in body["problems"]}
    assert {"/name", "/nodes/0/id"} <= paths


async def test_a_graph_without_nodes_is_stored_but_cannot_run(api: Api) -> None:
    await api.graph({"id": "empty", "name": "draft"})
    body = await api.call("POST", f"{P}/runs", {"workflow_id": "empty"}, 422)
    assert "no nodes" in body["detail"]


async def test_malformed_and_hostile_bodies_get_a_4xx_with_detail(api: Api) -> None:
    client = api.client
    cases: list[tuple[str, str, bytes, int, str]] = [
        ("POST", f"{P}/graphs", b"{not json", 400, "malformed JSON"),
        ("POST", f"{P}/graphs", b"", 400, "JSON body"),
        ("POST", f"{P}/runs", b"[1, 2]", 400, "JSON object"),
        ("POST", f"{P}/runs", b"\xff\xfe", 400, "UTF-8"),
        ("POST", f"{P}/runs", b"[" * 100_000 + b"]" * 100_000, 400, "nested"),
        ("POST", f"{P}/runs", b'{"workflow_id": "g", "extra": 1}', 422, "not valid"),
        ("POST", f"{P}/runs", b'{"workflow_id": 5}', 422, "not valid"),
        ("POST", f"{P}/graphs", b"x" * 2_000_000, 413, "request body size"),
        ("GET", f"{P}/runs/x/events?since=abc", b"", 400, "since"),
        ("GET", "/no/such/path", b"", 404, "no such endpoint"),
        ("DELETE", f"{P}/runs", b"", 405, "not allowed"),
    ]
    for method, path, data, status, words in cases:
        response = await client.request(method, path, data=data)
        text = await response.text()
        assert response.status == status, (path, data[:20], response.status, text)
        assert response.content_type == "application/problem+json"
        assert words.lower() in (await response.json())["detail"].lower(), text
        assert "Traceback" not in text
    assert (await client.get("/healthz")).status == 200


async def test_run_input_must_be_an_object_within_the_limit(api: Api) -> None:
    await api.graph(linear("g", "passthrough"))
    await api.call("POST", f"{P}/runs", {"workflow_id": "g", "input": [1]}, 422)
    big = {"blob": "x" * 300_000}
    body = await api.call("POST", f"{P}/runs", {"workflow_id": "g", "input": big}, 413)
    assert "limit" in body["detail"]


async def test_catalogue_health_and_readiness(api: Api) -> None:
    types = await api.call("GET", "/api/node-types", status=200)
    by_name = {t["name"]: t for t in types}
    assert {"passthrough", "delay"} <= set(by_name)
    assert by_name["delay"]["config_schema"]["required"] == ["seconds"]
    assert set(by_name["delay"]) == {"name", "title", "description", "config_schema"}
    plugins = await api.call("GET", "/api/plugins", status=200)
    basic = next(p for p in plugins if p["name"] == "plugins.basic")
    assert basic["source"] == "builtin"
    assert set(basic["node_types"]) == {"passthrough", "delay"}
    assert await api.call("GET", "/healthz", status=200) == {"status": "ok"}
    ready = await api.call("GET", "/readyz", status=200)
    assert ready["status"] == "ready"


async def test_every_version_of_a_graph_can_be_read_by_number(api: Api) -> None:
    await api.graph(linear("g", "passthrough"))
    await api.call("PUT", f"{P}/graphs/g", linear("g", "passthrough", "count"), 200)
    first = await api.call("GET", f"{P}/graphs/g?version=1", status=200)
    assert (first["version"], len(first["nodes"])) == (1, 1)
    current = await api.call("GET", f"{P}/graphs/g", status=200)
    assert (current["version"], len(current["nodes"])) == (2, 2)
    missing = await api.call("GET", f"{P}/graphs/g?version=3", status=404)
    assert "version 3" in missing["detail"]
    for bad in ("0", "x", "1.5", "-1"):
        body = await api.call("GET", f"{P}/graphs/g?version={bad}", status=400)
        assert "version" in body["detail"]
    await api.call("GET", f"{P}/graphs/other?version=1", status=404)
