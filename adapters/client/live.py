"""Following a run over the daemon's WebSocket: `GET /api/projects/{p}/ws?since=SEQ&run_id=ID`.

Imported only when a watch starts (it imports aiohttp, which `cortexd --help` must not pay for).
One `GET .../status` gives the table to start from; after that every event that arrives is
applied to it (a node's status, progress, attempts, times; the run's status) and shown. A socket
closed with 1013 (this client fell behind), 1001 (the daemon shuts down) or dropped is reopened
with the `seq` of the last event shown, a few times; when no socket can be had, `Fallback` says
from which `seq` polling takes over.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from adapters.client.api import Api
from adapters.client.watch import (
    EXIT_FOR_STATUS,
    EXIT_INPUT_REQUIRED,
    EXIT_TIMED_OUT,
    Ending,
    View,
)

JSON = dict[str, Any]

RECONNECTS = 5  # in a row, without an event in between
RECONNECT_DELAY_S = 0.2  # times the attempt number
REDRAW_S = 0.5  # how often a quiet socket still redraws (running durations tick)
CONNECT_TIMEOUT_S = 5.0
_DONE = frozenset({"completed", "skipped"})


@dataclass(frozen=True)
class Fallback:
    """No WebSocket (any more): poll the run's events after `since` instead."""

    since: int
    reason: str


class RunState:
    """The run's status document (`GET .../status`), kept current by applying events to it."""

    def __init__(self, status: JSON) -> None:
        self.status: JSON = dict(status)
        self.status["node_states"] = [dict(s) for s in status.get("node_states") or []]

    def apply(self, event: JSON) -> None:
        node = event.get("nodeState")
        if isinstance(node, dict):
            states: list[JSON] = self.status["node_states"]
            index = next(
                (i for i, s in enumerate(states) if s.get("node_id") == node.get("node_id")), None
            )
            if index is None:
                states.append(dict(node))
            else:
                states[index] = {**states[index], **node}
            self._recount()
        run = event.get("run")
        if isinstance(run, dict):
            for key in ("status", "pause_reason", "prompt", "started_at"):
                if key in run:
                    self.status[key] = run[key]

    def _recount(self) -> None:
        states: list[JSON] = self.status["node_states"]
        total = sum(
            1.0 if s.get("status") in _DONE else float(s.get("progress") or 0.0) for s in states
        )
        self.status["progress"] = round(total / len(states), 4) if states else 0.0
        self.status["current_node"] = next(
            (s.get("node_id") for s in states if s.get("status") == "running"), None
        )


def ending_of(event: JSON) -> Ending | None:
    """How the watch ends after this event, if it does."""
    run = event.get("run")
    if not isinstance(run, dict):
        return None
    state = str(run.get("status"))
    if state in EXIT_FOR_STATUS:
        return Ending(state, EXIT_FOR_STATUS[state], run)
    if state == "paused" and run.get("pause_reason") == "input_required":
        return Ending("input_required", EXIT_INPUT_REQUIRED, run)
    return None


class _Dropped(Exception):
    """The socket ended before the run did, after showing the events up to `since`."""

    def __init__(self, reason: str, since: int, progressed: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.since = since
        self.progressed = progressed  # it brought at least one event: a fresh run of retries


def follow(
    api: Api,
    run_id: str,
    view: View,
    status: JSON,
    *,
    since: int,
    deadline: float | None,
    clock: Callable[[], float] = time.monotonic,
) -> Ending | Fallback:
    """Show the run's events after `since`, as they come, until it ends or `deadline` passes."""
    return asyncio.run(_follow(api, run_id, view, RunState(status), since, deadline, clock))


async def _follow(
    api: Api,
    run_id: str,
    view: View,
    state: RunState,
    since: int,
    deadline: float | None,
    clock: Callable[[], float],
) -> Ending | Fallback:
    headers = {"Authorization": f"Bearer {api.token}"} if api.token else {}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S)
    failures = 0
    ever_opened = False
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as http:
        while True:
            try:
                ws = await http.ws_connect(_socket_url(api, run_id, since), heartbeat=30.0)
            except aiohttp.WSServerHandshakeError as exc:  # refused (401, 403, 404, 429...)
                return Fallback(since, f"the WebSocket was refused (HTTP {exc.status})")
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                failures += 1
                reason = f"cannot open the WebSocket: {exc or type(exc).__name__}"
                if not ever_opened or failures > RECONNECTS:
                    return Fallback(since, reason)
                await asyncio.sleep(RECONNECT_DELAY_S * failures)
                continue
            ever_opened = True
            try:
                async with ws:
                    return await _receive(ws, api, run_id, view, state, since, deadline, clock)
            except _Dropped as dropped:
                since = dropped.since
                failures = 1 if dropped.progressed else failures + 1
                if failures > RECONNECTS:
                    return Fallback(since, dropped.reason)
                await asyncio.sleep(RECONNECT_DELAY_S * failures)


async def _receive(
    ws: aiohttp.ClientWebSocketResponse,
    api: Api,
    run_id: str,
    view: View,
    state: RunState,
    since: int,
    deadline: float | None,
    clock: Callable[[], float],
) -> Ending:
    got_event = False
    while True:
        wait = REDRAW_S if deadline is None else min(REDRAW_S, deadline - clock())
        if wait <= 0:
            return Ending("timed out", EXIT_TIMED_OUT)
        try:
            message = await ws.receive(timeout=wait)
        except TimeoutError:
            view.update(state.status, [])  # nothing new: redraw, so running durations tick
            continue
        except (aiohttp.ClientError, OSError) as exc:
            raise _Dropped(str(exc) or type(exc).__name__, since, got_event) from None
        if message.type is not aiohttp.WSMsgType.TEXT:
            extra = f": {message.extra}" if message.extra else ""
            raise _Dropped(f"the WebSocket closed ({ws.close_code}{extra})", since, got_event)
        try:
            event: Any = json.loads(message.data)
        except json.JSONDecodeError:
            continue
        if not isinstance(event, dict):
            continue
        if event.get("type") == "resume_gap":
            # Events were lost to retention: start again from the run's status as it is now.
            state.status = RunState(api.run_status(run_id)).status
            view.update(state.status, [])
            continue
        seq = event.get("seq")
        if not isinstance(seq, int) or event.get("run_id") != run_id or seq <= since:
            continue  # a reply to a client message, another run's event, or one already shown
        since = seq
        got_event = True
        state.apply(event)
        view.update(state.status, [event])
        ending = ending_of(event)
        if ending is not None:
            return ending


def _socket_url(api: Api, run_id: str, since: int) -> str:
    project = urllib.parse.quote(api.project, safe="")
    query = urllib.parse.urlencode({"since": str(since), "run_id": run_id})
    return f"{api.url.rstrip('/')}/api/projects/{project}/ws?{query}"
