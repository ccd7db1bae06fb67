"""The composition root: builds every part from Settings, wires adapters to the core, and owns
their lifecycle (open in order, close in reverse)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from functools import partial

import aiosqlite
import structlog
from aiohttp import web

from adapters.clock import SystemClock
from adapters.config import Settings
from adapters.http.app import create_app
from adapters.http.keys import ENGINE, PLUGINS, READY_CHECK, SERVICE
from adapters.logging import configure_logging
from adapters.sqlite.checkpoints import SqliteCheckpoints, create_tables
from adapters.sqlite.db import connect, migrate
from adapters.sqlite.plugin_env import SqliteEventLog, SqlitePluginState
from adapters.sqlite.riders import TaskRiders
from adapters.sqlite.store import SqliteStore
from adapters.sqlite.writer import Writer
from core.engine import Engine, EngineSettings
from core.events import EventBus
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
    writer_conn: aiosqlite.Connection
    reader_conn: aiosqlite.Connection
    writer: Writer
    store: SqliteStore
    bus: EventBus
    plugins: Plugins
    plugin_context: PluginContext
    sinks: Sinks
    engine: Engine
    service: WorkflowService

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
        writer_conn = await connect(path)
        await migrate(writer_conn)
        await create_tables(writer_conn)
        reader_conn = await connect(path)
        bus = EventBus()
        writer = Writer(writer_conn, batch_max=settings.storage.batch_max, on_commit=bus.publish)
        writer.start()
        riders = TaskRiders()
        store = SqliteStore(writer, reader_conn, riders)
        sinks = Sinks(plugins.sinks())
        bus.subscribe(sinks)
        sinks.start()
        plugin_context = PluginContext(
            plugin_options=settings.plugins.tables,
            state_factory=partial(SqlitePluginState, writer, reader_conn),
            events=SqliteEventLog(reader_conn),
        )
        await plugins.startup(plugin_context)
        clock = SystemClock()
        engine = Engine(
            store,
            SqliteCheckpoints(writer, reader_conn, riders),
            clock,
            plugins.node_types,
            _engine_settings(settings),
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
                ),
                max_run_input_bytes=limits.max_run_input_bytes,
            ),
        )
        return cls(
            settings,
            writer_conn,
            reader_conn,
            writer,
            store,
            bus,
            plugins,
            plugin_context,
            sinks,
            engine,
            service,
        )

    async def close(self) -> None:
        await self.engine.stop()
        await self.plugins.shutdown(self.plugin_context)
        await self.sinks.stop()
        await self.writer.close()
        await self.reader_conn.close()
        await self.writer_conn.close()

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
    try:
        await daemon.engine.start()
        yield
    finally:
        await daemon.close()


def build_app(settings: Settings, sources: PluginSources | None = None) -> web.Application:
    sources = sources or PluginSources()
    app = create_app(max_request_bytes=settings.limits.max_request_bytes)
    app.cleanup_ctx.append(partial(_lifecycle, settings, sources))
    return app


async def serve(settings: Settings, on_ready: Callable[[], None] | None = None) -> None:
    """Run the daemon until SIGTERM or SIGINT; a second signal exits at once."""
    configure_logging(settings.logging.level, settings.logging.format)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("second_signal_exiting_now", signal=signal.Signals(signum).name)
            os._exit(1)  # committed work is durable; the next start recovers the rest
        log.info("stopping", signal=signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)

    runner = web.AppRunner(build_app(settings), handle_signals=False, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.server.host, settings.server.port)
        await site.start()
        log.info(
            "ready",
            url=f"http://{settings.server.host}:{settings.server.port}",
            database=str(settings.storage.path),
        )
        if on_ready is not None:
            on_ready()
        await stop.wait()
    finally:
        with contextlib.suppress(NotImplementedError):
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
        await runner.cleanup()
    log.info("stopped")
