"""Built-in event sinks: a log line per event, and a webhook delivering events at least once.

The webhook never delays a run: its ``cortexd_event`` only wakes a delivery task of its own,
which reads the durable event log from a stored cursor. So an event committed while the
receiver is down, or while the daemon is stopped, is delivered later; nothing is kept only in
memory. ``[plugins.webhook]``: ``url`` (unset: disabled), ``secret``, ``events`` (types or
globs, default all), ``timeout_s``, ``max_attempts``, ``backoff_s``, ``max_backoff_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import aiohttp
import pluggy
import structlog
from yarl import URL

from core.nodes import EventLog, PluginContext, PluginState

hookimpl = pluggy.HookimplMarker("cortexd")
JSON = dict[str, Any]

events_log = structlog.get_logger("cortexd.events")
# Asked first, so an event below the level costs a lookup, not a structlog call (this runs for
# every event of every run; at the default level the node-state lines are not written).
_events_level = logging.getLogger("cortexd.events")

CURSOR_KEY = "cursor"
BATCH = 100
POLL_S = 5.0  # a wake-up can be missed (a full sink queue drops it): look anyway this often
OPTIONS = {"url", "secret", "events", "timeout_s", "max_attempts", "backoff_s", "max_backoff_s"}


# -- the log sink ----------------------------------------------------------------------------


def log_event(event: JSON) -> None:
    """One structured line per event: run events at info, the rest at debug."""
    is_run_event = str(event.get("type", "")).startswith("workflow.run.")
    if not _events_level.isEnabledFor(logging.INFO if is_run_event else logging.DEBUG):
        return
    fields: JSON = {k: event[k] for k in ("seq", "type", "project_id", "run_id") if k in event}
    if "run" in event:
        fields["status"] = event["run"].get("status")
    if "nodeState" in event:
        state = event["nodeState"]
        fields.update(node_id=state.get("node_id"), status=state.get("status"))
    if "graph" in event:
        fields["graph_id"] = event["graph"].get("id")
    if is_run_event:
        events_log.info("workflow_event", **fields)
    else:
        events_log.debug("workflow_event", **fields)


# -- the webhook sink ------------------------------------------------------------------------


class DeliveryFailed(Exception):
    pass


@dataclass(frozen=True, slots=True)
class WebhookOptions:
    url: str
    secret: bytes = field(repr=False)
    events: tuple[str, ...] = ("*",)
    timeout_s: float = 10.0
    max_attempts: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 60.0

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> WebhookOptions | None:
        """The options, or None when no ``url`` is set (the webhook is off)."""
        unknown = set(options) - OPTIONS
        if unknown:
            raise ValueError(f"[plugins.webhook] has unknown keys: {', '.join(sorted(unknown))}")
        url = options.get("url")
        if not url:
            return None
        secret = options.get("secret")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError("[plugins.webhook] url must be an http:// or https:// url")
        # The value is never put in a message: it is a secret.
        if not isinstance(secret, str) or not secret:
            raise ValueError(
                "[plugins.webhook] secret must be set (a string; from the environment, quote "
                "one that reads as a number)"
            )
        events = options.get("events", ["*"])
        if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
            raise ValueError("[plugins.webhook] events must be a list of event types or globs")
        return cls(
            url=url,
            secret=secret.encode(),
            events=tuple(events),
            timeout_s=_number(options, "timeout_s", 10.0),
            max_attempts=max(1, int(_number(options, "max_attempts", 5))),
            backoff_s=_number(options, "backoff_s", 0.5),
            max_backoff_s=_number(options, "max_backoff_s", 60.0),
        )

    def wants(self, event_type: str) -> bool:
        return any(fnmatchcase(event_type, pattern) for pattern in self.events)

    def backoff(self, attempt: int) -> float:
        """The wait after failed attempt `attempt` (1-based): doubling, at most max_backoff_s."""
        return float(min(self.max_backoff_s, self.backoff_s * 2 ** min(attempt - 1, 30)))


def _number(options: Mapping[str, Any], key: str, default: float) -> float:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"[plugins.webhook] {key} must be a positive number")
    return float(value)


def _shown(url: str) -> str:
    """The url for logs: no credentials or query (either may hold a token)."""
    return str(URL(url).with_user(None).with_query(None).with_fragment(None))


def signature(secret: bytes, body: bytes) -> str:
    """The ``X-Cortexd-Signature`` header value: ``sha256=`` and the hex HMAC of the body."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class WebhookDelivery:
    """Owns the delivery task: reads the log from the cursor, POSTs each event, stores the
    cursor after success. Every event is retried until the receiver takes it (at least once)."""

    def __init__(
        self,
        owner: PluginContext,
        options: WebhookOptions,
        session: aiohttp.ClientSession,
        state: PluginState,
        events: EventLog,
        log: Any,
    ) -> None:
        self.owner = owner
        self.options = options
        self.session = session
        self._state = state
        self._events = events
        self._log = log
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.cursor = 0
        self._stored = 0
        self.delivered = 0

    async def start(self) -> None:
        stored = await self._state.get(CURSOR_KEY)
        if stored is None:  # first start: deliver what happens from now on, not the history
            stored = await self._events.last_seq()
            await self._state.set(CURSOR_KEY, stored)
        self.cursor = self._stored = int(stored)
        self._task = asyncio.create_task(self._run(), name="webhook-delivery")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
            if not task.cancelled() and task.exception() is not None:
                self._log.error("webhook_delivery_crashed", error=repr(task.exception()))
        await self._store_cursor()

    async def _run(self) -> None:
        while True:
            try:
                await self._deliver_pending()
            except DeliveryFailed as exc:
                self._log.error(
                    "webhook_delivery_paused",
                    after_seq=self.cursor,
                    error=str(exc),
                    retry_in_s=self.options.max_backoff_s,
                )
                await self._pause()
            except Exception:  # the log could not be read, or the cursor not stored
                self._log.exception("webhook_delivery_error", after_seq=self.cursor)
                await self._pause()

    async def _deliver_pending(self) -> None:
        """Deliver one batch from the cursor, or wait for a wake-up when there is none."""
        self._wake.clear()
        batch = await self._events.since(self.cursor, BATCH)
        if not batch:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_S)
            return
        for event in batch:
            if self.options.wants(str(event.get("type"))):
                await self._deliver(event)
            self.cursor = int(event["seq"])
        await self._store_cursor()

    async def _pause(self) -> None:
        """Keep what was delivered, wait, then go on from the first event not delivered."""
        try:
            await self._store_cursor()
        except Exception:
            self._log.exception("webhook_cursor_not_stored", cursor=self.cursor)
        await asyncio.sleep(self.options.max_backoff_s)

    async def _deliver(self, event: JSON) -> None:
        """POST one event; up to max_attempts tries with exponential backoff in between."""
        body = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "cortexd-webhook",
            "X-Cortexd-Event": str(event.get("type")),
            "X-Cortexd-Seq": str(event["seq"]),
            "X-Cortexd-Signature": signature(self.options.secret, body),
        }
        error = ""
        for attempt in range(1, self.options.max_attempts + 1):
            if attempt > 1:
                await asyncio.sleep(self.options.backoff(attempt - 1))
            try:
                async with self.session.post(
                    self.options.url,
                    data=body,
                    headers=headers,
                    allow_redirects=False,  # a redirect must not carry signed events elsewhere
                    timeout=aiohttp.ClientTimeout(total=self.options.timeout_s),
                ) as response:
                    if 200 <= response.status < 300:
                        self.delivered += 1
                        return
                    error = f"answered {response.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            self._log.warning(
                "webhook_attempt_failed", seq=event["seq"], attempt=attempt, error=error
            )
        raise DeliveryFailed(f"{self.options.max_attempts} attempts failed, the last {error}")

    async def _store_cursor(self) -> None:
        if self.cursor != self._stored:
            await self._state.set(CURSOR_KEY, self.cursor)
            self._stored = self.cursor


# One delivery per started daemon (the plugin is this module, so its state lives here).
_deliveries: list[WebhookDelivery] = []


@hookimpl
def cortexd_event(event: JSON) -> None:
    """Both sinks in one queue worker (each is a few microseconds, and never waits): wake the
    webhook's delivery task, which reads the event from the log itself, and log the event."""
    for delivery in _deliveries:
        delivery.wake()
    log_event(event)


@hookimpl
async def cortexd_startup(ctx: PluginContext) -> None:
    options = WebhookOptions.parse(ctx.options("webhook"))
    if options is None:
        return
    if ctx.events is None:
        raise RuntimeError("the webhook needs the event log, which this daemon does not give")
    session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), trust_env=False)
    log = ctx.log.bind(plugin="webhook")
    delivery = WebhookDelivery(ctx, options, session, ctx.state("webhook"), ctx.events, log)
    try:
        await delivery.start()
    except BaseException:
        await session.close()
        raise
    _deliveries.append(delivery)
    log.info(
        "webhook_ready",
        url=_shown(options.url),
        events=list(options.events),
        cursor=delivery.cursor,
    )


@hookimpl
async def cortexd_shutdown(ctx: PluginContext) -> None:
    for delivery in [d for d in _deliveries if d.owner is ctx]:
        _deliveries.remove(delivery)
        try:
            await delivery.stop()
        finally:
            await delivery.session.close()
