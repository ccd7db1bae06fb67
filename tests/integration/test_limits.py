"""Limits from `[limits]`, each answered with a status and a `detail`: ids, event size, JMESPath
conditions, WebSocket messages and clients; and request bodies validated strictly."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType

from adapters.http.keys import SOCKETS
from tests.integration.conftest import Api, ApiFactory, linear, until

P = "/api/projects/acme/workflows"
WS = "/api/projects/acme/ws"


async def problem(api: Api, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    response = await api.client.request(method, path, json=body)
    data = await response.json(content_type=None)
    assert response.content_type == "application/problem+json", data
    assert data["detail"]
    return response.status, data


# -- ids ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "detail"),
    [
        (f"/api/projects/{'p' * 129}/workflows/graphs", f"project '{'p' * 100}...' not found"),
        ("/api/projects/-acme/workflows/runs", "project '-acme' not found"),
        (f"{P}/graphs/g%20h", "graph 'g h' not found"),
        (f"{P}/graphs/{'g' * 129}", f"graph '{'g' * 100}...' not found"),
        (f"{P}/runs/nope", "run 'nope' not found"),
        (f"{P}/runs/5F0E0B3E-1D5C-4E0A-9B1A-2C3D4E5F6A7B", "not found"),
        (f"{P}/runs/5f0e0b3e1d5c4e0a9b1a2c3d4e5f6a7b/status", "not found"),
    ],
)
async def test_an_id_that_cannot_be_one_is_not_found(api: Api, path: str, detail: str) -> None:
    status, body = await problem(api, "GET", path)

    assert status == 404
    assert detail in body["detail"]


async def test_the_longest_id_is_still_an_id(api: Api) -> None:
    longest = "a" + "b" * 127
    await api.graph(linear(longest, "count"), project=longest)

    graphs = await api.call(
        "GET", f"/api/projects/{longest}/workflows/graphs/{longest}", status=200
    )
    assert graphs["id"] == longest


async def test_a_websocket_for_a_project_that_cannot_be_one_is_not_found(api: Api) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await api.client.ws_connect("/api/projects/a%20b/ws")

    assert refused.value.status == 404


async def test_a_filter_that_cannot_be_a_graph_id_is_a_400(api: Api) -> None:
    status, body = await problem(api, "GET", f"{P}/runs?workflow_id=a%20b")

    assert status == 400
    assert body["detail"] == "query parameter 'workflow_id' is not a valid graph id: 'a b'"


# -- event payload size ------------------------------------------------------------------------

SMALL_EVENTS = {"CORTEXD_LIMITS__MAX_EVENT_BYTES": "16384"}  # leaves 12288 for the payload


async def test_a_graph_that_would_make_too_large_an_event_is_a_413(make_api: ApiFactory) -> None:
    api = await make_api(**SMALL_EVENTS)
    graph = linear("g", "count") | {"description": "d" * 13_000}

    for path in [f"{P}/graphs", f"{P}/graphs/validate"]:
        status, body = await problem(api, "POST", path, graph)
        assert status == 413
        assert "events are limited to 16384 bytes, which leaves room for 12288" in body["detail"]
    await api.graph(graph | {"description": "d" * 11_000})  # just fits
    status, _ = await problem(api, "PUT", f"{P}/graphs/g", graph)
    assert status == 413


async def test_a_run_input_that_would_make_too_large_an_event_is_a_413(
    make_api: ApiFactory,
) -> None:
    api = await make_api(**SMALL_EVENTS)
    await api.graph(linear("g", "gate"))
    big = {"text": "x" * 13_000}

    status, body = await problem(api, "POST", f"{P}/runs", {"workflow_id": "g", "input": big})

    assert status == 413
    assert body["detail"].startswith("the run input is 13012 bytes; events are limited")
    run_id = await api.start("g", {"text": "small"})
    await api.arrived()
    await api.call("POST", f"{P}/runs/{run_id}/pause", status=200)
    status, body = await problem(api, "POST", f"{P}/runs/{run_id}/resume", {"value": big})
    assert status == 413
    assert body["detail"].startswith("the resume value is")
    status, body = await problem(api, "POST", f"{P}/runs/{run_id}/execute", {"input": big})
    assert status == 413
    api.kit.gate("default").set()
    await api.call("POST", f"{P}/runs/{run_id}/resume", {}, status=200)
    await api.idle()


async def test_the_run_input_limit_still_applies_below_the_event_limit(
    make_api: ApiFactory,
) -> None:
    api = await make_api(CORTEXD_LIMITS__MAX_RUN_INPUT_BYTES="100")
    await api.graph(linear("g", "count"))

    body = {"workflow_id": "g", "input": {"text": "x" * 100}}
    status, problem_body = await problem(api, "POST", f"{P}/runs", body)

    assert status == 413
    assert problem_body["detail"] == "run input is 112 bytes; the limit is 100"


# -- conditions --------------------------------------------------------------------------------


async def test_a_condition_over_the_configured_length_is_a_422(make_api: ApiFactory) -> None:
    condition = "input.a == `1` && input.b == `2`"
    api = await make_api(CORTEXD_LIMITS__MAX_CONDITION_BYTES=str(len(condition) - 1))
    graph = linear("g", "count", "count")
    graph["edges"][0]["condition"] = condition

    status, body = await problem(api, "POST", f"{P}/graphs", graph)

    assert status == 422
    message = f"{len(condition)} bytes; at most {len(condition) - 1}"
    assert body["problems"] == [{"path": "/edges/0/condition", "message": message}]
    graph["edges"][0]["condition"] = condition.replace(" == ", "==", 1)
    await api.graph(graph)


# -- WebSocket ---------------------------------------------------------------------------------


async def test_a_websocket_message_over_the_limit_closes_the_socket_with_1009(
    make_api: ApiFactory,
) -> None:
    api = await make_api(CORTEXD_LIMITS__MAX_WS_MESSAGE_BYTES="1024")

    async with api.client.ws_connect(WS) as ws:
        small = {"type": "subscribe", "run_id": "r" * 900}
        await ws.send_str(json.dumps(small))
        reply = await asyncio.wait_for(ws.receive(), 10)
        assert json.loads(reply.data)["type"] == "subscribed"
        await ws.send_str(json.dumps({"type": "subscribe", "run_id": "r" * 1100}))
        message = await asyncio.wait_for(ws.receive(), 10)

    assert message.type is WSMsgType.CLOSE
    assert message.data == 1009
    health = await api.client.get("/healthz")
    assert health.status == 200


def _token(name: str, secret: str) -> dict[str, Any]:
    digest = hashlib.sha256(secret.encode()).hexdigest()
    return {"name": name, "sha256": digest, "projects": ["*"], "role": "read"}


async def test_websocket_clients_per_token_are_limited(make_api: ApiFactory) -> None:
    tokens = [_token("one", "first-secret"), _token("two", "second-secret")]
    api = await make_api(
        CORTEXD_AUTH__ENABLED="true",
        CORTEXD_AUTH__TOKENS=json.dumps(tokens),
        CORTEXD_LIMITS__MAX_WS_CLIENTS_PER_TOKEN="2",
    )
    sockets = api.client.app[SOCKETS]
    one = f"{WS}?access_token=first-secret"

    first = await api.client.ws_connect(one)
    second = await api.client.ws_connect(one)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await api.client.ws_connect(one)
    assert refused.value.status == 429
    other = await api.client.ws_connect(f"{WS}?access_token=second-secret")  # its own count

    await first.close()
    await until(lambda: sockets.clients == 2)
    third = await api.client.ws_connect(one)  # room again
    for ws in (second, other, third):
        await ws.close()


async def test_the_429_says_why(make_api: ApiFactory) -> None:
    api = await make_api(CORTEXD_LIMITS__MAX_WS_CLIENTS="1")

    async with api.client.ws_connect(WS):
        response = await api.client.get(
            WS,
            headers={
                "Connection": "Upgrade",
                "Upgrade": "websocket",
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            },
        )
        body = await response.json(content_type=None)

    assert response.status == 429
    assert body["detail"] == ("1 WebSocket clients are connected, the most allowed; retry later")


async def test_websocket_clients_in_total_are_limited_with_auth_off(make_api: ApiFactory) -> None:
    api = await make_api(CORTEXD_LIMITS__MAX_WS_CLIENTS="2")

    async with api.client.ws_connect(WS), api.client.ws_connect("/api/projects/other/ws"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await api.client.ws_connect(WS)

    assert refused.value.status == 429


# -- strict request bodies ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"workflow_id": False}, "/workflow_id"),
        ({"workflow_id": 5}, "/workflow_id"),
        ({"workflow_id": "a b"}, "/workflow_id"),
        ({"workflow_id": "g", "input": []}, "/input"),
        ({"workflow_id": "g", "input": "{}"}, "/input"),
        ({"workflow_id": "g", "extra": 1}, "/extra"),
    ],
)
async def test_a_run_body_is_validated_strictly(api: Api, body: Any, path: str) -> None:
    await api.graph(linear("g", "count"))

    status, problem_body = await problem(api, "POST", f"{P}/runs", body)

    assert status == 422
    assert [p["path"] for p in problem_body["problems"]] == [path]


@pytest.mark.parametrize("from_start", ["true", 1, 0, "yes", None])
async def test_from_start_must_be_a_real_boolean(api: Api, from_start: Any) -> None:
    await api.graph(linear("g", "fail"))
    run_id = await api.start("g")
    await api.idle()

    status, body = await problem(
        api, "POST", f"{P}/runs/{run_id}/execute", {"from_start": from_start}
    )

    assert status == 422
    assert body["problems"][0]["path"] == "/from_start"


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"x": False}, "/nodes/0/x"),
        ({"y": "10"}, "/nodes/0/y"),
        ({"retry": {"max_attempts": True}}, "/nodes/0/retry/max_attempts"),
        ({"retry": {"max_attempts": 2.0}}, "/nodes/0/retry/max_attempts"),
        ({"label": 7}, "/nodes/0/label"),
        ({"config": []}, "/nodes/0/config"),
    ],
)
async def test_a_graph_is_validated_strictly(api: Api, change: dict[str, Any], path: str) -> None:
    graph = linear("g", "count")
    graph["nodes"][0].update(change)

    status, body = await problem(api, "POST", f"{P}/graphs", graph)

    assert status == 422
    assert path in [p["path"] for p in body["problems"]]


async def test_integers_are_still_numbers_for_coordinates(api: Api) -> None:
    graph = linear("g", "count")
    graph["nodes"][0].update({"x": 100, "y": -3})

    stored = await api.graph(graph)

    assert (stored["nodes"][0]["x"], stored["nodes"][0]["y"]) == (100.0, -3.0)
