"""Integration fixtures: the real aiohttp app on a real SQLite file in tmp_path, or, in the
modules that set `ON_BOTH_STORES`, also on a real PostgreSQL database (tests/conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from adapters.config import load_settings
from adapters.daemon import PluginSources, build_app
from adapters.http.keys import ENGINE
from tests.support.nodes import TestKit

P = "/api/projects/acme/workflows"


class Api:
    """A test client with the few helpers every HTTP test needs."""

    def __init__(self, client: TestClient[Any, web.Application], kit: TestKit) -> None:
        self.client = client
        self.kit = kit

    @property
    def engine(self) -> Any:
        return self.client.app[ENGINE]

    async def call(
        self, method: str, path: str, json: Any = None, status: int | None = None
    ) -> Any:
        response = await self.client.request(method, path, json=json)
        body = await response.json() if response.status != 204 else None
        if status is not None:
            assert response.status == status, (response.status, body)
        return body

    async def graph(self, graph: dict[str, Any], project: str = "acme") -> dict[str, Any]:
        path = f"/api/projects/{project}/workflows/graphs"
        result: dict[str, Any] = await self.call("POST", path, graph, 201)
        return result

    async def start(self, workflow_id: str, run_input: Any = None, project: str = "acme") -> str:
        body = {"workflow_id": workflow_id, "input": run_input}
        run = await self.call("POST", f"/api/projects/{project}/workflows/runs", body, 201)
        run_id: str = run["id"]
        return run_id

    async def run(self, run_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("GET", f"{P}/runs/{run_id}", status=200)
        return result

    async def idle(self, timeout: float = 20) -> None:
        await asyncio.wait_for(self.engine.wait_idle(), timeout)

    async def arrived(self, gate: str = "default", timeout: float = 20) -> None:
        await asyncio.wait_for(self.kit.arrived(gate).wait(), timeout)


ApiFactory = Callable[..., Awaitable[Api]]


@pytest.fixture
def make_api(
    # First: set up before the client, so that a PostgreSQL database is dropped after the
    # daemons on it are closed.
    storage: dict[str, str],
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, web.Application]]],
) -> ApiFactory:
    async def make(
        extra: Sequence[tuple[str, object]] = (), kit: TestKit | None = None, **env: str
    ) -> Api:
        """An app on the test's database (the same file each call: a restart)."""
        environ = {**storage, **env}
        settings = load_settings(None, env=environ)
        kit = kit or TestKit()
        sources = PluginSources(use_entry_points=False, extra=[("testkit", kit), *extra])
        client = await aiohttp_client(build_app(settings, sources))
        return Api(client, kit)

    return make


@pytest.fixture
async def api(make_api: ApiFactory) -> Api:
    return await make_api()


def linear(graph_id: str, *types: str, **configs: dict[str, Any]) -> dict[str, Any]:
    """A graph n1 -> n2 -> ... of the given node types; `configs` maps node id -> config."""
    nodes = [
        {"id": f"n{i}", "label": f"N{i}", "x": i * 100.0, "y": 0.0, "type": t}
        | ({"config": configs[f"n{i}"]} if f"n{i}" in configs else {})
        for i, t in enumerate(types, start=1)
    ]
    edges = [
        {"id": f"e{i}", "source": f"n{i}", "target": f"n{i + 1}"} for i in range(1, len(types))
    ]
    return {"id": graph_id, "name": graph_id, "nodes": nodes, "edges": edges}


async def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll a condition on the event loop with a deadline (never a fixed sleep)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.005)
