"""Live events over WebSocket with real clients against the real app."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web

from adapters.config import load_settings
from adapters.daemon import PluginSources, build_app
from adapters.http.keys import SERVICE
from tests.conftest import SQL
from tests.integration.conftest import Api, ApiFactory, linear, until
from tests.support.process import free_port

ON_BOTH_STORES = True  # every test here runs on SQLite and on PostgreSQL

WS = "/api/projects/acme/ws"


async def stored_events(api: Api, project: str = "acme") -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = await api.client.app[SERVICE].events(project, 0, None, 100_000)
    return events


async def receive(ws: aiohttp.ClientWebSocketResponse, until_seq: int) -> list[dict[str, Any]]:
    """Frames until the one with `until_seq` (bounded by a deadline)."""
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(30):
        while not got or got[-1].get("seq", -1) < until_seq:
            message = await ws.receive()
            assert message.type is WSMsgType.TEXT, message
            got.append(json.loads(message.data))
    return got


async def test_live_events_arrive_in_order_and_only_for_the_project(api: Api) -> None:
    await api.graph(linear("g", "count", "count"))
    async with (
        api.client.ws_connect(WS) as acme,
        api.client.ws_connect("/api/projects/other/ws") as other,
    ):
        run_id = await api.start("g")
        await api.idle()
        stored = await stored_events(api)
        live = await receive(acme, stored[-1]["seq"])
        assert live == [e for e in stored if e["seq"] > stored[0]["seq"]]  # after the graph
        assert live[-1]["type"] == "workflow.run.completed"
        assert live[-1]["run"]["id"] == run_id
        assert other.closed is False
        with_timeout = asyncio.wait_for(other.receive(), 0.2)
        try:
            message = await with_timeout
        except TimeoutError:
            message = None
        assert message is None  # nothing of another project


async def test_since_replays_then_follows_live_with_no_gap_or_duplicate_at_the_seam(
    api: Api,
) -> None:
    await api.graph(linear("g", "count", "count", "count"))
    first = [await api.start("g") for _ in range(5)]
    await api.idle()
    # More runs are under way while the client replays what is stored.
    more = [await api.start("g") for _ in range(20)]
    async with api.client.ws_connect(f"{WS}?since=0") as ws:
        await api.idle()
        stored = await stored_events(api)
        got = await receive(ws, stored[-1]["seq"])
    assert [e["seq"] for e in got] == [e["seq"] for e in stored]
    assert got == stored
    completed = {e["run_id"] for e in got if e["type"] == "workflow.run.completed"}
    assert completed == set(first + more)


async def test_run_id_filters_and_subscribe_adds_runs(api: Api) -> None:
    await api.graph(linear("g", "count"))
    one = await api.start("g")
    two = await api.start("g")
    await api.idle()
    async with api.client.ws_connect(f"{WS}?since=0&run_id={one}") as ws:
        stored = [e for e in await stored_events(api) if e.get("run_id") == one]
        got = await receive(ws, stored[-1]["seq"])
        assert got == stored
        await ws.send_json({"type": "subscribe", "run_id": two})
        ack = json.loads((await ws.receive()).data)
        assert ack == {"type": "subscribed", "run_id": two}
        history = [e for e in await stored_events(api) if e.get("run_id") == two]
        assert await receive(ws, history[-1]["seq"]) == history  # what it did before
        await api.call("POST", f"/api/projects/acme/workflows/runs/{two}/execute", status=409)
        three = await api.start("g")  # not subscribed: not sent
        await api.idle()
        await ws.send_json({"type": "unsubscribe", "run_id": one})
        assert json.loads((await ws.receive()).data)["type"] == "unsubscribed"
    assert all(e.get("run_id") != three for e in got)


async def test_malformed_client_messages_get_an_error_frame_and_others_are_unaffected(
    api: Api,
) -> None:
    await api.graph(linear("g", "count"))
    async with api.client.ws_connect(WS) as rude, api.client.ws_connect(WS) as polite:
        for bad in ("{nope", "[1]", '{"type": "dance"}', '{"type": "subscribe"}'):
            await rude.send_str(bad)
            reply = json.loads((await rude.receive()).data)
            assert reply["type"] == "error"
            assert reply["detail"]
        await api.start("g")
        await api.idle()
        stored = await stored_events(api)
        assert (await receive(polite, stored[-1]["seq"]))[-1] == stored[-1]
        assert (await receive(rude, stored[-1]["seq"]))[-1] == stored[-1]


async def test_a_since_older_than_retention_first_gets_resume_gap(api: Api, store_sql: SQL) -> None:
    await api.graph(linear("g", "count"))
    await api.start("g")
    await api.idle()
    store_sql("DELETE FROM events WHERE seq <= 3")  # what the retention pruning does
    stored = await stored_events(api)
    async with api.client.ws_connect(f"{WS}?since=1") as ws:
        gap = json.loads((await ws.receive()).data)
        assert gap == {"type": "resume_gap", "min_available_seq": 4}
        assert await receive(ws, stored[-1]["seq"]) == stored


async def test_a_slow_client_is_closed_with_1013_and_catches_up_by_reconnecting(
    make_api: ApiFactory,
) -> None:
    # A queue the fast client never fills: a commit publishes at most a few events per write,
    # and batches are capped at 8 writes; the slow client falls behind by megabytes.
    api = await make_api(CORTEXD_EVENTS__WS_QUEUE_SIZE="50", CORTEXD_STORAGE__BATCH_MAX="8")
    await api.graph(linear("g", "passthrough"))
    big = {"blob": "x" * 200_000}
    fast_seen: list[dict[str, Any]] = []

    async def read_fast(ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            fast_seen.append(json.loads(message.data))

    async with api.client.ws_connect(WS) as slow, api.client.ws_connect(WS) as fast:
        reader = asyncio.create_task(read_fast(fast))
        for _ in range(60):  # megabytes of events: more than the socket buffers hold
            await api.start("g", big)
        await api.idle()
        stored = await stored_events(api)
        await until(lambda: reader.done() or len(fast_seen) >= len(stored) - 1)
        # The slow client never read: it was dropped, not waited for.
        received: list[dict[str, Any]] = []
        async with asyncio.timeout(30):
            while True:
                message = await slow.receive()
                if message.type is not WSMsgType.TEXT:
                    break
                received.append(json.loads(message.data))
        assert message.type is WSMsgType.CLOSE
        assert slow.close_code == 1013
        assert "since=" in message.extra
    reader.cancel()
    assert [e["seq"] for e in fast_seen] == [e["seq"] for e in stored[1:]]

    last = received[-1]["seq"] if received else stored[0]["seq"]
    async with api.client.ws_connect(f"{WS}?since={last}") as again:
        rest = await receive(again, stored[-1]["seq"])
    assert received + rest == stored[1:]


async def test_shutdown_closes_sockets_with_1001(tmp_path: Path) -> None:
    # A runner of its own, stopped the way `cortexd serve` stops it (AppRunner.cleanup).
    settings = load_settings(None, env={"CORTEXD_STORAGE__PATH": str(tmp_path / "c.db")})
    runner = web.AppRunner(build_app(settings, PluginSources(use_entry_points=False)))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(f"http://127.0.0.1:{port}{WS}")
            stopping = asyncio.create_task(runner.cleanup())
            async with asyncio.timeout(10):
                message = await ws.receive()
            await stopping
    finally:
        await runner.cleanup()
    assert message.type is WSMsgType.CLOSE
    assert ws.close_code == 1001
    assert message.extra == "cortexd is shutting down"


async def test_reconnect_with_since_after_a_restart_loses_nothing(make_api: ApiFactory) -> None:
    first = await make_api()
    await first.graph(linear("g", "count"))
    async with first.client.ws_connect(WS) as ws:
        await first.start("g")
        await first.idle()
        stored = await stored_events(first)
        seen = await receive(ws, stored[-1]["seq"])
    await first.client.close()

    second = await make_api()
    await second.graph(linear("h", "count"))
    await second.start("h")
    await second.idle()
    async with second.client.ws_connect(f"{WS}?since={seen[-1]['seq']}") as ws:
        stored = await stored_events(second)
        rest = await receive(ws, stored[-1]["seq"])
    assert seen + rest == stored[1:]


async def test_a_hundred_clients_during_fifty_runs_each_get_every_event_in_order(
    make_api: ApiFactory,
) -> None:
    api = await make_api(CORTEXD_EXECUTION__MAX_CONCURRENT_RUNS="50")
    await api.graph(linear("g", "count", "count", "count"))
    # A session of their own, without the default cap of 100 connections per session.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        url = api.client.make_url(WS)
        sockets = [await session.ws_connect(url) for _ in range(100)]
        for _ in range(50):
            await api.start("g")
        await api.idle()
        stored = await stored_events(api)
        expected = stored[1:]
        results = await asyncio.gather(*(receive(ws, stored[-1]["seq"]) for ws in sockets))
        assert all(result == expected for result in results)
        await asyncio.gather(*(ws.close() for ws in sockets))
