"""The built-in `http_request` node type against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.integration.conftest import Api, ApiFactory, P


class Upstream:
    """The server an http_request node calls; counts the requests to each path."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.seen: list[web.Request] = []
        self.bodies: list[Any] = []
        self.failures_left = 0
        self.release = asyncio.Event()
        self.server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.port}"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/users/{user_id}", self.user)
        app.router.add_post("/echo", self.echo)
        app.router.add_get("/flaky", self.flaky)
        app.router.add_get("/slow", self.slow)
        app.router.add_get("/big", self.big)
        app.router.add_get("/redirect", self.redirect)
        app.router.add_get("/landing", self.landing)
        app.middlewares.append(self.count)
        return app

    @web.middleware
    async def count(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.hits[request.path] += 1
        self.seen.append(request)
        return await handler(request)

    async def user(self, request: web.Request) -> web.Response:
        response = web.json_response(
            {"id": request.match_info["user_id"], "q": request.query.get("q")}
        )
        response.set_cookie("session", "upstream-secret")
        return response

    async def echo(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        return web.Response(text="received", status=201)

    async def flaky(self, request: web.Request) -> web.Response:
        if self.failures_left > 0:
            self.failures_left -= 1
            return web.Response(status=503, text="try later")
        return web.json_response({"ok": True})

    async def slow(self, request: web.Request) -> web.Response:
        await self.release.wait()
        return web.json_response({"late": True})

    async def big(self, request: web.Request) -> web.Response:
        return web.Response(text="x" * 5000)

    async def redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def landing(self, request: web.Request) -> web.Response:
        return web.json_response({"landed": True})


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    upstream = Upstream()
    upstream.server = TestServer(upstream.app(), host="127.0.0.1")
    await upstream.server.start_server()
    try:
        yield upstream
    finally:
        upstream.release.set()
        await upstream.server.close()


def allowing(*hosts: str, **options: Any) -> dict[str, str]:
    env = {"CORTEXD_PLUGINS__HTTP_REQUEST__ALLOW_HOSTS": json.dumps(list(hosts))}
    env.update({f"CORTEXD_PLUGINS__HTTP_REQUEST__{k.upper()}": str(v) for k, v in options.items()})
    return env


def request_graph(*nodes: dict[str, Any]) -> dict[str, Any]:
    full = [{"id": f"n{i}", "type": "http_request", **n} for i, n in enumerate(nodes, start=1)]
    edges = [{"source": f"n{i}", "target": f"n{i + 1}"} for i in range(1, len(nodes))]
    return {"id": "g", "name": "g", "nodes": full, "edges": edges}


async def run_graph(api: Api, graph: dict[str, Any], run_input: Any = None) -> dict[str, Any]:
    await api.graph(graph)
    run_id = await api.start("g", run_input)
    await api.idle()
    return await api.run(run_id)


async def node_states(api: Api, run_id: str) -> dict[str, Any]:
    status = await api.call("GET", f"{P}/runs/{run_id}/status", status=200)
    return {s["node_id"]: s for s in status["node_states"]}


async def test_a_get_and_a_post_reach_the_allowed_host(
    make_api: ApiFactory, upstream: Upstream
) -> None:
    api = await make_api(**allowing("127.0.0.1"))
    graph = request_graph(
        {"config": {"url": upstream.url + "/users/{input.user}?q={input.q}"}},
        {
            "config": {
                "method": "POST",
                "url": upstream.url + "/echo",
                "headers": {"X-Trace": "t-1"},
                "body": {"hello": ["world"]},
            }
        },
    )

    run = await run_graph(api, graph, {"user": "a/b c", "q": "x&y=z"})

    assert run["status"] == "completed", run["error"]
    fetched = run["output"]["outputs"]["n1"]
    assert fetched["status"] == 200
    # The values stayed inside the path segment and the query value they were put in.
    assert fetched["json"] == {"id": "a/b c", "q": "x&y=z"}
    assert fetched["headers"]["content-type"].startswith("application/json")
    assert "set-cookie" not in {h.lower() for h in fetched["headers"]}
    assert run["output"]["outputs"]["n2"] == {
        "status": 201,
        "headers": fetched["headers"] | run["output"]["outputs"]["n2"]["headers"],
        "text": "received",
    }
    assert upstream.bodies == [{"hello": ["world"]}]
    assert upstream.seen[-1].headers["X-Trace"] == "t-1"
    # The session keeps no cookies between requests (runs of every project share it).
    assert "Cookie" not in upstream.seen[-1].headers


async def test_a_host_outside_the_allow_list_is_never_reached(
    make_api: ApiFactory, upstream: Upstream
) -> None:
    api = await make_api(**allowing("api.example.com", "*.example.org"))
    node = {"config": {"url": upstream.url + "/landing"}, "retry": {"max_attempts": 3}}

    run = await run_graph(api, request_graph(node))

    assert run["status"] == "failed"
    assert run["error"]["type"] == "HostNotAllowed"
    assert "'127.0.0.1' is not in [plugins.http_request] allow_hosts" in run["error"]["message"]
    assert (await node_states(api, run["id"]))["n1"]["attempts"] == 1  # refusals aren't retried
    assert upstream.hits == Counter()


async def test_without_an_allow_list_nothing_is_reached(
    make_api: ApiFactory, upstream: Upstream
) -> None:
    api = await make_api()

    run = await run_graph(api, request_graph({"config": {"url": upstream.url + "/landing"}}))

    assert run["error"]["type"] == "HostNotAllowed"
    assert upstream.hits == Counter()


async def test_a_redirect_within_the_allowed_hosts_is_followed(
    make_api: ApiFactory, upstream: Upstream
) -> None:
    api = await make_api(**allowing("127.0.0.1"))
    url = upstream.url + "/redirect?to={input.to}"

    run = await run_graph(api, request_graph({"config": {"url": url}}), {"to": "/landing"})

    assert run["status"] == "completed", run["error"]
    assert run["output"]["outputs"]["n1"]["json"] == {"landed": True}
    assert upstream.hits == Counter({"/redirect": 1, "/landing": 1})


async def test_a_redirect_to_a_host_not_allowed_is_refused_before_it_is_reached(
    make_api: ApiFactory, upstream: Upstream
) -> None:
    api = await make_api(**allowing("127.0.0.1"))
    # `localhost` is this same server, so a followed redirect would show up as a hit.
    elsewhere = f"http://localhost:{upstream.url.rsplit(':', 1)[1]}/landing"
    url = upstream.url + "/redirect?to={input.to}"

    run = await run_graph(api, request_graph({"config": {"url": url}}), {"to": elsewhere})

    assert run["status"] == "failed"
    assert run["error"]["type"] == "HostNotAllowed"
    assert "'localhost'" in run["error"]["message"]
    assert upstream.hits == Counter({"/redirect": 1})


async def test_a_non_2xx_answer_fails_the_node_and_retry_retries_it(
    make_api: ApiFactory, upstream: Upstream
) -> None:
    api = await make_api(**allowing("127.0.0.1"))
    upstream.failures_left = 2
    retry = {"max_attempts": 3, "backoff_s": 0}

    run = await run_graph(
        api, request_graph({"config": {"url": upstream.url + "/flaky"}, "retry": retry})
    )

    assert run["status"] == "completed", run["error"]
    assert run["output"]["outputs"]["n1"]["json"] == {"ok": True}
    state = (await node_states(api, run["id"]))["n1"]
    assert state["attempts"] == 3
    assert state["messages"][:2] == [
        f"attempt 1 failed: GET {upstream.url}/flaky answered 503 Service Unavailable",
        f"attempt 2 failed: GET {upstream.url}/flaky answered 503 Service Unavailable",
    ]
    assert upstream.hits["/flaky"] == 3


async def test_a_non_2xx_answer_without_retry_fails_the_run(
    make_api: ApiFactory, upstream: Upstream
) -> None:
    api = await make_api(**allowing("127.0.0.1"))
    upstream.failures_left = 1

    run = await run_graph(api, request_graph({"config": {"url": upstream.url + "/flaky"}}))

    assert run["status"] == "failed"
    assert run["error"]["type"] == "HttpStatusError"
    assert "answered 503" in run["error"]["message"]


async def test_a_slow_server_times_the_request_out(
    make_api: ApiFactory, upstream: Upstream
) -> None:
    api = await make_api(**allowing("127.0.0.1"))
    node = {"config": {"url": upstream.url + "/slow", "timeout_s": 0.2}}

    run = await run_graph(api, request_graph(node))

    assert run["status"] == "failed"
    assert run["error"]["type"] == "HttpTimeout"
    assert run["error"]["message"] == f"GET {upstream.url}/slow timed out after 0.2s"


async def test_a_response_over_the_size_cap_fails_the_node(
    make_api: ApiFactory, upstream: Upstream
) -> None:
    api = await make_api(**allowing("127.0.0.1", max_response_bytes=1000))

    run = await run_graph(api, request_graph({"config": {"url": upstream.url + "/big"}}))

    assert run["status"] == "failed"
    assert run["error"]["message"] == "the response is larger than 1000 bytes"


async def test_a_bad_url_template_is_refused_when_the_graph_is_saved_or_run(
    make_api: ApiFactory, upstream: Upstream
) -> None:
    api = await make_api(**allowing("127.0.0.1"))
    bad = request_graph({"config": {"url": "ftp://127.0.0.1/file"}})
    await api.call("POST", f"{P}/graphs", bad, 422)

    run = await run_graph(
        api, request_graph({"config": {"url": upstream.url + "/users/{input.missing}"}}), {}
    )

    assert run["error"]["type"] == "TemplateError"
    assert run["error"]["message"] == "{input.missing}: 'missing' is not in the run state"
    assert upstream.hits == Counter()
