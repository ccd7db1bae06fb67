"""The soak's clients: HTTP calls that ride out daemons being killed, the load, and WebSocket
clients that connect, drop and reconnect (with `since`) and keep every frame for the checks."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from soak_check import Receipt, digest
from yarl import URL

JSON = dict[str, Any]
P = "/api/projects/soak"
DOWN_STATUSES = frozenset({502, 503, 504})
CALL_TRIES = 40  # ~40 s of a daemon being down (each try waits a little longer, up to 1 s)
REQUEST_TIMEOUT_S = 15.0


@dataclass
class Requests:
    """What the soak did, by kind: acknowledged (2xx), refused (4xx: a race with the run's
    state, expected), failed (never answered after every retry), retried (tries after a
    connection error or a 503)."""

    counts: dict[str, Counter[str]] = field(default_factory=dict)

    def note(self, kind: str, what: str, n: int = 1) -> None:
        self.counts.setdefault(kind, Counter())[what] += n

    def summary(self) -> dict[str, dict[str, int]]:
        return {kind: dict(c) for kind, c in sorted(self.counts.items())}


class Api:
    """HTTP to whichever daemon answers; a connection error, timeout or 503 is tried again on
    the next daemon, a bounded number of times."""

    def __init__(self, session: aiohttp.ClientSession, urls: list[str], requests: Requests) -> None:
        self.session = session
        self.urls = urls
        self.requests = requests
        self._next = 0

    async def call(
        self,
        kind: str,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any] | None:
        """(status, JSON body) of the first answer that is not "down", or None."""
        for attempt in range(CALL_TRIES):
            url = self.urls[self._next % len(self.urls)] + path
            self._next += 1
            try:
                async with self.session.request(
                    method,
                    url,
                    json=body,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
                ) as response:
                    data = await response.json(content_type=None)
                    if response.status not in DOWN_STATUSES:
                        outcome = "acknowledged" if response.status < 300 else "refused"
                        self.requests.note(kind, outcome)
                        return response.status, data
            except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError):
                pass
            self.requests.note(kind, "retried")
            await asyncio.sleep(min(1.0, 0.05 * (attempt + 1)))
        self.requests.note(kind, "failed")
        return None

    async def pages(self, path: str) -> list[JSON]:
        """Every item of a paged list, following `Link: rel="next"`."""
        items: list[JSON] = []
        next_url: str | None = self.urls[0] + path
        for _ in range(100_000):
            if next_url is None:
                return items
            url = next_url
            for attempt in range(CALL_TRIES):
                try:
                    async with self.session.get(url) as response:
                        if response.status in DOWN_STATUSES:
                            raise aiohttp.ClientError(f"{response.status}")
                        assert response.status == 200, await response.text()
                        items += await response.json()
                        link = response.links.get("next")
                        next_url = str(response.url.join(URL(str(link["url"])))) if link else None
                        break
                except (aiohttp.ClientError, TimeoutError):
                    await asyncio.sleep(min(1.0, 0.05 * (attempt + 1)))
            else:
                raise RuntimeError(f"no daemon answered {url}")
        raise RuntimeError("more pages than the soak ever makes")


@dataclass
class RunInfo:
    key: str
    graph: str
    gen: int = 0


@dataclass
class World:
    """What the clients know: the runs created, and each run's latest state as seen by the
    watchers (from the highest seq of its run events)."""

    graphs: list[str]
    rng: random.Random
    runs: dict[str, RunInfo] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # acknowledged run ids, in creation order
    keys_sent: set[str] = field(default_factory=set)
    state: dict[str, tuple[int, str, str | None]] = field(default_factory=dict)
    acked: Counter[tuple[str, str]] = field(default_factory=Counter)  # (run, verb) -> 200s
    replayed: int = 0  # creates answered 200: a retry given the run its first attempt made

    def seen(self, event: JSON) -> None:
        run = event.get("run")
        if not isinstance(run, dict):
            return
        old = self.state.get(run["id"])
        if old is None or old[0] < event["seq"]:
            self.state[run["id"]] = (event["seq"], run["status"], run.get("pause_reason"))

    def pick(self, test: Callable[[str, str | None], bool]) -> str | None:
        """A run whose known state passes `test`, among the most recent 300."""
        recent = self.order[-300:]
        candidates = [r for r in recent if r in self.state and test(*self.state[r][1:])]
        return self.rng.choice(candidates) if candidates else None

    def unfinished(self) -> int:
        return sum(
            1 for s in self.state.values() if s[1] not in ("completed", "failed", "cancelled")
        )


async def create(api: Api, world: World) -> None:
    """A run of a random graph; its key is also its `Idempotency-Key`, so a create tried again
    after a lost answer gets the run the first attempt made (200) rather than a second one."""
    graph = world.rng.choice(world.graphs)
    key = uuid.uuid4().hex
    world.keys_sent.add(key)
    answer = await api.call(
        "create",
        "POST",
        f"{P}/workflows/runs",
        {"workflow_id": graph, "input": {"gen": 0, "key": key}},
        headers={"Idempotency-Key": key},
    )
    if answer is not None and answer[0] in (200, 201):
        if answer[0] == 200:
            world.replayed += 1
        world.runs[answer[1]["id"]] = RunInfo(key, graph)
        world.order.append(answer[1]["id"])


async def command(api: Api, world: World, kind: str) -> None:
    """One command on a run it suits (by the watchers' view; a race makes it a 400, counted)."""
    rng = world.rng
    if kind == "pause":
        run_id = world.pick(lambda s, _: s in ("pending", "running"))
        body: JSON = {}
        verb = "pause"
    elif kind == "resume":
        run_id = world.pick(lambda s, why: s == "paused" and why == "requested")
        body, verb = {}, "resume"
    elif kind == "answer":
        run_id = world.pick(lambda s, why: s == "paused" and why == "input_required")
        # Now and then an answer outside the choices: the run asks again (decisions: Approval).
        body = {"value": rng.choice(["yes", "yes", "no", "no", "maybe"])}
        verb = "resume"
    elif kind == "cancel":
        run_id = world.pick(lambda s, _: s in ("pending", "running", "paused"))
        body, verb = {}, "cancel"
    else:  # execute: a failed run from its failure point, a cancelled one afresh
        run_id = world.pick(lambda s, _: s in ("failed", "cancelled") or rng.random() < 0.02)
        body, verb = {}, "execute"
        if run_id is not None and world.state[run_id][1] == "cancelled":
            info = world.runs[run_id]
            info.gen += 1  # never reused, whatever the answer: each fresh start its own gen
            body = {"input": {"gen": info.gen, "key": info.key}}
    if run_id is None:
        return
    answer = await api.call(kind, "POST", f"{P}/workflows/runs/{run_id}/{verb}", body)
    if answer is not None and answer[0] == 200:
        world.acked[(run_id, verb)] += 1


WEIGHTS = {
    "create": 30,
    "pause": 10,
    "resume": 12,
    "answer": 16,
    "cancel": 7,
    "execute": 10,
    "read": 8,
}


async def load(api: Api, world: World, until: float, max_unfinished: int) -> None:
    """One client: actions by weight until the deadline, a short think time between them."""
    kinds = list(WEIGHTS)
    weights = list(WEIGHTS.values())
    for _ in range(10_000_000):
        if time.monotonic() >= until:
            return
        kind = world.rng.choices(kinds, weights)[0]
        if kind == "create" and world.unfinished() >= max_unfinished:
            kind = "answer"
        if kind == "create":
            await create(api, world)
        elif kind == "read":
            run_id = world.pick(lambda s, _: True)
            if run_id is not None:
                await api.call("read", "GET", f"{P}/workflows/runs/{run_id}/status")
        else:
            await command(api, world, kind)
        await asyncio.sleep(world.rng.uniform(0.01, 0.08))


@dataclass
class Sockets:
    """Connection counts of every WebSocket client."""

    connections: int = 0
    failed_connects: int = 0
    dropped_by_client: int = 0
    dropped_by_server: int = 0


class Watcher:
    """A project-wide client: reconnects with `since` = the last seq it got, so its frames,
    across every connection, must be the log itself."""

    def __init__(self, name: str, urls: list[str], world: World, counts: Sockets) -> None:
        self.receipt = Receipt(name, "watcher")
        self.urls, self.world, self.counts = urls, world, counts
        self.last = 0

    def url(self, n: int) -> str:
        return f"{self.urls[n % len(self.urls)]}{P}/ws?since={self.last}"

    def take(self, event: JSON) -> None:
        if "seq" not in event:
            self.receipt.odd.append(json.dumps(event))
            return
        self.receipt.frames.append((event["seq"], event.get("run_id"), digest(event)))
        self.last = max(self.last, event["seq"])
        self.world.seen(event)

    async def on_open(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        return None

    async def on_tick(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        return None

    async def run(
        self, session: aiohttp.ClientSession, stop: asyncio.Event, rng: random.Random
    ) -> None:
        for n in range(1_000_000):
            if stop.is_set():
                return
            try:
                async with session.ws_connect(
                    self.url(n), timeout=aiohttp.ClientWSTimeout(ws_close=2)
                ) as ws:
                    self.counts.connections += 1
                    await self.on_open(ws)
                    await self._read(ws, stop, time.monotonic() + rng.uniform(2, 25))
            except (aiohttp.ClientError, TimeoutError, ConnectionError):
                self.counts.failed_connects += 1
            await asyncio.sleep(rng.uniform(0.05, 0.5))

    async def _read(
        self, ws: aiohttp.ClientWebSocketResponse, stop: asyncio.Event, drop_at: float
    ) -> None:
        while not stop.is_set():
            left = drop_at - time.monotonic()
            if left <= 0:
                self.counts.dropped_by_client += 1
                return  # leaving the block closes the socket
            try:
                message = await ws.receive(timeout=min(left, 0.5))
            except TimeoutError:
                await self.on_tick(ws)
                continue
            if message.type == aiohttp.WSMsgType.TEXT:
                self.take(json.loads(message.data))
                continue
            if message.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.ERROR,
            ):
                self.counts.dropped_by_server += 1
                return


class Follower(Watcher):
    """A client of chosen runs: opens with one (`run_id`, its `since`), subscribes to the others
    with theirs, adds recent runs as they come; its frames of each run must be that run's log."""

    MAX_FOLLOWED = 40

    def __init__(self, name: str, urls: list[str], world: World, counts: Sockets) -> None:
        super().__init__(name, urls, world, counts)
        self.receipt = Receipt(name, "follower")
        self.followed: dict[str, int] = {}  # run -> the last seq of it received
        self.finished: set[str] = set()  # completed (nothing more to come): to unsubscribe
        self.ever: set[str] = set()  # a run let go is not subscribed to again (its log again)

    def url(self, n: int) -> str:
        first = next(iter(self.followed), None)
        if first is None:
            return f"{self.urls[n % len(self.urls)]}{P}/ws?run_id={self._any_run()}&since=0"
        return f"{self.urls[n % len(self.urls)]}{P}/ws?run_id={first}&since={self.followed[first]}"

    def _any_run(self) -> str:
        run_id = self.world.order[-1] if self.world.order else str(uuid.uuid4())
        self.followed.setdefault(run_id, 0)
        self.ever.add(run_id)
        return run_id

    def take(self, event: JSON) -> None:
        if "seq" not in event:
            if event.get("type") not in ("subscribed", "unsubscribed"):
                self.receipt.odd.append(json.dumps(event))
            return
        run_id = event.get("run_id")
        self.receipt.frames.append((event["seq"], run_id, digest(event)))
        if run_id in self.followed:
            self.followed[run_id] = max(self.followed[run_id], event["seq"])
            if event["type"] == "workflow.run.completed":
                self.finished.add(run_id)

    async def on_open(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        for run_id, since in list(self.followed.items())[1:]:
            await ws.send_json({"type": "subscribe", "run_id": run_id, "since": since})

    async def on_tick(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        # A completed run is let go (its log is final: what came must be all of it), but the
        # run the socket was opened with, which stays in the filter.
        first = next(iter(self.followed), None)
        for run_id in list(self.finished - {first}):
            await ws.send_json({"type": "unsubscribe", "run_id": run_id})
            del self.followed[run_id]
            self.finished.discard(run_id)
        if len(self.followed) >= self.MAX_FOLLOWED or not self.world.order:
            return
        run_id = self.world.rng.choice(self.world.order[-20:])
        if run_id not in self.ever:
            self.ever.add(run_id)
            self.followed[run_id] = 0
            await ws.send_json({"type": "subscribe", "run_id": run_id, "since": 0})

    def caught_up(self, last_of_run: dict[str, int]) -> bool:
        return all(self.followed[r] >= last_of_run.get(r, 0) for r in self.followed)
