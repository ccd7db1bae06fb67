"""The composition root: builds every part from Settings, wires adapters to the core, and owns
their lifecycle (open in order, close in reverse)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from functools import partial

import structlog
from aiohttp import web

from adapters.backends import Backend, open_backend
from adapters.clock import SystemClock
from adapters.config import Settings
from adapters.housekeeping import Housekeeping
from adapters.http.app import create_app
from adapters.http.auth import Access
from adapters.http.keys import (
    ENGINE,
    METRICS,
    PLUGINS,
    READY_CHECK,
    RUN_POLICY,
    SCHEDULES,
    SERVICE,
    SOCKETS,
    STORE_WRITER,
    WEBHOOKS,
    Readiness,
    RunPolicy,
)
from adapters.metrics import Metrics
from adapters.sql.retention import Retention
from adapters.sql.store import SqlStore
from adapters.ws import EventSockets, SocketLimits
from core.background import Background
from core.duties import Duties
from core.engine import Engine, EngineSettings
from core.errors import StoreUnavailable
from core.events import EventBus
from core.feed import EventFeed
from core.inbound import WebhookService
from core.loopwatch import LoopWatch, NodeActivity
from core.nodes import PluginContext
from core.plugins import Plugins, build_plugins
from core.scheduling import ScheduleFirer, ScheduleService
from core.service import ServiceLimits, WorkflowService, new_id
from core.sinks import Sinks
from core.validation import GraphLimits
from core.waiting import RunWaiters
from plugins import BUILTINS

log = structlog.get_logger("cortexd.daemon")
PEERS_EVERY_S = 1.0


@dataclass(frozen=True, slots=True)
class PluginSources:
    """Where plugins come from; tests register objects directly through `extra`."""

    use_entry_points: bool = True
    extra: Sequence[tuple[str, object]] = ()


def new_instance_id() -> str:
    """A daemon's id for one process lifetime: its host, then random (never reused)."""
    host = "".join(c if c.isalnum() or c in "-." else "-" for c in socket.gethostname())
    return f"{host[:40] or 'host'}-{secrets.token_hex(4)}"


@dataclass
class Daemon:
    settings: Settings
    instance: str
    backend: Backend
    bus: EventBus
    plugins: Plugins
    plugin_context: PluginContext
    sinks: Sinks
    engine: Engine
    service: WorkflowService
    schedules: ScheduleService
    webhooks: WebhookService
    duties: Duties
    loop_watch: LoopWatch
    closing: contextlib.AsyncExitStack
    peers: Background

    @classmethod
    async def open(
        cls, settings: Settings, sources: PluginSources | None = None, instance: str | None = None
    ) -> Daemon:
        sources = sources or PluginSources()
        instance = instance or new_instance_id()
        plugins = build_plugins(
            builtins=BUILTINS,
            modules=settings.plugins.modules,
            disabled=settings.plugins.disabled,
            strict=settings.plugins.strict,
            use_entry_points=sources.use_entry_points,
            extra=sources.extra,
        )
        # What is opened is closed again if a later step fails (a plugin that will not start):
        # a store's threads or connections would otherwise keep the process alive.
        async with contextlib.AsyncExitStack() as opened:
            bus = EventBus()
            backend = await open_backend(settings, instance, bus, opened)
            store = backend.store
            sinks = Sinks(plugins.sinks(), store, store)
            bus.subscribe(sinks)
            plugin_context = PluginContext(
                plugin_options=settings.plugins.tables,
                state_factory=backend.plugin_state,
                events=backend.event_log(),
            )
            await plugins.startup(plugin_context)
            closing = opened.pop_all()
        clock = SystemClock()
        activity = NodeActivity()
        liveness = backend.liveness
        engine = Engine(
            store,
            backend.checkpoints,
            clock,
            plugins.node_types,
            _engine_settings(settings),
            activity,
            instance=instance,
            liveness=liveness,
        )
        bus.subscribe(engine)
        waiters = RunWaiters()
        bus.subscribe(waiters)
        limits = settings.limits
        service = WorkflowService(
            store,
            engine,
            clock,
            plugins.node_types,
            ServiceLimits(
                graph=GraphLimits(
                    max_nodes=limits.max_graph_nodes,
                    max_edges=limits.max_graph_edges,
                    max_node_config_bytes=limits.max_node_config_bytes,
                    max_condition_bytes=limits.max_condition_bytes,
                ),
                max_run_input_bytes=limits.max_run_input_bytes,
                max_event_bytes=limits.max_event_bytes,
            ),
            waiters=waiters,
        )
        housekeeping = Housekeeping(
            store,
            settings.events.retention_days,
            # At most hourly; a tenth of a retention shorter than ten hours.
            interval_s=max(1.0, min(3600.0, settings.events.retention_days * 8640)),
        )
        retention = Retention(
            backend.writer,
            settings.storage.finished_run_retention_days,
            settings.storage.checkpoint_retention,
        )
        schedules = ScheduleService(
            store, store.schedules, clock, new_id, settings.limits.max_run_input_bytes
        )
        webhooks = WebhookService(store, store.webhooks, service, clock, new_id)
        firer = ScheduleFirer(store.schedules, clock, new_id)
        duties = Duties(
            store,
            instance,
            settings.execution.lease_s,
            liveness,
            [
                (sinks.start, sinks.stop),
                (housekeeping.start, housekeeping.stop),
                (retention.start, retention.stop),
                (firer.start, firer.stop),
            ],
        )
        return cls(
            settings,
            instance,
            backend,
            bus,
            plugins,
            plugin_context,
            sinks,
            engine,
            service,
            schedules,
            webhooks,
            duties,
            LoopWatch(activity, plugins.providers),
            closing,
            Background("peers"),
        )

    @property
    def store(self) -> SqlStore:
        return self.backend.store

    @property
    def feed(self) -> EventFeed:
        return self.backend.feed

    async def start(self) -> None:
        await self.engine.start()
        await self.duties.start()
        self.loop_watch.start()
        self.peers.start(self._watch_peers())

    async def close(self) -> None:
        """Stop in the order that loses nothing: no new runs, the running ones drained and
        released for another daemon, the sinks through to the last event, then the plugins
        and the store."""
        await self.loop_watch.stop()
        await self.peers.stop()
        await self.engine.stop()
        await self.duties.stop()
        await self.plugins.shutdown(self.plugin_context)
        await self.closing.aclose()

    async def ready(self) -> Readiness:
        """The store answers reads, its writer takes writes (it is faulty from a write that
        failed on the store until one commits again: see adapters/sql/batching.py), and the
        engine takes runs."""
        detail = None
        try:
            await self.store.ping()
            store_ok = True
        except Exception as exc:
            store_ok = False
            detail = str(exc) if isinstance(exc, StoreUnavailable) else "the store is unreadable"
        writer = self.backend.writer
        problem = writer.death or writer.fault
        if problem is not None:
            detail = str(problem)
        checks = {"store": store_ok, "writes": problem is None, "engine": self.engine.accepting}
        return Readiness(checks, detail)

    async def _watch_peers(self) -> None:
        """What the store needs looked at every second while the daemon serves."""
        refresh = self.backend.refresh
        if refresh is None:
            return
        while True:
            await asyncio.sleep(PEERS_EVERY_S)
            try:
                await refresh()
            except Exception:
                log.exception("peers_unreadable")


def _engine_settings(settings: Settings) -> EngineSettings:
    execution = settings.execution
    return EngineSettings(
        max_concurrent_runs=execution.max_concurrent_runs,
        recursion_limit=execution.recursion_limit,
        node_timeout_s=execution.node_timeout_s,
        shutdown_grace_s=execution.shutdown_grace_s,
        checkpoint_retention=settings.storage.checkpoint_retention,
        lease_s=execution.lease_s,
        max_recoveries=execution.max_recoveries,
        park_after_s=execution.park_after_s,
    )


async def _lifecycle(
    settings: Settings, sources: PluginSources, instance: str | None, app: web.Application
) -> AsyncIterator[None]:
    daemon = await Daemon.open(settings, sources, instance)
    app[SERVICE] = daemon.service
    app[SCHEDULES] = daemon.schedules
    app[WEBHOOKS] = daemon.webhooks
    app[RUN_POLICY] = RunPolicy(settings.runs.idempotency_ttl_s, settings.runs.max_wait_s)
    app[ENGINE] = daemon.engine
    app[PLUGINS] = daemon.plugins
    app[READY_CHECK] = daemon.ready
    app[STORE_WRITER] = daemon.backend.writer
    app[SOCKETS] = EventSockets(
        daemon.bus,
        daemon.store,
        settings.events.ws_queue_size,
        settings.events.ws_heartbeat_s,
        SocketLimits(
            max_message_bytes=settings.limits.max_ws_message_bytes,
            max_clients=settings.limits.max_ws_clients,
            max_clients_per_token=settings.limits.max_ws_clients_per_token,
        ),
    )
    app[METRICS].watch(
        daemon.feed, daemon.engine, app[SOCKETS], daemon.sinks, daemon.backend.writer
    )
    try:
        await daemon.start()
        yield
    finally:
        await daemon.close()


def build_app(
    settings: Settings, sources: PluginSources | None = None, instance: str | None = None
) -> web.Application:
    sources = sources or PluginSources()
    app = create_app(
        metrics=Metrics(),
        max_request_bytes=settings.limits.max_request_bytes,
        access=Access.from_settings(settings),
    )
    app.cleanup_ctx.append(partial(_lifecycle, settings, sources, instance))
    return app
