"""Every piece of application state, under a typed AppKey (aiohttp's recommended way)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from adapters.http.auth import Access
from adapters.metrics import Metrics
from adapters.ws import EventSockets
from core.engine import Engine
from core.plugins import Plugins
from core.service import WorkflowService

ReadyCheck = Callable[[], Awaitable[dict[str, bool]]]

SERVICE = web.AppKey("service", WorkflowService)
ENGINE = web.AppKey("engine", Engine)
PLUGINS = web.AppKey("plugins", Plugins)
READY_CHECK = web.AppKey[ReadyCheck]("ready_check")
SOCKETS = web.AppKey("sockets", EventSockets)
ACCESS = web.AppKey("access", Access)
METRICS = web.AppKey("metrics", Metrics)
