"""The composition root: builds every part from Settings, wires adapters to the core, and owns
their lifecycle (open in order, close in reverse)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from functools import partial

import aiosqlite
import structlog
from aiohttp import web

from adapters.clock import SystemClock
from adapters.config import Settings
from adapters.housekeeping import Housekeeping
from adapters.http.app import create_app
from adapters.http.auth import Access
from adapters.http.keys import ENGINE, METRICS, PLUGINS, READY_CHECK, SERVICE, SOCKETS
from adapters.metrics import Metrics
from adapters.sqlite.checkpoints import SqliteCheckpoints
from adapters.sqlite.db import connect, prepare_database
from adapters.sqlite.plugin_env import SqliteEventLog, SqlitePluginState
from adapters.sqlite.riders import TaskRiders
from adapters.sqlite.store import SqliteStore
from adapters.sqlite.writer import Writer
from adapters.ws import EventSockets, SocketLimits
from core.engine import Engine, EngineSettings
from core.events import EventBus
from core.loopwatch import LoopWatch, NodeActivity
from core.nodes import PluginContext
from core.plugins import Plugins, build_plugins
from core.service import ServiceLimits, WorkflowService
from core.sinks import Sinks
from core.validation import GraphLimits
from plugins import BUILTINS

log = structlog.get_logger("cortexd.daemon")


@dataclass(frozen=True, slots=True)
class PluginSources:
    """Where plugins come from; tests register objects directly through `extra`."""

    use_entry_points: bool = True
    extra: Sequence[tuple[str, object]] = ()


@dataclass
class Daemon:
    settings: Settings
    reader_conn: aiosqlite.Connection
    writer: Writer
    store: SqliteStore
    bus: EventBus
    plugins: Plugins
    plugin_context: PluginContext
    sinks: Sinks
    engine: Engine
    service: WorkflowService
    housekeeping: Housekeeping
    loop_watch: LoopWatch

    @classmethod
    async def open(cls, settings: Settings, sources: PluginSources | None = None) -> Daemon:
        sources = sources or PluginSources()
        plugins = build_plugins(
            builtins=BUILTINS,
            modules=settings.plugins.modules,
            disabled=settings.plugins.disabled,
            strict=settings.plugins.strict,
            use_entry_points=sources.use_entry_points,
            extra=sources.extra,
        )
        path = settings.storage.path
        await prepare_database(path)
        # What is opened is closed again if a later step fails (a plugin that will not start):
        # aiosqlite's thread would otherwise keep the process alive instead of letting it exit.
        async with contextlib.AsyncExitStack() as opened:
            reader_conn = await connect(path)
            opened.push_async_callback(reader_conn.close)
            bus = EventBus()
            writer = Writer(path, batch_max=settings.storage.batch_max, on_commit=bus.publish)
            await writer.start()
            opened.push_async_callback(writer.close)
            riders = TaskRiders()
            store = SqliteStore(writer, reader_conn, riders)
            sinks = Sinks(plugins.sinks())
            bus.subscribe(sinks)
            sinks.start()
            opened.push_async_callback(sinks.stop)
            plugin_context = PluginContext(
                plugin_options=settings.plugins.tables,
                state_factory=partial(SqlitePluginState, writer, reader_conn),
                events=SqliteEventLog(reader_conn),
            )
            await plugins.startup(plugin_context)
            opened.pop_all()
        clock = SystemClock()
        activity = NodeActivity()
        engine = Engine(
            store,
            SqliteCheckpoints(writer, reader_conn, riders),
            clock,
            plugins.node_types,
            _engine_settings(settings),
            activity,
        )
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
        )
        return cls(
            settings,
            reader_conn,
            writer,
            store,
            bus,
            plugins,
            plugin_context,
            sinks,
            engine,
            service,
            Housekeeping(store, settings.events.retention_days),
            LoopWatch(activity, plugins.providers),
        )

    async def close(self) -> None:
        await self.loop_watch.stop()
        await self.housekeeping.stop()
        await self.engine.stop()
        await self.plugins.shutdown(self.plugin_context)
        await self.sinks.stop()
        await self.writer.close()
        await self.reader_conn.close()

    async def ready(self) -> dict[str, bool]:
        try:
            await self.store.ping()
            store_ok = True
        except Exception:
            store_ok = False
        return {"store": store_ok, "engine": self.engine.accepting}


def _engine_settings(settings: Settings) -> EngineSettings:
    execution = settings.execution
    return EngineSettings(
        max_concurrent_runs=execution.max_concurrent_runs,
        recursion_limit=execution.recursion_limit,
        node_timeout_s=execution.node_timeout_s,
        shutdown_grace_s=execution.shutdown_grace_s,
        checkpoint_retention=settings.storage.checkpoint_retention,
    )


async def _lifecycle(
    settings: Settings, sources: PluginSources, app: web.Application
) -> AsyncIterator[None]:
    daemon = await Daemon.open(settings, sources)
    app[SERVICE] = daemon.service
    app[ENGINE] = daemon.engine
    app[PLUGINS] = daemon.plugins
    app[READY_CHECK] = daemon.ready
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
    app[METRICS].watch(daemon.bus, daemon.engine, app[SOCKETS], daemon.sinks, daemon.writer)
    try:
        await daemon.engine.start()
        daemon.housekeeping.start()
        daemon.loop_watch.start()
        yield
    finally:
        await daemon.close()


def build_app(settings: Settings, sources: PluginSources | None = None) -> web.Application:
    sources = sources or PluginSources()
    app = create_app(
        metrics=Metrics(),
        max_request_bytes=settings.limits.max_request_bytes,
        access=Access.from_settings(settings),
    )
    app.cleanup_ctx.append(partial(_lifecycle, settings, sources))
    return app
