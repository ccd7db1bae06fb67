"""Live events over WebSocket: `GET /api/projects/{p}/ws[?since=SEQ][&run_id=ID]`.

Each text frame is one event, the same dict event sinks get. With `since`, stored events after it
are replayed first, then live ones follow: the socket subscribes to the bus *before* reading the
store, so an event committed during the replay is in its queue, and the seam is deduplicated by
`seq`. A `subscribe` to one more run does the same for that run: its stored events first, then its
live ones. A client too slow for its bounded queue (in events, and in bytes) is closed with 1013;
reconnecting with the last `seq` it saw loses nothing. Every close waits for the client at most
`CLOSE_TIMEOUT_S`, then drops the connection: a client that stopped reading holds nothing up.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import WSCloseCode, WSMsgType, web

from adapters.http.auth import Access, Role, Token, principal
from adapters.http.inputs import MAX_SEQ, RUN_ID_PATTERN, optional_query_int, query_value
from adapters.http.problems import BadRequest, TooManyRequests
from core.events import JSON, EventBus, Published
from core.ports import Store

log = structlog.get_logger("cortexd.ws")
REPLAY_PAGE = 500
# How long a close waits for the client (its close frame through a full connection, then its
# answer) before the connection is dropped. Closes of many sockets run at once.
CLOSE_TIMEOUT_S = 2.0
# A client's queue in bytes (the characters of its queued frames): 32 events of the largest
# size `[limits] max_event_bytes` allows by default. One frame is always taken into an empty queue.
QUEUE_BYTES = 32 * 1_048_576
MAX_RUNS_FOLLOWED = 1000  # per socket opened with run_id
_COMMANDS_QUEUED = 16  # subscribe/unsubscribe messages read ahead of the sender
_RUN_ID = re.compile(RUN_ID_PATTERN)


@dataclass(frozen=True, slots=True)
class SocketLimits:
    max_message_bytes: int = 65_536  # from a client; larger closes the socket with 1009
    max_clients: int = 256
    max_clients_per_token: int = 32
    max_queue_bytes: int = QUEUE_BYTES


@dataclass(frozen=True, slots=True)
class _Client:
    token: Token | None  # None: auth is off
    project_id: str
    transport: asyncio.Transport | None = None  # dropped when a close takes too long


@dataclass(frozen=True, slots=True)
class _Command:
    """A client's subscribe or unsubscribe, carried out by the socket's sender, in order."""

    type: str
    run_id: str
    since: int | None = None  # subscribe: replay the run's events after this one


class ClientFeed:
    """One client's subscription: its filters, its bounded queue of live events, and the commands
    it sent.

    One `wake` event stands for everything its sender waits on (an event queued, overflow, a
    command, the socket closing), so waiting costs no task of its own per event."""

    def __init__(
        self,
        project_id: str,
        run_ids: set[str] | None,
        queue_size: int,
        max_bytes: int = QUEUE_BYTES,
    ) -> None:
        self.project_id = project_id
        self.run_ids = run_ids  # None: every run of the project
        self.pending: deque[Published] = deque()
        self.pending_bytes = 0
        self.queue_size = queue_size
        self.max_bytes = max_bytes
        self.overflowed = False
        self.wake = asyncio.Event()
        self.commands: deque[_Command] = deque()
        self.room = asyncio.Event()  # set each time the sender takes a command

    def __repr__(self) -> str:
        runs = "every run" if self.run_ids is None else f"{len(self.run_ids)} run(s)"
        return f"<WebSocket client of project {self.project_id!r}, {runs}>"

    def wants(self, event: JSON) -> bool:
        if event["project_id"] != self.project_id:
            return False
        return self.run_ids is None or event.get("run_id") in self.run_ids

    def offer(self, item: Published) -> None:
        if self.overflowed or not self.wants(item.event):
            return
        size = len(item.text)
        if len(self.pending) >= self.queue_size or (
            self.pending and self.pending_bytes + size > self.max_bytes
        ):
            self.overflowed = True  # never block the writer: this client is dropped instead
            self.pending.clear()
            self.pending_bytes = 0
        else:
            self.pending.append(item)
            self.pending_bytes += size
        self.wake.set()

    def take(self) -> Published:
        item = self.pending.popleft()
        self.pending_bytes -= len(item.text)
        return item


class EventSockets:
    """The WebSocket endpoint and the sockets it keeps (closed with 1001 on shutdown)."""

    def __init__(
        self,
        bus: EventBus,
        store: Store,
        queue_size: int,
        heartbeat_s: float,
        limits: SocketLimits | None = None,
    ) -> None:
        self._bus = bus
        self._store = store
        self._queue_size = queue_size
        self._heartbeat_s = heartbeat_s
        self._limits = limits or SocketLimits()
        # Every socket from before its handshake to its end: what counts against the limits.
        self._sockets: dict[web.WebSocketResponse, _Client] = {}

    @property
    def clients(self) -> int:
        return len(self._sockets)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        project_id = request.match_info["project_id"]
        # Every query parameter is checked here, before the upgrade: after it, an error could
        # only be written into the socket.
        since = optional_query_int(request, "since", 0, MAX_SEQ)
        run_id = _run_id_query(request)
        client = _Client(principal(request), project_id, request.transport)
        self._admit(client)
        ws = web.WebSocketResponse(
            timeout=CLOSE_TIMEOUT_S,
            heartbeat=self._heartbeat_s,
            max_msg_size=self._limits.max_message_bytes,
        )
        self._sockets[ws] = client  # counted from here on: no await between check and count
        try:
            await ws.prepare(request)
            feed = ClientFeed(
                project_id,
                {run_id} if run_id else None,
                self._queue_size,
                self._limits.max_queue_bytes,
            )
            self._bus.subscribe(feed)
            reader = asyncio.create_task(self._read(ws, feed), name="ws-reader")
            try:
                await self._send_events(ws, client, feed, since, run_id, reader)
            finally:
                self._bus.unsubscribe(feed)
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
        finally:
            del self._sockets[ws]
        return ws

    def _admit(self, client: _Client) -> None:
        limits = self._limits
        if len(self._sockets) >= limits.max_clients:
            raise TooManyRequests(
                f"{limits.max_clients} WebSocket clients are connected, the most allowed; "
                "retry later"
            )
        if client.token is None:
            return
        name = client.token.name
        same = sum(1 for c in self._sockets.values() if c.token and c.token.name == name)
        if same >= limits.max_clients_per_token:
            raise TooManyRequests(
                f"token {name!r} has {same} WebSocket clients connected, the most allowed "
                f"per token; close one first"
            )

    async def revoke(self, access: Access) -> int:
        """Close (1008) the sockets whose token a reload removed or narrowed; how many."""
        stale = [
            (ws, client)
            for ws, client in self._sockets.items()
            if ws.prepared
            and client.token is not None
            and not access.still_allows(client.token, Role.READ, client.project_id)
        ]
        await _close_all(stale, WSCloseCode.POLICY_VIOLATION, "token revoked")
        return len(stale)

    async def close_all(self, app: web.Application) -> None:
        live = [(ws, client) for ws, client in self._sockets.items() if ws.prepared]
        await _close_all(live, WSCloseCode.GOING_AWAY, "cortexd is shutting down")

    async def _send_events(
        self,
        ws: web.WebSocketResponse,
        client: _Client,
        feed: ClientFeed,
        since: int | None,
        run_id: str | None,
        reader: asyncio.Task[None],
    ) -> None:
        """Send until the socket closes (the reader ends) or the client falls too far behind.

        `last_sent` is the live stream's position: every event up to it, of the runs followed,
        was sent. A run subscribed to later has its history replayed up to `floors[run]`; its
        live events up to there are duplicates."""
        last_sent = self._bus.last_seq if since is None else since
        floors: dict[str, int] = {}
        reader.add_done_callback(lambda _: feed.wake.set())
        try:
            if since is not None:
                oldest = await self._store.min_event_seq()
                if since < oldest - 1:
                    gap = {"type": "resume_gap", "min_available_seq": oldest}
                    await ws.send_str(json.dumps(gap))
                last_sent = await self._replay(ws, feed, since, run_id, reader)
            while not ws.closed and not reader.done():
                if feed.overflowed:
                    reason = f"client too slow; reconnect with since={last_sent}"
                    await _close(ws, client, WSCloseCode.TRY_AGAIN_LATER, reason)
                    return
                if feed.commands:
                    command = feed.commands.popleft()
                    feed.room.set()
                    await self._carry_out(ws, feed, command, since, floors, reader)
                    continue
                if not feed.pending:
                    feed.wake.clear()
                    await feed.wake.wait()  # an event, overflow, a command, or the socket closing
                    continue
                item = feed.take()
                if item.seq <= last_sent:
                    continue  # already sent by the replay
                if feed.run_ids is not None:
                    run = item.event.get("run_id")
                    if run not in feed.run_ids or item.seq <= floors.get(run, 0):
                        continue  # unsubscribed since it was queued, or sent by its replay
                await ws.send_str(item.text)
                last_sent = item.seq
        except ConnectionResetError:
            return

    async def _carry_out(
        self,
        ws: web.WebSocketResponse,
        feed: ClientFeed,
        command: _Command,
        socket_since: int | None,
        floors: dict[str, int],
        reader: asyncio.Task[None],
    ) -> None:
        run_id = command.run_id
        followed = feed.run_ids
        reply: JSON = {"type": command.type + "d", "run_id": run_id}
        if command.type == "unsubscribe":
            if followed is None:
                detail = "this socket gets every run of the project; connect with run_id to filter"
                reply = {"type": "error", "detail": detail}
            else:
                followed.discard(run_id)
                floors.pop(run_id, None)
            await ws.send_str(json.dumps(reply))
            return
        if followed is None or run_id in followed:  # it gets this run's events already
            await ws.send_str(json.dumps(reply))
            return
        if len(followed) >= MAX_RUNS_FOLLOWED:
            detail = f"this socket follows {len(followed)} runs, the most allowed"
            await ws.send_str(json.dumps({"type": "error", "detail": detail}))
            return
        followed.add(run_id)  # its live events are queued from now on...
        await ws.send_str(json.dumps(reply))
        # ...and its stored ones go first: after the message's since, else the socket's, else
        # all of them (a client following a run wants to know what it did so far).
        since = command.since if command.since is not None else socket_since or 0
        floors[run_id] = await self._replay(ws, feed, since, run_id, reader)

    async def _replay(
        self,
        ws: web.WebSocketResponse,
        feed: ClientFeed,
        since: int,
        run_id: str | None,
        reader: asyncio.Task[None],
    ) -> int:
        """Stored events after `since` (of `run_id`, or of the project); stops early when the
        client goes away. Returns the seq of the last one sent."""
        last_sent = since
        while True:
            page = await self._store.list_events(feed.project_id, last_sent, run_id, REPLAY_PAGE)
            for event in page:
                await ws.send_str(json.dumps(event))
                last_sent = event["seq"]
            if len(page) < REPLAY_PAGE or reader.done() or ws.closed:
                return last_sent

    async def _read(self, ws: web.WebSocketResponse, feed: ClientFeed) -> None:
        """Client messages: subscribe / unsubscribe go to the sender, which carries them out in
        order between events; anything else gets an error frame at once."""
        async for message in ws:
            if message.type is not WSMsgType.TEXT:
                continue
            parsed = _parse(message.data)
            if isinstance(parsed, dict):
                await ws.send_str(json.dumps(parsed))
                continue
            while len(feed.commands) >= _COMMANDS_QUEUED:  # a client far ahead of its replays
                feed.room.clear()
                await feed.room.wait()
            feed.commands.append(parsed)
            feed.wake.set()


def _parse(text: str) -> _Command | JSON:
    """A command, or the error frame that answers the message."""
    try:
        message: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        return {"type": "error", "detail": f"malformed JSON: {exc.msg}"}
    if not isinstance(message, dict) or message.get("type") not in {"subscribe", "unsubscribe"}:
        return {"type": "error", "detail": 'expected {"type": "subscribe"|"unsubscribe", ...}'}
    run_id = message.get("run_id")
    if not isinstance(run_id, str) or not run_id:
        return {"type": "error", "detail": "run_id must be a non-empty string"}
    since = message.get("since")
    if message["type"] == "subscribe" and since is not None:
        if type(since) is not int or not 0 <= since <= MAX_SEQ:
            return {"type": "error", "detail": f"since must be an integer from 0 to {MAX_SEQ}"}
    else:
        since = None
    return _Command(message["type"], run_id, since)


async def _close(ws: web.WebSocketResponse, client: _Client, code: int, reason: str) -> None:
    """Close with `code`: the close frame and the client's answer are waited for at most
    CLOSE_TIMEOUT_S (a client that stopped reading takes neither), then the connection is
    dropped, which also ends a send stuck on it."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await ws.close(code=code, message=reason.encode())
    except TimeoutError:
        if client.transport is not None:
            client.transport.abort()


async def _close_all(
    sockets: Iterable[tuple[web.WebSocketResponse, _Client]], code: int, reason: str
) -> None:
    """Close every socket at once: the whole takes about as long as the slowest, bounded."""
    outcomes = await asyncio.gather(
        *(_close(ws, client, code, reason) for ws, client in sockets), return_exceptions=True
    )
    for outcome in outcomes:
        if isinstance(outcome, Exception):
            log.warning("websocket_close_failed", error=repr(outcome))
        elif isinstance(outcome, BaseException):  # cancelled: the caller is cancelled too
            raise outcome


def _run_id_query(request: web.Request) -> str | None:
    run_id = query_value(request, "run_id")
    if run_id is not None and not _RUN_ID.match(run_id):
        raise BadRequest("query parameter 'run_id' must be a run id (a lowercase UUID)")
    return run_id
