"""The built-in webhook sink against a real receiver on 127.0.0.1."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.integration.conftest import Api, ApiFactory, P, linear, until
from tests.support.process import free_port

ON_BOTH_STORES = True  # every test here runs on SQLite and on PostgreSQL

SECRET = "webhook-s3cret-value"


class Receiver:
    """Checks each delivery's signature; answers 503 while `failing` requests remain."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/hook"
        self.requests: list[tuple[dict[str, Any], dict[str, str], bool]] = []
        self.failing = 0
        self.accepted: set[int] = set()
        self.server: TestServer | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.receive)
        self.server = TestServer(app, host="127.0.0.1", port=self.port)
        await self.server.start_server()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None

    async def receive(self, request: web.Request) -> web.Response:
        raw = await request.read()
        expected = "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
        valid = hmac.compare_digest(request.headers.get("X-Cortexd-Signature", ""), expected)
        self.requests.append((json.loads(raw), dict(request.headers), valid))
        if self.failing > 0:
            self.failing -= 1
            return web.Response(status=503)
        self.accepted.add(self.requests[-1][0]["seq"])
        return web.Response(status=204)

    def seqs(self) -> list[int]:
        return [event["seq"] for event, _, _ in self.requests]

    def has(self, events: list[dict[str, Any]]) -> bool:
        """Whether the receiver accepted (answered 2xx to) each of these events."""
        return {e["seq"] for e in events} <= self.accepted


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver(free_port())
    try:
        yield receiver
    finally:
        await receiver.stop()


def webhook(receiver: Receiver, **options: Any) -> dict[str, str]:
    settings = {
        "url": receiver.url,
        "secret": SECRET,
        "backoff_s": 0.01,
        "max_backoff_s": 0.05,
        "max_attempts": 2,
        "timeout_s": 5,
        **options,
    }
    return {
        f"CORTEXD_PLUGINS__WEBHOOK__{key.upper()}": value
        if isinstance(value, str)
        else json.dumps(value)
        for key, value in settings.items()
    }


async def run_to_the_end(api: Api, graph_id: str = "g") -> list[dict[str, Any]]:
    """Run a two-node graph to its end; its events as stored (what the webhook reads)."""
    await api.graph(linear(graph_id, "passthrough", "passthrough"))
    run_id = await api.start(graph_id)
    await api.idle()
    stored: list[dict[str, Any]] = await api.call("GET", f"{P}/runs/{run_id}/events", status=200)
    assert stored[-1]["type"] == "workflow.run.completed"
    return stored


def sent(receiver: Receiver, run: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the receiver got of the run `run` (every request, accepted or not)."""
    return [event for event, _, _ in receiver.requests if event.get("run_id") == run[0]["run_id"]]


async def test_events_arrive_signed_and_in_seq_order(
    make_api: ApiFactory, receiver: Receiver
) -> None:
    await receiver.start()
    api = await make_api(**webhook(receiver))

    run = await run_to_the_end(api)
    await until(lambda: receiver.has(run))

    assert sent(receiver, run) == run  # the events as sinks and WebSocket clients get them
    assert all(valid for _, _, valid in receiver.requests)
    for event, headers, _ in receiver.requests:
        assert headers["X-Cortexd-Event"] == event["type"]
        assert headers["X-Cortexd-Seq"] == str(event["seq"])
        assert headers["Content-Type"] == "application/json"
    assert receiver.seqs() == sorted(set(receiver.seqs()))


async def test_only_the_configured_event_types_are_sent(
    make_api: ApiFactory, receiver: Receiver
) -> None:
    await receiver.start()
    api = await make_api(**webhook(receiver, events=["workflow.run.*"]))

    run = await run_to_the_end(api)
    run_events = [e for e in run if e["type"].startswith("workflow.run.")]
    await until(lambda: receiver.has(run_events))

    # In seq order, so once the last run event is in, any other event would have come before it.
    assert [event for event, _, _ in receiver.requests] == run_events


async def test_a_receiver_that_was_down_gets_everything_once_it_is_up(
    make_api: ApiFactory, receiver: Receiver
) -> None:
    with structlog.testing.capture_logs() as logs:
        api = await make_api(**webhook(receiver))
        run = await run_to_the_end(api)  # nothing listens on the receiver's port yet
        await until(lambda: any(e["event"] == "webhook_attempt_failed" for e in logs))

        await receiver.start()
        await until(lambda: receiver.has(run))
        assert sent(receiver, run) == run

        # Then it answers 503 three times: the same event is sent again until it is taken.
        receiver.failing = 3
        before = len(receiver.requests)
        second = await run_to_the_end(api, "h")
        await until(lambda: receiver.has(second))

    again = receiver.seqs()[before:]
    first = again[0]
    assert again == [first] * 4 + [e["seq"] for e in second if e["seq"] > first]
    assert SECRET not in repr(logs)


async def test_a_restart_resumes_from_the_cursor(make_api: ApiFactory, receiver: Receiver) -> None:
    await receiver.start()
    first = await make_api(**webhook(receiver))
    before = await run_to_the_end(first)
    await until(lambda: receiver.has(before))
    await first.client.close()
    sent_before = receiver.seqs()

    second = await make_api(**webhook(receiver))
    after = await run_to_the_end(second, "h")
    await until(lambda: receiver.has(after))

    resent = receiver.seqs()[len(sent_before) :]
    assert min(resent) > max(sent_before)  # nothing delivered before the restart came again
    assert sent(receiver, after) == after


async def test_events_stored_while_the_receiver_refused_them_are_sent_after_a_restart(
    make_api: ApiFactory, receiver: Receiver
) -> None:
    await receiver.start()
    receiver.failing = 10**6
    first = await make_api(**webhook(receiver))  # max_attempts 2: then a pause, and again
    run = await run_to_the_end(first)
    await until(lambda: len(receiver.requests) >= 7)
    await first.client.close()
    refused = receiver.seqs()

    receiver.failing = 0
    await make_api(**webhook(receiver))
    await until(lambda: receiver.has(run))

    # A refused event is tried again across pauses, never skipped, and after the restart too.
    assert len(set(refused[-5:])) == 1
    assert receiver.seqs()[len(refused)] == refused[-1]
    assert sent(receiver, run)[-len(run) :] == run
    assert receiver.seqs() == sorted(receiver.seqs())


async def test_without_a_url_the_webhook_is_off(make_api: ApiFactory) -> None:
    api = await make_api()
    plugins = await api.call("GET", "/api/plugins", status=200)

    assert await run_to_the_end(api)  # runs are unaffected
    listed = next(p for p in plugins if p["name"] == "plugins.sinks")
    assert listed["source"] == "builtin"
    assert listed["sinks"] is True
