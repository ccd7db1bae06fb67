"""Every piece of application state, under a typed AppKey (aiohttp's recommended way)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from adapters.http.auth import Access
from adapters.metrics import Metrics
from adapters.sql.batching import GroupCommit
from adapters.ws import EventSockets
from core.engine import Engine
from core.inbound import WebhookService
from core.plugins import Plugins
from core.scheduling import ScheduleService
from core.service import WorkflowService


@dataclass(frozen=True, slots=True)
class Readiness:
    """What `/readyz` reports: each check passed or not, and why not, when known."""

    checks: dict[str, bool]
    detail: str | None = None


ReadyCheck = Callable[[], Awaitable[Readiness]]


@dataclass(frozen=True, slots=True)
class RunPolicy:
    """`[runs]` (DESIGN §10): how long an Idempotency-Key lasts; the longest wait=N."""

    idempotency_ttl_s: float = 86_400.0
    max_wait_s: float = 60.0


SERVICE = web.AppKey("service", WorkflowService)
SCHEDULES = web.AppKey("schedules", ScheduleService)
WEBHOOKS = web.AppKey("webhooks", WebhookService)
RUN_POLICY = web.AppKey("run_policy", RunPolicy)
ENGINE = web.AppKey("engine", Engine)
PLUGINS = web.AppKey("plugins", Plugins)
READY_CHECK = web.AppKey[ReadyCheck]("ready_check")
SOCKETS = web.AppKey("sockets", EventSockets)
ACCESS = web.AppKey("access", Access)
METRICS = web.AppKey("metrics", Metrics)
# The store's one writer: the daemon exits when it dies (adapters/serve.py).
STORE_WRITER = web.AppKey("store_writer", GroupCommit)
