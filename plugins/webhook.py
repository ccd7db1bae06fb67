"""The built-in webhook sink: every event POSTed, signed, to one URL, at least once, in order.

cortexd gives a sink each event once per database, from a cursor kept in the store (see
`core.sinks`): so an event committed while the receiver is down, while the daemon is stopped,
or while another daemon held the duties, is delivered later. This hook retries an event until
the receiver takes it; only the webhook's own delivery waits meanwhile, never a run.
``[plugins.webhook]``: ``url`` (unset: disabled), ``secret``, ``events`` (types or globs,
default all), ``timeout_s``, ``max_attempts`` (per round; a failed round pauses
``max_backoff_s``, then the event is tried again), ``backoff_s``, ``max_backoff_s``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import aiohttp
import pluggy
from yarl import URL

from core.nodes import PluginContext
from core.signing import signature

hookimpl = pluggy.HookimplMarker("cortexd")
JSON = dict[str, Any]
OPTIONS = {"url", "secret", "events", "timeout_s", "max_attempts", "backoff_s", "max_backoff_s"}


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


class WebhookDelivery:
    """POSTs events for one started daemon; every event is retried until the receiver takes
    it (at least once)."""

    def __init__(
        self,
        owner: PluginContext,
        options: WebhookOptions,
        session: aiohttp.ClientSession,
        log: Any,
    ) -> None:
        self.owner = owner
        self.options = options
        self.session = session
        self._log = log
        self.delivered = 0

    async def deliver(self, event: JSON) -> None:
        if not self.options.wants(str(event.get("type"))):
            return
        while True:
            try:
                await self._deliver(event)
                return
            except DeliveryFailed as exc:
                self._log.error(
                    "webhook_delivery_paused",
                    seq=event["seq"],
                    error=str(exc),
                    retry_in_s=self.options.max_backoff_s,
                )
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


# One delivery per started daemon (the plugin is this module, so its state lives here).
_deliveries: list[WebhookDelivery] = []


@hookimpl
async def cortexd_event(event: JSON) -> None:
    for delivery in list(_deliveries):
        await delivery.deliver(event)


@hookimpl
async def cortexd_startup(ctx: PluginContext) -> None:
    options = WebhookOptions.parse(ctx.options("webhook"))
    if options is None:
        return
    session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), trust_env=False)
    log = ctx.log.bind(plugin="webhook")
    _deliveries.append(WebhookDelivery(ctx, options, session, log))
    log.info("webhook_ready", url=_shown(options.url), events=list(options.events))


@hookimpl
async def cortexd_shutdown(ctx: PluginContext) -> None:
    for delivery in [d for d in _deliveries if d.owner is ctx]:
        _deliveries.remove(delivery)
        await delivery.session.close()
