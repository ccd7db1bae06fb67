"""`cortexd serve`: the process lifecycle around the app — sites (TCP, Unix, inherited
sockets), signals, systemd notifications, reload on SIGHUP, graceful stop."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
import socket
from collections.abc import Callable, Coroutine, Mapping, MutableMapping
from functools import partial
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from adapters import systemd
from adapters.config import CONFIG_ENV_VAR, ConfigError, Settings, load_settings, settings_summary
from adapters.daemon import build_app, new_instance_id
from adapters.http.auth import tokens_from
from adapters.http.keys import ACCESS, ENGINE, SOCKETS, STORE_WRITER
from adapters.logging import AccessLog, configure_logging, set_level
from adapters.sql.batching import GroupCommit
from core.engine import Engine

log = structlog.get_logger("cortexd.serve")


class StartupError(Exception):
    """A start-up check refused to serve; the message tells the operator what to change."""


# aiohttp's wait for in-flight requests at stop (its default is 60 s). The engine's drain comes
# after it, so TimeoutStopSec= in config/cortexd.service must exceed this plus
# [execution] shutdown_grace_s plus the engine's cancel grace.
HTTP_SHUTDOWN_TIMEOUT_S = 15.0
STATUS_INTERVAL_S = 1.0
# What SIGHUP applies to the running daemon; any other changed key is logged as needing a restart.
LIVE_KEYS = frozenset({"logging.level", "execution.max_concurrent_runs", "auth.tokens"})


async def serve(
    settings: Settings,
    config_path: Path | None = None,
    on_ready: Callable[[], None] | None = None,
    environ: MutableMapping[str, str] | None = None,
) -> None:
    """Run the daemon until SIGTERM or SIGINT (a second one exits at once); SIGHUP re-reads
    ``config_path`` (None: ``$CORTEXD_CONFIG`` or the defaults, as at start) and applies what
    can change live. systemd is told of each step through sd_notify, when it listens."""
    instance = new_instance_id()
    configure_logging(settings.logging.level, settings.logging.format, instance=instance)
    environ = os.environ if environ is None else environ
    try:
        systemd_env = systemd.take_environment(environ)
        notifier = systemd.Notifier(systemd.notify_socket(systemd_env))
        watchdog_s = systemd.watchdog_interval(systemd_env, os.getpid())
        fds = systemd.listen_fds(systemd_env, os.getpid())
        inherited = systemd.inherited_sockets(fds)
    except systemd.SystemdError as exc:
        raise StartupError(str(exc)) from exc
    _refuse_unauthenticated_exposure(settings, inherited)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    hup = asyncio.Event()

    def on_stop_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("second_signal_exiting_now", signal=signal.Signals(signum).name)
            os._exit(1)  # committed work is durable; the next start recovers the rest
        log.info("stopping", signal=signal.Signals(signum).name)
        stop.set()

    def on_hup() -> None:
        if stop.is_set():
            log.info("reload_ignored", reason="stopping")
        else:
            hup.set()

    # Installed before start-up and kept until the end: SIGHUP's default action would kill the
    # daemon, SIGTERM's would skip the drain without a word.
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_stop_signal, signum)
    loop.add_signal_handler(signal.SIGHUP, on_hup)

    runner = web.AppRunner(
        build_app(settings, instance=instance),
        handle_signals=False,
        access_log_class=AccessLog,
        access_log=logging.getLogger("aiohttp.access"),
        shutdown_timeout=HTTP_SHUTDOWN_TIMEOUT_S,
    )
    tasks = _Tasks(on_failure=stop.set)
    try:
        # Migrations, plugins and recovery scheduling all happen in the app's start-up.
        await runner.setup()
        sites = _sites(runner, settings, inherited)
        for site in sites:
            await site.start()
        engine = runner.app[ENGINE]
        log.info(
            "ready",
            urls=[site.name for site in sites],
            socket_activated=[name for _, name in fds],
            # Where the store is: the SQLite file, or PostgreSQL's host:port/dbname (no secret).
            database=_store_where(settings),
            # The loop actually running ("uvloop" or "asyncio"), not the setting asked for.
            event_loop=type(asyncio.get_running_loop()).__module__.split(".")[0],
        )
        notifier.ready()
        tasks.start(
            systemd.status_updates(
                notifier, partial(_status, engine, stop), STATUS_INTERVAL_S, engine.counts
            ),
            "status",
        )
        if watchdog_s is not None:
            tasks.start(systemd.watchdog_pings(notifier, watchdog_s), "watchdog")
        reload = _reload_on_hup(hup, notifier, runner.app, settings, config_path, environ)
        tasks.start(reload, "reload")
        tasks.start(_fail_with(runner.app[STORE_WRITER]), "store-writer")
        if on_ready is not None:
            on_ready()
        await stop.wait()
        notifier.stopping()
    finally:
        try:
            await runner.cleanup()
            # The watchdog pings on through the drain above; only now are the tasks reaped.
            await tasks.close()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
    log.info("stopped")


class _Tasks:
    """serve()'s background tasks: kept until shutdown and reaped then, so no exception is
    lost. One that fails stops the daemon rather than leave it running without, say, its
    watchdog pings, which would only end later and less clearly."""

    def __init__(self, on_failure: Callable[[], None]) -> None:
        self._on_failure = on_failure
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._done)
        self._tasks.append(task)

    def _done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("background_task_failed", task=task.get_name(), exc_info=task.exception())
            self._on_failure()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for task in self._tasks:
            if not task.cancelled():
                task.result()  # re-raises what _done() logged: the exit status shows it


async def _fail_with(writer: GroupCommit) -> None:
    """Fails when the store's writer dies: the daemon stops and exits non-zero (its
    supervisor starts it afresh) rather than serve on answering every write 503."""
    raise await writer.died()


def _sites(
    runner: web.AppRunner, settings: Settings, inherited: list[socket.socket]
) -> list[web.BaseSite]:
    """The sockets systemd passed, else ``[server] unix_socket``, else ``[server] host:port``."""
    if inherited:
        return [web.SockSite(runner, sock) for sock in inherited]
    server = settings.server
    if server.unix_socket is not None:
        return [web.UnixSite(runner, server.unix_socket)]
    return [web.TCPSite(runner, server.host, server.port)]


def _refuse_unauthenticated_exposure(settings: Settings, inherited: list[socket.socket]) -> None:
    """Without [auth], anyone who can reach the socket can run workflows: only loopback (or a
    Unix socket, guarded by its file mode) is safe. Checked on the addresses actually served."""
    if settings.auth.enabled:
        return
    if inherited:
        hosts = [
            str(sock.getsockname()[0])
            for sock in inherited
            if sock.family in (socket.AF_INET, socket.AF_INET6)
        ]
    elif settings.server.unix_socket is None:
        hosts = [settings.server.host]
    else:
        hosts = []
    for host in hosts:
        if not is_loopback(host):
            raise StartupError(
                f"refusing to listen on {host!r}: it is not a loopback address and [auth] is "
                "disabled; set [auth] enabled = true, or listen on 127.0.0.1"
            )


def is_loopback(host: str) -> bool:
    """Whether ``host`` only ever listens on this machine. A name other than localhost counts
    as exposed: what it resolves to is not ours to trust."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _store_where(settings: Settings) -> str:
    if settings.storage.url:
        from adapters.postgres.db import describe

        return f"postgresql://{describe(settings.storage.url)}"
    return str(settings.storage.path)


def _status(engine: Engine, stop: asyncio.Event) -> str:
    """This daemon's running runs and the store's queue (shared by every daemon on it); with
    other daemons executing runs too, how many run in all."""
    store = engine.scheduler.counts
    executing = store.running - (store.claimable - store.pending)  # owned by a daemon
    if executing > engine.running:
        counts = f"{engine.running} running here ({executing} in all), {store.claimable} queued"
    else:
        counts = f"{engine.running} running, {store.claimable} queued"
    return f"stopping: {counts}" if stop.is_set() else counts


async def _reload_on_hup(
    hup: asyncio.Event,
    notifier: systemd.Notifier,
    app: web.Application,
    settings: Settings,
    config_path: Path | None,
    environ: Mapping[str, str],
) -> None:
    """One reload per SIGHUP (those arriving during a reload fold into the next one)."""
    while True:
        await hup.wait()
        hup.clear()
        notifier.reloading()
        settings = await _reload(app, settings, config_path, environ)
        notifier.ready()  # also after a failed reload: the daemon serves on, unchanged


async def _reload(
    app: web.Application, current: Settings, config_path: Path | None, environ: Mapping[str, str]
) -> Settings:
    """Validate the configuration again and apply what can change live. Returns the settings
    now in effect: the current ones with the live keys replaced."""
    source = str(config_path) if config_path is not None else environ.get(CONFIG_ENV_VAR)
    try:
        new = await asyncio.to_thread(load_settings, config_path, environ)
    except (ConfigError, OSError) as exc:
        problems = list(exc.problems) if isinstance(exc, ConfigError) else [str(exc)]
        log.error("reload_failed", config=source, problems=problems, keeping="current settings")
        return current
    set_level(new.logging.level)
    app[ENGINE].set_max_concurrent_runs(new.execution.max_concurrent_runs)
    # Tokens are swapped whole; sockets opened with a token now gone or narrowed are closed.
    app[ACCESS].replace_tokens(tokens_from(new.auth.tokens))
    revoked = await app[SOCKETS].revoke(app[ACCESS])
    changed = _changed_keys(current, new)
    log.info(
        "reloaded",
        config=source,
        applied=sorted(changed & LIVE_KEYS),
        tokens=len(new.auth.tokens),
        sockets_closed=revoked,
    )
    if changed - LIVE_KEYS:
        log.warning("restart_required", keys=sorted(changed - LIVE_KEYS))
    return current.model_copy(
        update={
            "logging": current.logging.model_copy(update={"level": new.logging.level}),
            "execution": current.execution.model_copy(
                update={"max_concurrent_runs": new.execution.max_concurrent_runs}
            ),
            "auth": current.auth.model_copy(update={"tokens": new.auth.tokens}),
        }
    )


def _changed_keys(old: Settings, new: Settings) -> set[str]:
    before = _flatten(settings_summary(old, redact=False))
    after = _flatten(settings_summary(new, redact=False))
    return {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
