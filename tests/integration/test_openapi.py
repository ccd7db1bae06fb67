"""The OpenAPI 3.1 document at /openapi.json: valid, complete, and true to what is served."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from aiohttp import web
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from adapters.http.openapi import document
from tests.integration.conftest import Api, ApiFactory, linear

P = "/api/projects/acme/workflows"
METHODS = {"GET", "POST", "PUT", "DELETE", "PATCH"}


def undocumented(app: web.Application, doc: dict[str, Any]) -> list[str]:
    """Every route of the app (HEAD aside: aiohttp adds it to each GET) the document lacks."""
    missing = []
    for route in app.router.routes():
        if route.method not in METHODS or route.resource is None:
            continue
        path = route.resource.canonical
        if route.method.lower() not in doc["paths"].get(path, {}):
            missing.append(f"{route.method} {path}")
    return missing


async def served(api: Api) -> dict[str, Any]:
    response = await api.client.get("/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    doc: dict[str, Any] = await response.json()
    return doc


async def test_the_document_is_valid_openapi_3_1(api: Api) -> None:
    doc = await served(api)

    validate(doc)
    assert doc["openapi"] == "3.1.0"


async def test_every_route_of_the_app_is_in_the_document(api: Api) -> None:
    doc = await served(api)

    assert undocumented(api.client.app, doc) == []
    assert "/metrics" in doc["paths"]


async def test_a_route_missing_from_the_document_is_found(api: Api) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    app = web.Application()
    app.router.add_get("/api/projects/{project_id}/secret-door", handler)
    app.router.add_put("/healthz", handler)

    assert undocumented(app, await served(api)) == [
        "GET /api/projects/{project_id}/secret-door",
        "PUT /healthz",
    ]


async def test_the_document_lists_only_routes_the_app_has(api: Api) -> None:
    routes = {
        (route.method, route.resource.canonical)
        for route in api.client.app.router.routes()
        if route.resource is not None
    }
    doc = await served(api)

    for path, operations in doc["paths"].items():
        for method in operations:
            assert (method.upper(), path) in routes


async def test_the_document_is_open_when_auth_is_on(make_api: ApiFactory) -> None:
    api = await make_api(CORTEXD_AUTH__ENABLED="true")

    doc = await served(api)

    assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    assert doc["paths"]["/healthz"]["get"]["security"] == []
    assert (
        "security" not in doc["paths"]["/api/projects/{project_id}/workflows/graphs"]["get"]
    )  # the default: a bearer token
    assert doc["security"] == [{"bearer": []}]


def test_request_bodies_are_strict_in_the_document_too() -> None:
    schemas = document()["components"]["schemas"]

    assert schemas["ExecuteBody"]["properties"]["from_start"]["type"] == "boolean"
    assert schemas["ExecuteBody"]["additionalProperties"] is False
    run_input = schemas["CreateRunBody"]["properties"]["input"]["anyOf"]
    assert {"type": "object", "additionalProperties": True} in run_input
    assert schemas["CreateRunBody"]["required"] == ["workflow_id"]


def test_schemas_come_from_the_domain_models() -> None:
    schemas = document()["components"]["schemas"]

    for name in ["Graph", "GraphSpec", "Run", "NodeState", "Event", "RunStatus"]:
        assert name in schemas
    assert set(schemas["Run"]["properties"]) >= {"id", "workflow_id", "status", "input", "prompt"}


def test_an_invalid_document_would_be_caught() -> None:
    doc = document()
    broken = doc | {"paths": {"/x": {"get": {"responses": {"200": {"content": 7}}}}}}

    with pytest.raises(OpenAPIValidationError):
        validate(broken)


async def test_answers_conform_to_their_documented_schemas(api: Api) -> None:
    doc = await served(api)
    await api.graph(linear("g", "count", "count"))
    run_id = await api.start("g", {"n": 1})
    await api.idle()

    def check(path: str, method: str, status: int, body: Any) -> None:
        template = next(p for p in doc["paths"] if _matches(p, path))
        content = doc["paths"][template][method]["responses"][str(status)]["content"]
        schema = next(iter(content.values()))["schema"]
        jsonschema.validate(body, {**schema, "components": doc["components"]})

    for path in [
        f"{P}/graphs",
        f"{P}/graphs/g",
        f"{P}/runs",
        f"{P}/runs/{run_id}",
        f"{P}/runs/{run_id}/status",
        f"{P}/runs/{run_id}/events",
        "/api/node-types",
        "/api/plugins",
        "/healthz",
        "/readyz",
    ]:
        check(path, "get", 200, await api.call("GET", path, status=200))
    check(f"{P}/graphs/nope", "get", 404, await api.call("GET", f"{P}/graphs/nope", status=404))
    bad = {"name": "x", "nodes": [{"id": "n", "type": "nope"}]}
    check(f"{P}/graphs", "post", 422, await api.call("POST", f"{P}/graphs", bad, status=422))


def _matches(template: str, path: str) -> bool:
    parts, wanted = template.split("/"), path.split("/")
    return len(parts) == len(wanted) and all(
        t == w or (t.startswith("{") and t.endswith("}"))
        for t, w in zip(parts, wanted, strict=True)
    )
