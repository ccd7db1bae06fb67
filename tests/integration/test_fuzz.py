"""Hostile input. schemathesis generates requests from the OpenAPI document, valid and invalid,
against the real server on a real socket (auth on, an admin token): no answer may be a 5xx, and
every answer must be one the document describes. Then hostile cases written by hand, each
answered with a 4xx and a `detail`, the daemon healthy after.

schemathesis is driven through ``from_dict`` (its fixture loader breaks on pytest 9.2), and the
server runs on a loop of its own in a thread, as schemathesis calls it synchronously.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from adapters.config import load_settings
from adapters.daemon import PluginSources, build_app
from adapters.http.openapi import document
from core.domain import RunStatus
from tests.integration.conftest import Api, ApiFactory, linear
from tests.support.process import free_port

TOKEN = "fuzz-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TOKENS = [
    {
        "name": "fuzz",
        "sha256": hashlib.sha256(TOKEN.encode()).hexdigest(),
        "projects": ["*"],
        "role": "admin",
    }
]
AUTH_ENV = {"CORTEXD_AUTH__ENABLED": "true", "CORTEXD_AUTH__TOKENS": json.dumps(TOKENS)}
# Enough to try every operation with valid and invalid data, small enough for CI: the whole
# module takes 12-15 s of test time on the project's 2-core machine (the schemathesis part ~10 s).
MAX_EXAMPLES = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


class ServerThread:
    """The real app on 127.0.0.1, served from a thread with an event loop of its own."""

    def __init__(self, env: dict[str, str]) -> None:
        self._settings = load_settings(None, env=env)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.url = f"http://127.0.0.1:{free_port()}"

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=60)

    async def _start(self) -> None:
        app = build_app(self._settings, PluginSources(use_entry_points=False))
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        port = int(self.url.rsplit(":", 1)[1])
        await web.TCPSite(self._runner, "127.0.0.1", port).start()

    def stop(self) -> None:
        if self._runner is not None:
            future = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
            future.result(timeout=60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    db = tmp_path_factory.mktemp("fuzz") / "cortexd.db"
    thread = ServerThread({"CORTEXD_STORAGE__PATH": str(db), **AUTH_ENV})
    thread.start()
    seed(thread.url)
    yield thread
    thread.stop()


def seed(url: str) -> None:
    """Graphs and runs in the fuzzed project-less store: lists longer than a small `limit`,
    so that answers with a `Link: rel="next"` are checked against the document too."""
    for project in ("0", "acme"):
        base = f"{url}/api/projects/{project}/workflows"
        for graph_id in ("a", "b", "c"):
            post(f"{base}/graphs", linear(graph_id, "passthrough"))
            post(f"{base}/runs", {"workflow_id": graph_id})


def post(url: str, body: Any) -> None:
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST", headers=AUTH)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 201


SCHEMA = schemathesis.openapi.from_dict(document())


@SCHEMA.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,  # the same cases on every run: CI does not turn red by chance
    suppress_health_check=list(HealthCheck),
)
def test_no_request_makes_a_5xx_or_an_answer_the_document_does_not_describe(
    case: Any, server: ServerThread
) -> None:
    case.call_and_validate(base_url=server.url, headers=AUTH, checks=CHECKS, timeout=30)


# -- by hand -----------------------------------------------------------------------------------

P = "/api/projects/acme/workflows"


async def refused(
    api: Api, method: str, path: str, *, data: bytes | None = None, json_body: Any = None
) -> tuple[int, dict[str, Any]]:
    """Send a request; assert a 4xx problem document with a detail; give (status, body)."""
    headers = {"Content-Type": "application/json"}
    response = await api.client.request(method, path, data=data, json=json_body, headers=headers)
    body = await response.json(content_type=None)
    assert 400 <= response.status < 500, (response.status, body)
    assert response.content_type == "application/problem+json"
    assert isinstance(body["detail"], str)
    assert body["detail"]
    assert "Traceback" not in json.dumps(body)
    return response.status, body


@pytest.fixture
async def hostile(make_api: ApiFactory) -> AsyncIterator[Api]:
    api = await make_api()
    yield api
    health = await api.client.get("/healthz")
    assert health.status == 200
    graphs = await api.client.get(f"{P}/graphs")
    assert graphs.status == 200, "the daemon must still serve after the hostile requests"


@pytest.mark.parametrize(
    "path",
    [
        f"{P}/graphs/1'%20OR%20'1'='1",
        f"{P}/graphs/x;DROP%20TABLE%20graphs;--",
        f"{P}/graphs/..%2F..%2F..%2Fetc%2Fpasswd",
        f"{P}/graphs/%2e%2e",
        f"{P}/graphs/a%00b",
        f"{P}/graphs/{'a' * 5000}",
        f"{P}/runs/1'%20OR%201=1",
        f"{P}/runs/..%2F..%2Fsecrets/status",
        "/api/projects/..%2F..%2Fetc/workflows/graphs",
        "/api/projects/acme'%20--/workflows/runs",
        "/api/projects/%F0%9F%92%A5/workflows/graphs",
    ],
)
async def test_sql_and_path_traversal_in_ids_are_not_found(hostile: Api, path: str) -> None:
    status, body = await refused(hostile, "GET", path)

    assert status == 404
    assert "not found" in body["detail"] or "no such endpoint" in body["detail"]


async def test_sql_in_a_body_id_is_stored_as_nothing_but_refused(hostile: Api) -> None:
    graph = linear("g", "passthrough") | {"id": "g'); DROP TABLE graphs; --"}

    status, body = await refused(hostile, "POST", f"{P}/graphs", json_body=graph)

    assert status == 422
    assert body["problems"][0]["path"] == "/id"


async def test_deeply_nested_json_is_a_400(hostile: Api) -> None:
    nested = b'{"workflow_id": "g", "input": {"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"

    status, body = await refused(hostile, "POST", f"{P}/runs", data=nested)

    assert status == 400
    assert "nested too deeply" in body["detail"]


@pytest.mark.parametrize(
    ("number", "what"),
    [
        ("1" + "0" * 5000, "out of range"),
        ("18446744073709551616", "out of range"),
        ("-9223372036854775809", "out of range"),
        ("1e400", "too large"),
        ("-1e400", "too large"),
        ("NaN", "not a JSON number"),
        ("Infinity", "not a JSON number"),
    ],
)
async def test_numbers_cortexd_cannot_keep_are_a_422(hostile: Api, number: str, what: str) -> None:
    await hostile.graph(linear("g", "passthrough"))
    body = b'{"workflow_id": "g", "input": {"n": ' + number.encode() + b"}}"

    status, problem = await refused(hostile, "POST", f"{P}/runs", data=body)

    assert status == 422
    assert what in problem["problems"][0]["message"]


async def test_the_largest_64_bit_numbers_are_kept(hostile: Api) -> None:
    await hostile.graph(linear("g", "passthrough"))
    run_input = {"big": 2**64 - 1, "small": -(2**63), "float": 1.7976931348623157e308}

    run_id = await hostile.start("g", run_input)
    await hostile.idle()

    run = await hostile.call("GET", f"{P}/runs/{run_id}")
    assert run["input"] == run_input
    assert run["status"] == "completed"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"name": "\xff\xfe"}',
        b'{"name": "\xc3\x28"}',
        b'{"name": "\xed\xa0\x80"}',  # a surrogate encoded as UTF-8: not UTF-8
        b'{"name": "\\ud800"}',  # a lone surrogate as an escape: valid JSON, not storable
        b"\xef\xbb\xbf{}",  # a BOM
    ],
)
async def test_invalid_utf8_and_lone_surrogates_are_a_400(hostile: Api, raw: bytes) -> None:
    status, _ = await refused(hostile, "POST", f"{P}/graphs", data=raw)

    assert status == 400


async def test_a_4kb_condition_is_refused(hostile: Api) -> None:
    graph = linear("g", "passthrough", "passthrough")
    graph["edges"][0]["condition"] = "input.a == `1` && " * 230 + "input.b"

    status, body = await refused(hostile, "POST", f"{P}/graphs", json_body=graph)

    assert status == 422
    assert body["problems"] == [
        {"path": "/edges/0/condition", "message": body["problems"][0]["message"]}
    ]
    assert "at most 1024" in body["problems"][0]["message"]


@pytest.mark.parametrize(
    ("condition", "why"),
    [
        ("input.a ==", "invalid JMESPath"),
        ("input.[", "invalid JMESPath"),
        ("!" * 300 + "input.a", "levels deep"),
        (" || ".join(["input.a"] * 60), "levels deep"),
        ("[@, @][]" * 7 + " | length(@) > `0`", "multiply its input"),
        ("length(" + " | ".join(["[@, @, @, @][]"] * 4) + ") > `0`", "multiply its input"),
    ],
)
async def test_invalid_or_pathological_conditions_are_refused(
    hostile: Api, condition: str, why: str
) -> None:
    graph = linear("g", "passthrough", "passthrough")
    graph["edges"][0]["condition"] = condition

    status, body = await refused(hostile, "POST", f"{P}/graphs", json_body=graph)

    assert status == 422
    [problem] = body["problems"]
    assert problem["path"] == "/edges/0/condition"
    assert why in problem["message"]


@pytest.mark.parametrize(
    ("expression", "why"),
    [
        ("[@, @][]" * 8, "multiply its input"),
        ("!" * 2000 + "input", "levels deep"),  # deep enough to exhaust the parser's stack
    ],
)
async def test_a_pathological_expression_in_a_node_config_is_refused(
    hostile: Api, expression: str, why: str
) -> None:
    graph = linear("g", "transform", n1={"output": {"x": expression}})

    status, body = await refused(hostile, "POST", f"{P}/graphs", json_body=graph)

    assert status == 422
    [problem] = body["problems"]
    assert problem["path"] == "/nodes/0/config/output/x"
    assert why in problem["message"]


async def test_a_graph_of_10000_nodes_is_refused_quickly(hostile: Api) -> None:
    nodes = [{"id": f"n{i}", "label": "", "x": 0, "y": 0} for i in range(10_000)]
    graph = {"id": "huge", "name": "huge", "nodes": nodes, "edges": []}

    started = time.monotonic()
    status, body = await refused(hostile, "POST", f"{P}/graphs", json_body=graph)

    assert status == 422
    assert body["problems"] == [{"path": "/nodes", "message": "10000 nodes; at most 500"}]
    assert time.monotonic() - started < 5


async def test_a_body_over_the_request_limit_is_a_413(hostile: Api) -> None:
    status, body = await refused(
        hostile, "POST", f"{P}/graphs", data=b"[" + b"0," * 600_000 + b"0]"
    )

    assert status == 413
    assert "1048576" in body["detail"]


@pytest.mark.parametrize(
    "query",
    [
        "cursor=" + "A" * 5000,
        "cursor=%00%01%02",
        "cursor=%F0%9F%92%A5",
        "cursor=WyJyIiwxLDJd" + "%0A",  # a cursor with a newline after it
        # base64url of 2,000 nested arrays
        "cursor=" + base64.urlsafe_b64encode(b"[" * 2000 + b"]" * 2000).decode().rstrip("="),
        # base64url of ["r",-9223372036854775809,1]: below 64 bits
        "cursor=WyJyIiwtOTIyMzM3MjAzNjg1NDc3NTgwOSwxXQ",
        "limit=" + "9" * 5000,
        "limit=-1",
        "limit=%EF%BC%91",  # a fullwidth digit one
        "status=" + ",".join(["running"] * 1000),
        "status=running%00",
        "created_after=9999-12-31T23:59:60Z",
        "created_after=0000-01-01T00:00:00Z",
        "created_before=2026-01-01T00:00:00%2B99:99",
        "created_before=2026-01-01T00:00:00.%2B00:00",
        "workflow_id=" + "a" * 5000,
    ],
)
async def test_hostile_page_and_filter_parameters_are_a_400(hostile: Api, query: str) -> None:
    status, _ = await refused(hostile, "GET", f"{P}/runs?{query}")

    assert status == 400


@pytest.mark.parametrize(
    "query",
    [
        # the edges of what a store keeps: 64-bit positions, the first and last years
        "cursor=" + "WyJyIiw5MjIzMzcyMDM2ODU0Nzc1ODA3LDkyMjMzNzIwMzY4NTQ3NzU4MDdd",
        "cursor=" + "WyJyIiwtOTIyMzM3MjAzNjg1NDc3NTgwOCwtOTIyMzM3MjAzNjg1NDc3NTgwOF0",
        "created_after=0001-01-01T00:00:00%2B23:59&created_before=9999-12-31T23:59:59-23:59",
        "status=" + ",".join(s.value for s in RunStatus),
    ],
)
async def test_page_parameters_at_their_limits_are_answered(hostile: Api, query: str) -> None:
    response = await hostile.client.get(f"{P}/runs?{query}")

    assert response.status == 200, await response.text()
