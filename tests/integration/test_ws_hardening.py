"""Hardening of the WebSocket endpoint and the event bus (issue 18): bad query parameters refused
before the upgrade, `subscribe` replaying a run's history, subscribers isolated from each other,
concurrent and bounded closes, and client queues bounded in bytes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from structlog.testing import capture_logs

from adapters.config import load_settings
from adapters.http.keys import SERVICE, SOCKETS
from adapters.serve import _reload
from adapters.ws import SocketLimits
from core.events import Published
from tests.integration.conftest import Api, ApiFactory, P, linear, until
from tests.integration.test_auth import READER, TOKENS, WRITER, auth_env, bearer, write_config
from tests.integration.test_ws import WS, receive, stored_events
from tests.support.thread_nodes import ThreadNodes

ON_BOTH_STORES = True  # every test here runs on SQLite and on PostgreSQL

UPGRADE = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}
BAD_INTEGERS = [
    "99999999999999999999",  # beyond 64 bits: reached SQLite after the upgrade
    str(2**63),
    str(2**62 + 1),
    "9" * 5000,  # more digits than int() takes
    "-1",
    "",
    "abc",
    "1e3",
    "1_000",  # int() takes these three; a query parameter is plain ASCII digits
    " 7",
    "\u0661\u0662",  # ARABIC-INDIC DIGITS ONE TWO
]


async def refused(api: Api, path: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    response = await api.client.get(path, headers=headers)
    body: dict[str, Any] = await response.json(content_type=None)
    assert response.status == 400, (response.status, body)
    assert response.content_type == "application/problem+json"
    assert body["status"] == 400
    assert len(body["detail"]) < 200  # names the parameter, does not echo 5,000 digits
    return body


# -- query parameters --------------------------------------------------------------------------


@pytest.mark.parametrize("since", BAD_INTEGERS)
async def test_a_bad_websocket_since_is_a_400_before_the_upgrade(api: Api, since: str) -> None:
    with capture_logs() as logs:
        body = await refused(api, f"{WS}?since={since}", UPGRADE)
        with pytest.raises(aiohttp.WSServerHandshakeError) as handshake:
            await api.client.ws_connect(WS, params={"since": since})
    assert "'since'" in body["detail"]
    assert handshake.value.status == 400
    assert [e for e in logs if e["log_level"] in ("error", "critical")] == []
    async with api.client.ws_connect(f"{WS}?since={2**62}") as ws:  # the largest: fine
        assert not ws.closed


@pytest.mark.parametrize(
    "query", ["since=1&since=2", "run_id=not-a-run", f"run_id={'a' * 300}", "run_id="]
)
async def test_other_bad_websocket_queries_are_a_400_before_the_upgrade(
    api: Api, query: str
) -> None:
    body = await refused(api, f"{WS}?{query}", UPGRADE)
    assert ("'since'" if "since" in query else "'run_id'") in body["detail"]


@pytest.mark.parametrize(
    "query",
    [
        *(f"since={value}" for value in BAD_INTEGERS),
        *(f"limit={value}" for value in [*BAD_INTEGERS, "0", "10001"]),
        "limit=5&limit=6",
    ],
)
async def test_bad_event_query_parameters_are_a_400(api: Api, query: str) -> None:
    await api.graph(linear("g", "count"))
    run_id = await api.start("g")
    await api.idle()
    body = await refused(api, f"{P}/runs/{run_id}/events?{query}")
    assert f"'{query.split('=')[0]}'" in body["detail"]


async def test_the_widest_event_queries_are_answered(api: Api) -> None:
    await api.graph(linear("g", "count"))
    run_id = await api.start("g")
    await api.idle()
    stored = [e for e in await stored_events(api) if e.get("run_id") == run_id]
    events = await api.call("GET", f"{P}/runs/{run_id}/events?since=0&limit=10000", status=200)
    assert events == stored
    assert await api.call("GET", f"{P}/runs/{run_id}/events?since={2**62}", status=200) == []
    async with api.client.ws_connect(f"{WS}?since=0&run_id={run_id}") as ws:
        assert await receive(ws, stored[-1]["seq"]) == stored


# -- event subscribers -------------------------------------------------------------------------


class Broken:
    """An event subscriber with a bug, on the daemon's own bus ahead of every client."""

    def offer(self, item: Published) -> None:
        raise RuntimeError("a subscriber's bug")


async def test_a_subscriber_that_raises_keeps_no_event_from_the_clients(api: Api) -> None:
    api.client.app[SOCKETS]._bus.subscribe(Broken())  # the bus the daemon's writer publishes to
    await api.graph(linear("g", "count", "count"))
    async with api.client.ws_connect(WS) as ws:
        await api.start("g")
        await api.idle()
        stored = await stored_events(api)
        assert await receive(ws, stored[-1]["seq"]) == stored[1:]  # all but the graph's
    assert [e["seq"] for e in api.kit.events] == [e["seq"] for e in stored]  # the sink's too


# -- subscribe replays the run's history -------------------------------------------------------


async def frames_of(
    ws: aiohttp.ClientWebSocketResponse, run_id: str, until_type: str = "workflow.run.completed"
) -> list[dict[str, Any]]:
    """The frames of `run_id` up to its `until_type` event (bounded by a deadline); the frames
    of other runs are checked to be in seq order and left out."""
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(30):
        while not got or got[-1]["type"] != until_type:
            message = await ws.receive()
            assert message.type is WSMsgType.TEXT, message
            frame = json.loads(message.data)
            if frame.get("run_id") == run_id:
                got.append(frame)
    return got


def of_run(events: list[dict[str, Any]], run_id: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("run_id") == run_id]


async def ack(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    async with asyncio.timeout(30):
        reply: dict[str, Any] = json.loads((await ws.receive()).data)
    return reply


async def test_subscribe_replays_the_runs_stored_events_then_its_live_ones(api: Api) -> None:
    await api.graph(linear("g", "count"))
    await api.graph(linear("slow", "count", "gate", "count"))
    one = await api.start("g")
    await api.idle()
    two = await api.start("slow")
    await api.arrived()  # two has a history: created, running, n1 done, n2 waiting
    async with api.client.ws_connect(f"{WS}?run_id={one}") as ws:
        await ws.send_json({"type": "subscribe", "run_id": two})
        assert await ack(ws) == {"type": "subscribed", "run_id": two}
        api.kit.gate("default").set()  # the rest of two is live
        got = await frames_of(ws, two)
    await api.idle()
    assert got == of_run(await stored_events(api), two)  # all of it, in order, once


async def test_the_seam_of_a_long_replay_and_live_events_has_no_gap_or_duplicate(
    make_api: ApiFactory,
) -> None:
    api = await make_api(extra=[("threads", ThreadNodes())])
    steps = {"steps": 700}  # more events than a replay page holds
    await api.graph(linear("g", "count"))
    await api.graph(linear("long", "threaded", "gate", "threaded", n1=steps, n3=steps))
    one = await api.start("g")
    two = await api.start("long")
    await api.arrived()
    async with api.client.ws_connect(f"{WS}?run_id={one}") as ws:
        await ws.send_json({"type": "subscribe", "run_id": two})
        assert (await ack(ws))["type"] == "subscribed"
        api.kit.gate("default").set()  # 700 more events while the replay pages through 700
        got = await frames_of(ws, two)
    await api.idle()
    stored = of_run(await stored_events(api), two)
    assert len(stored) > 1400
    assert [e["seq"] for e in got] == [e["seq"] for e in stored]
    assert got == stored


async def test_subscribe_replays_after_the_sockets_since_or_the_messages_own(api: Api) -> None:
    await api.graph(linear("g", "count", "count"))
    one = await api.start("g")
    await api.idle()
    two = await api.start("g")
    await api.idle()
    history = of_run(await stored_events(api), two)
    middle = history[2]["seq"]
    async with api.client.ws_connect(f"{WS}?since={middle}&run_id={one}") as ws:
        await ws.send_json({"type": "subscribe", "run_id": two})
        assert (await ack(ws))["type"] == "subscribed"
        got = await frames_of(ws, two)
        assert got == history[3:]  # what came after the socket's since
        await ws.send_json({"type": "unsubscribe", "run_id": two})
        assert await ack(ws) == {"type": "unsubscribed", "run_id": two}
        await ws.send_json({"type": "subscribe", "run_id": two, "since": history[0]["seq"]})
        assert (await ack(ws))["type"] == "subscribed"
        assert await frames_of(ws, two) == history[1:]  # after the message's since


async def test_subscribing_again_or_on_a_project_wide_socket_replays_nothing(api: Api) -> None:
    await api.graph(linear("g", "count"))
    one = await api.start("g")
    await api.idle()
    async with api.client.ws_connect(WS) as everything:
        await everything.send_json({"type": "subscribe", "run_id": one})
        assert await ack(everything) == {"type": "subscribed", "run_id": one}
    async with api.client.ws_connect(f"{WS}?since=0&run_id={one}") as ws:
        replayed = await frames_of(ws, one)
        await ws.send_json({"type": "subscribe", "run_id": one})
        assert await ack(ws) == {"type": "subscribed", "run_id": one}
        two = await api.start("g")
        await ws.send_json({"type": "subscribe", "run_id": two, "since": 0})
        assert await ack(ws) == {"type": "subscribed", "run_id": two}
        await frames_of(ws, two)
    assert replayed == of_run(await stored_events(api), one)


@pytest.mark.parametrize(
    "message",
    [
        {"type": "subscribe", "run_id": ""},
        {"type": "subscribe", "run_id": 5},
        {"type": "subscribe", "run_id": "5f0e0b3e-1d5c-4e0a-9b1a-2c3d4e5f6a7b", "since": -1},
        {"type": "subscribe", "run_id": "5f0e0b3e-1d5c-4e0a-9b1a-2c3d4e5f6a7b", "since": 2**64},
        {"type": "subscribe", "run_id": "5f0e0b3e-1d5c-4e0a-9b1a-2c3d4e5f6a7b", "since": "1"},
        {"type": "subscribe", "run_id": "5f0e0b3e-1d5c-4e0a-9b1a-2c3d4e5f6a7b", "since": True},
    ],
)
async def test_a_bad_subscribe_gets_an_error_frame(api: Api, message: dict[str, Any]) -> None:
    async with api.client.ws_connect(f"{WS}?run_id=5f0e0b3e-1d5c-4e0a-9b1a-2c3d4e5f6a7c") as ws:
        await ws.send_json(message)
        reply = await ack(ws)
        assert reply["type"] == "error"
        assert reply["detail"]


# -- closing many sockets ----------------------------------------------------------------------

CLOSE_BOUND_S = 6.0  # a close is waited for 2 s at most, every socket at once


async def stuck_clients(
    api: Api,
    session: aiohttp.ClientSession,
    count: int,
    headers: dict[str, str] | None = None,
    writer: dict[str, str] | None = None,
) -> list[aiohttp.ClientWebSocketResponse]:
    """Clients that stopped reading while megabytes of events were sent to them: their
    connections are full, so even a close frame waits for them to read (today: for ever)."""
    clients = [
        await session.ws_connect(api.client.make_url(WS), headers=headers) for _ in range(count)
    ]

    async def post(path: str, body: dict[str, Any]) -> None:
        async with session.post(api.client.make_url(path), json=body, headers=writer) as response:
            assert response.status == 201, await response.text()

    await post(f"{P}/graphs", linear("big", "passthrough"))
    for _ in range(30):  # ~24 MB each: more than a loopback connection's buffers hold
        await post(f"{P}/runs", {"workflow_id": "big", "input": {"blob": "x" * 250_000}})
    await api.idle()
    return clients


async def idle_clients(
    api: Api, session: aiohttp.ClientSession, count: int, headers: dict[str, str] | None = None
) -> list[aiohttp.ClientWebSocketResponse]:
    return [
        await session.ws_connect(api.client.make_url(WS), headers=headers) for _ in range(count)
    ]


async def close_frame(ws: aiohttp.ClientWebSocketResponse) -> int:
    """The code of the close frame the server sent, read past the events before it."""
    async with asyncio.timeout(20):
        while (message := await ws.receive()).type is WSMsgType.TEXT:
            pass
    assert message.type is WSMsgType.CLOSE, message
    code: int = message.data
    return code


async def dropped(ws: aiohttp.ClientWebSocketResponse) -> None:
    """The connection ends (closed or dropped), read past what was sent before."""
    async with asyncio.timeout(20):
        while (await ws.receive()).type is WSMsgType.TEXT:
            pass
    assert ws.closed


def connections() -> aiohttp.ClientSession:
    # Leaving the session drops every client connection, so a failing run ends quickly too.
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))


async def test_shutdown_closes_256_sockets_at_once_even_stuck_ones(make_api: ApiFactory) -> None:
    api = await make_api(CORTEXD_STORAGE__BATCH_MAX="8")
    app = api.client.app
    async with connections() as session:
        stuck = await stuck_clients(api, session, 8)
        idle = await idle_clients(api, session, 248)  # 256 in all: the most allowed
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with asyncio.timeout(CLOSE_BOUND_S):
            await app[SOCKETS].close_all(app)  # what the app's on_shutdown calls
        took = loop.time() - started
        codes = await asyncio.gather(*(close_frame(ws) for ws in idle))
        await asyncio.gather(*(dropped(ws) for ws in stuck))
    assert codes == [1001] * 248
    assert took < CLOSE_BOUND_S
    await until(lambda: app[SOCKETS].clients == 0)


async def test_a_revoked_token_closes_its_sockets_at_once_even_stuck_ones(
    make_api: ApiFactory, tmp_path: Path
) -> None:
    config = tmp_path / "cortexd.toml"
    write_config(config, tmp_path / "cortexd.db", TOKENS[:2])
    settings = load_settings(config, env={})
    api = await make_api(CORTEXD_STORAGE__BATCH_MAX="8", **auth_env(TOKENS[:2]))
    async with connections() as session:
        kept = await session.ws_connect(api.client.make_url(WS), headers=bearer(WRITER))
        stuck = await stuck_clients(api, session, 8, bearer(READER), bearer(WRITER))
        idle = await idle_clients(api, session, 24, bearer(READER))  # 32: the most per token
        write_config(config, tmp_path / "cortexd.db", TOKENS[1:2])  # the reader's token goes
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with asyncio.timeout(CLOSE_BOUND_S):
            await _reload(api.client.app, settings, config, {})
        took = loop.time() - started
        codes = await asyncio.gather(*(close_frame(ws) for ws in idle))
        await asyncio.gather(*(dropped(ws) for ws in stuck))
        assert not kept.closed
    assert codes == [1008] * 24
    assert took < CLOSE_BOUND_S


# -- client queues bounded in bytes ------------------------------------------------------------


async def test_a_client_behind_by_more_bytes_than_the_bound_is_closed_with_1013(
    make_api: ApiFactory,
) -> None:
    # Far more events than 1013 takes by count: only the bytes can decide.
    api = await make_api(CORTEXD_EVENTS__WS_QUEUE_SIZE="1000000", CORTEXD_STORAGE__BATCH_MAX="8")
    await api.graph(linear("g", "passthrough"))
    big = {"blob": "x" * 250_000}
    bound = SocketLimits().max_queue_bytes
    fast_seen: list[dict[str, Any]] = []

    async def read_fast(ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            fast_seen.append(json.loads(message.data))

    async with api.client.ws_connect(WS) as slow, api.client.ws_connect(WS) as fast:
        reader = asyncio.create_task(read_fast(fast))
        sent, last_seq = 0, 0
        for _ in range(100):  # until twice the bound is queued for the client that never reads
            if sent > 2 * bound:
                break
            for _ in range(10):
                await api.start("g", big)
            await api.idle()
            new = await api.client.app[SERVICE].events("acme", last_seq, None, 100_000)
            sent += sum(len(json.dumps(e)) for e in new)
            last_seq = new[-1]["seq"]
        stored = await stored_events(api)
        assert len(stored) < 10_000
        await until(lambda: reader.done() or len(fast_seen) >= len(stored) - 1)
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
    assert [e["seq"] for e in fast_seen] == [e["seq"] for e in stored[1:]]  # never too slow

    last = received[-1]["seq"] if received else stored[0]["seq"]
    assert f"since={last}" in message.extra
    async with api.client.ws_connect(f"{WS}?since={last}") as again:
        rest = await receive(again, stored[-1]["seq"])
    assert received + rest == stored[1:]
