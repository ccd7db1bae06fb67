"""Request ids on the real app: echoed or made, and in the log lines the request wrote."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from adapters.config import load_settings
from adapters.daemon import PluginSources, build_app
from adapters.logging import AccessLog, configure_logging
from tests.integration.conftest import Api

HEADER = "X-Request-ID"
ClientFactory = Callable[..., Awaitable[TestClient[Any, web.Application]]]


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """The daemon's JSON log, written to a buffer instead of stdout."""
    root = logging.getLogger()
    level = root.level
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    yield stream
    for handler in [h for h in root.handlers if type(h).__module__ == "adapters.logging"]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)
    structlog.reset_defaults()


async def boom(request: web.Request) -> web.Response:
    raise RuntimeError("a bug in a handler")


@pytest.fixture
async def client(aiohttp_client: ClientFactory, tmp_path: Path) -> TestClient[Any, web.Application]:
    """The real app, served with the daemon's access log, plus one route that fails."""
    settings = load_settings(None, env={"CORTEXD_STORAGE__PATH": str(tmp_path / "cortexd.db")})
    app = build_app(settings, PluginSources(use_entry_points=False))
    app.router.add_get("/boom", boom)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(
        access_log_class=AccessLog, access_log=logging.getLogger("aiohttp.access")
    )
    return await aiohttp_client(server)


async def lines_when(
    stream: io.StringIO, wanted: Callable[[dict[str, Any]], bool], timeout: float = 10
) -> list[dict[str, Any]]:
    """The log's lines once one of them is `wanted` (aiohttp logs access after responding)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        if any(wanted(line) for line in lines):
            return lines
        if loop.time() > deadline:
            raise AssertionError(f"no such line before the deadline in: {lines}")
        await asyncio.sleep(0.01)


async def test_a_sane_request_id_is_echoed(api: Api) -> None:
    for request_id in ("abc-123", "0f8fad5b-d9cb-469f-a165-70867728950e", "a" * 128):
        response = await api.client.get("/healthz", headers={HEADER: request_id})
        assert response.headers[HEADER] == request_id


@pytest.mark.parametrize("sent", [None, "", "has space", "a" * 129, 'quote"d', "semi;colon"])
async def test_a_missing_or_unsafe_request_id_is_replaced_by_a_new_one(
    api: Api, sent: str | None
) -> None:
    headers = {} if sent is None else {HEADER: sent}
    first = await api.client.get("/healthz", headers=headers)
    second = await api.client.get("/healthz", headers=headers)

    made = first.headers[HEADER]
    assert made != sent
    assert len(made) == 32
    assert int(made, 16) >= 0
    assert second.headers[HEADER] != made


async def test_errors_and_websockets_carry_the_request_id_too(api: Api) -> None:
    missing = await api.client.get(
        "/api/projects/acme/workflows/graphs/nope", headers={HEADER: "r-404"}
    )
    assert missing.status == 404
    assert missing.headers[HEADER] == "r-404"
    async with api.client.ws_connect("/api/projects/acme/ws", headers={HEADER: "r-ws"}) as ws:
        # The handshake response has no public accessor on the client side.
        assert ws._response.headers[HEADER] == "r-ws"


async def test_an_unexpected_error_is_logged_with_the_id_the_client_got(
    log_stream: io.StringIO, client: TestClient[Any, web.Application]
) -> None:
    response = await client.get("/boom", headers={HEADER: "trace-me-1"})
    assert response.status == 500
    assert "a bug" not in await response.text()
    assert response.headers[HEADER] == "trace-me-1"

    lines = await lines_when(log_stream, lambda line: line["event"] == "request_failed")
    [failure] = [line for line in lines if line["event"] == "request_failed"]
    assert failure["request_id"] == "trace-me-1"
    assert failure["level"] == "error"
    assert failure["exception"][0]["exc_value"] == "a bug in a handler"


async def test_each_request_has_one_structured_access_log_line(
    log_stream: io.StringIO, client: TestClient[Any, web.Application]
) -> None:
    response = await client.get(
        "/api/projects/acme/workflows/graphs?secret=x", headers={HEADER: "access-1"}
    )
    assert response.status == 200
    generated = await client.get("/no/such/route")

    def is_access(line: dict[str, Any]) -> bool:
        return bool(line["logger"] == "aiohttp.access")

    lines = await lines_when(log_stream, lambda line: is_access(line) and line["status"] == 404)
    first, second = [line for line in lines if is_access(line)]
    assert first["event"] == "request"
    assert first["level"] == "info"
    assert first["request_id"] == "access-1"
    assert first["method"] == "GET"
    assert first["path"] == "/api/projects/acme/workflows/graphs"  # never the query string
    assert first["route"] == "/api/projects/{project_id}/workflows/graphs"
    assert first["status"] == 200
    assert first["duration_s"] >= 0
    assert first["remote"] == "127.0.0.1"
    assert second["request_id"] == generated.headers[HEADER]
    assert second["route"] is None
    assert "secret" not in log_stream.getvalue()
