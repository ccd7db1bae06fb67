"""Building the PluginManager and the typed facade the rest of cortexd calls hooks through.

Registration order: built-ins, then entry points of group ``cortexd``, then modules named in
``[plugins] modules``. Built-ins go through the same path as third-party modules.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any, cast

import pluggy
import structlog

from core import hookspecs
from core.errors import PluginError
from core.nodes import NodeType, PluginContext

log = structlog.get_logger("cortexd.plugins")

Sink = Callable[..., Any]  # called as sink(event=...)
_NODE_ATTRS = ("name", "title", "description", "config_schema")


async def await_me_maybe(value: Any) -> Any:
    """Hooks may be sync or async: the one place their results are awaited."""
    if inspect.isawaitable(value):
        return await value
    return value


@dataclass(frozen=True, slots=True)
class PluginInfo:
    name: str
    version: str | None
    source: str  # "builtin" | "entrypoint" | "module"
    node_types: tuple[str, ...] = ()
    sinks: bool = False


@dataclass(slots=True)
class LoadReport:
    loaded: list[tuple[str, str, str | None]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)


def new_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def load_plugins(
    pm: pluggy.PluginManager,
    *,
    builtins: Sequence[str],
    modules: Sequence[str] = (),
    disabled: Sequence[str] = (),
    strict: bool = True,
    use_entry_points: bool = True,
) -> LoadReport:
    """Register built-ins, entry points and configured modules, in that order.

    A plugin that fails to import, or implements a hook that does not exist, is a PluginError
    naming it; with ``strict=False`` it is skipped and reported instead.
    """
    report = LoadReport()
    for name in disabled:
        pm.set_blocked(name)

    def register(name: str, source: str, version: str | None, load: Callable[[], object]) -> None:
        if pm.is_blocked(name) or pm.has_plugin(name):
            return
        try:
            plugin = load()
            pm.register(plugin, name=name)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            if strict:
                raise PluginError(f"plugin {name!r} ({source}) failed to load: {reason}") from exc
            log.warning("plugin_skipped", plugin=name, source=source, reason=reason)
            report.skipped.append((name, reason))
            return
        report.loaded.append((name, source, version))

    for module in builtins:
        register(module, "builtin", None, partial(importlib.import_module, module))
    if use_entry_points:
        for ep in entry_points(group=hookspecs.PROJECT):
            version = ep.dist.version if ep.dist is not None else None
            register(ep.name, "entrypoint", version, ep.load)
    for module in modules:
        register(module, "module", None, partial(importlib.import_module, module))
    _check_pending(pm, strict, report)
    return report


def _check_pending(pm: pluggy.PluginManager, strict: bool, report: LoadReport) -> None:
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin) or repr(exc.plugin)
        if strict:
            raise PluginError(f"plugin {name!r}: {exc}") from exc
        pm.unregister(exc.plugin)
        report.loaded = [entry for entry in report.loaded if entry[0] != name]
        report.skipped.append((name, str(exc)))
        _check_pending(pm, strict, report)


class Plugins:
    """Typed facade over ``pm.hook``: one method per hook, so call sites are type-checked."""

    def __init__(self, pm: pluggy.PluginManager, report: LoadReport) -> None:
        self._pm = pm
        self._report = report
        self.node_types: dict[str, NodeType] = {}
        self._providers: dict[str, str] = {}
        for impl in pm.hook.cortexd_node_types.get_hookimpls():
            provided: list[object] = cast(list[object], impl.function()) or []
            for node_type in provided:
                self._add_node_type(impl.plugin_name, node_type)

    def _add_node_type(self, plugin: str, node_type: object) -> None:
        missing = [a for a in _NODE_ATTRS if not hasattr(node_type, a)]
        execute = getattr(node_type, "execute", None)
        if missing or not inspect.iscoroutinefunction(execute):
            what = ", ".join(missing) or "an `async def execute(ctx, config, state)`"
            raise PluginError(f"plugin {plugin!r}: node type {node_type!r} lacks {what}")
        name: str = node_type.name  # type: ignore[attr-defined]
        if name in self._providers:
            raise PluginError(
                f"node type {name!r} is provided by both plugin {self._providers[name]!r} "
                f"and plugin {plugin!r}"
            )
        self._providers[name] = plugin
        self.node_types[name] = node_type  # type: ignore[assignment]

    @property
    def providers(self) -> dict[str, str]:
        """Node type name -> the plugin that provides it."""
        return dict(self._providers)

    def sinks(self) -> list[tuple[str, Sink]]:
        return [
            (impl.plugin_name, impl.function)
            for impl in reversed(self._pm.hook.cortexd_event.get_hookimpls())
        ]

    async def startup(self, ctx: PluginContext) -> None:
        """Start plugins in registration order; if one fails, those already started are shut
        down (their sessions and tasks must not outlive a failed start) and the error names it."""
        started: set[str] = set()
        for impl in self._pm.hook.cortexd_startup.get_hookimpls():  # registration order
            try:
                await await_me_maybe(impl.function(ctx=ctx))
            except Exception as exc:
                await self.shutdown(ctx, only=started)
                raise PluginError(f"plugin {impl.plugin_name!r} failed to start: {exc}") from exc
            started.add(impl.plugin_name)

    async def shutdown(self, ctx: PluginContext, only: set[str] | None = None) -> None:
        for impl in reversed(self._pm.hook.cortexd_shutdown.get_hookimpls()):  # last in, first out
            if only is not None and impl.plugin_name not in only:
                continue
            try:
                await await_me_maybe(impl.function(ctx=ctx))
            except Exception:
                log.exception("plugin_shutdown_failed", plugin=impl.plugin_name)

    def info(self) -> list[PluginInfo]:
        sinks = {name for name, _ in self.sinks()}
        return [
            PluginInfo(
                name=name,
                version=version,
                source=source,
                node_types=tuple(n for n, p in self._providers.items() if p == name),
                sinks=name in sinks,
            )
            for name, source, version in self._report.loaded
        ]

    @property
    def skipped(self) -> list[tuple[str, str]]:
        return list(self._report.skipped)


def build_plugins(
    *,
    builtins: Sequence[str],
    modules: Sequence[str] = (),
    disabled: Sequence[str] = (),
    strict: bool = True,
    use_entry_points: bool = True,
    extra: Sequence[tuple[str, ModuleType | object]] = (),
) -> Plugins:
    """A fresh PluginManager, loaded, behind its facade. `extra` registers objects (tests)."""
    pm = new_plugin_manager()
    report = load_plugins(
        pm,
        builtins=builtins,
        modules=modules,
        disabled=disabled,
        strict=strict,
        use_entry_points=use_entry_points,
    )
    for name, plugin in extra:
        pm.register(plugin, name=name)
        report.loaded.append((name, "module", None))
    _check_pending(pm, strict, report)
    return Plugins(pm, report)
