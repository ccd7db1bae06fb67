"""Building the PluginManager and the typed facade the rest of cortexd calls hooks through.

Registration order: built-ins, then entry points of group ``cortexd``, then modules named in
``[plugins] modules``. Built-ins go through the same path as third-party modules. A plugin name
is registered once: a second registration of it is an error naming both.

Every hook is called through pluggy (``pm.subset_hook_caller``), one plugin at a time, so
``tryfirst``/``trylast`` and hook wrappers work as plugin authors expect, and cortexd still
knows which plugin provided a node type, failed to start, or owns a sink.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any

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


@dataclass(frozen=True, slots=True)
class _Candidate:
    """A plugin about to be registered, and how errors name where it came from."""

    name: str
    source: str  # as in PluginInfo.source
    version: str | None
    origin: str  # "entry point 'x' (dist foo 1.0)"
    load: Callable[[], object]


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
    extra: Sequence[tuple[str, ModuleType | object]] = (),
) -> LoadReport:
    """Register built-ins, entry points, configured modules and `extra` objects, in that order.

    A plugin that fails to import, implements a hook that does not exist, or reuses the name
    (or the module) of one registered before is a PluginError naming it (both, for a reused
    name); with ``strict=False`` it is skipped and reported instead. A blocked name is left
    out wherever it appears.
    """
    report = LoadReport()
    for name in disabled:
        pm.set_blocked(name)
    origins: dict[str, str] = {}  # registered name -> _Candidate.origin

    def refuse(candidate: _Candidate, reason: str, message: str, cause: Exception | None) -> None:
        if strict:
            raise PluginError(message) from cause
        log.warning("plugin_skipped", plugin=candidate.name, source=candidate.source, reason=reason)
        report.skipped.append((candidate.name, reason))

    def twice(candidate: _Candidate, first: str) -> None:
        reason = f"registered twice: by {origins.get(first, repr(first))} and by {candidate.origin}"
        refuse(candidate, reason, f"plugin {candidate.name!r} is {reason}", None)

    def register(candidate: _Candidate) -> None:
        name = candidate.name
        if pm.is_blocked(name):
            return
        if name in origins:
            return twice(candidate, name)
        try:
            plugin = candidate.load()
            if (first := pm.get_name(plugin)) is not None:  # one module under a second name
                return twice(candidate, first)
            pm.register(plugin, name=name)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            message = f"plugin {name!r} ({candidate.source}) failed to load: {reason}"
            return refuse(candidate, reason, message, exc)
        origins[name] = candidate.origin
        report.loaded.append((name, candidate.source, candidate.version))

    for candidate in _candidates(builtins, modules, extra, use_entry_points):
        register(candidate)
    _check_pending(pm, strict, report)
    return report


def _candidates(
    builtins: Sequence[str],
    modules: Sequence[str],
    extra: Sequence[tuple[str, object]],
    use_entry_points: bool,
) -> Iterable[_Candidate]:
    for module in builtins:
        load = partial(importlib.import_module, module)
        yield _Candidate(module, "builtin", None, f"built-in {module!r}", load)
    for ep in entry_points(group=hookspecs.PROJECT) if use_entry_points else ():
        version = ep.dist.version if ep.dist is not None else None
        yield _Candidate(ep.name, "entrypoint", version, _entry_point_origin(ep), ep.load)
    for module in modules:
        load = partial(importlib.import_module, module)
        yield _Candidate(module, "module", None, f"module {module!r}", load)
    for name, plugin in extra:
        yield _Candidate(name, "module", None, f"object {name!r}", _given(plugin))


def _entry_point_origin(ep: EntryPoint) -> str:
    dist = f" (dist {ep.dist.name} {ep.dist.version})" if ep.dist is not None else ""
    return f"entry point {ep.name!r}{dist}"


def _given(plugin: object) -> Callable[[], object]:
    return lambda: plugin


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
    """Typed facade over ``pm.hook``: one method per hook, so call sites are type-checked.

    Each plugin's implementations are called alone, through pluggy, so errors and results are
    attributed to it; hook wrappers run around each such call. Plugins are called tryfirst
    ones first, trylast ones last, otherwise in registration order (shutdown: reversed).
    """

    def __init__(self, pm: pluggy.PluginManager, report: LoadReport) -> None:
        self._pm = pm
        self._report = report
        self.node_types: dict[str, NodeType] = {}
        self._providers: dict[str, str] = {}
        for plugin in self._implementers("cortexd_node_types"):
            for node_type in self._node_types_of(plugin):
                self._add_node_type(plugin, node_type)

    def _implementers(self, hook: str) -> list[str]:
        """The plugins implementing `hook` (wrappers aside), in the order they are called."""
        groups, registered = self._groups(hook), self._registered()
        return sorted(groups, key=lambda name: (groups[name], registered[name]))

    def _stopping_order(self) -> list[str]:
        """The plugins implementing `cortexd_shutdown`, in the reverse of the start order
        (tryfirst/trylast on `cortexd_shutdown` itself put a plugin first/last)."""
        stops, starts = self._groups("cortexd_shutdown"), self._groups("cortexd_startup")
        registered = self._registered()
        return sorted(stops, key=lambda n: (stops[n], -starts.get(n, 1), -registered[n]))

    def _groups(self, hook: str) -> dict[str, int]:
        """Plugin -> 0 (tryfirst), 1 (plain) or 2 (trylast), for the plugins implementing `hook`;
        a plugin implementing it several times goes with its earliest."""
        groups: dict[str, int] = {}
        for impl in getattr(self._pm.hook, hook).get_hookimpls():
            if not (impl.wrapper or impl.hookwrapper):
                group = 0 if impl.tryfirst else 2 if impl.trylast else 1
                groups[impl.plugin_name] = min(group, groups.get(impl.plugin_name, 2))
        return groups

    def _registered(self) -> dict[str, int]:
        return {name: i for i, (name, _) in enumerate(self._pm.list_name_plugin())}

    def _alone(self, hook: str, plugin: str) -> pluggy.HookCaller:
        """`hook` of one plugin, with every plugin's wrappers around it."""
        others = [self._pm.get_plugin(name) for name in self._implementers(hook) if name != plugin]
        return self._pm.subset_hook_caller(hook, remove_plugins=others)

    def _node_types_of(self, plugin: str) -> list[object]:
        try:
            results = self._alone("cortexd_node_types", plugin)()
        except Exception as exc:
            raise PluginError(f"plugin {plugin!r}: cortexd_node_types failed: {exc}") from exc
        for provided in results:
            if inspect.isawaitable(provided):
                _close(provided)
                raise PluginError(f"plugin {plugin!r}: cortexd_node_types must not be async")
        return [node_type for provided in results for node_type in provided]

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
        """One sink per plugin implementing `cortexd_event`: ``sink(event=...)`` delivers one
        event to that plugin alone and returns an awaitable."""
        return [
            (plugin, partial(_deliver, self._alone("cortexd_event", plugin)))
            for plugin in self._implementers("cortexd_event")
        ]

    async def startup(self, ctx: PluginContext) -> None:
        """Start plugins in order; if one fails, those already started are shut down (their
        sessions and tasks must not outlive a failed start) and the error names it."""
        started: set[str] = set()
        for plugin in self._implementers("cortexd_startup"):
            try:
                await _await_all(self._alone("cortexd_startup", plugin)(ctx=ctx))
            except Exception as exc:
                await self.shutdown(ctx, only=started)
                raise PluginError(f"plugin {plugin!r} failed to start: {exc}") from exc
            started.add(plugin)

    async def shutdown(self, ctx: PluginContext, only: set[str] | None = None) -> None:
        """Stop plugins last started, first stopped; a failure is logged, the others still stop."""
        for plugin in self._stopping_order():
            if only is not None and plugin not in only:
                continue
            try:
                await _await_all(self._alone("cortexd_shutdown", plugin)(ctx=ctx))
            except Exception:
                log.exception("plugin_shutdown_failed", plugin=plugin)

    def info(self) -> list[PluginInfo]:
        sinks = set(self._implementers("cortexd_event"))
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


def _deliver(hook: pluggy.HookCaller, *, event: dict[str, Any]) -> Any:
    """An awaitable when the plugin's sink is async; a sync one (the log sink) has delivered
    when this returns, without a coroutine made for every event."""
    results = hook(event=event)
    if any(inspect.isawaitable(result) for result in results):
        return _await_all(results)
    return None


async def _await_all(results: Sequence[object]) -> None:
    """Await what one plugin's implementations returned, in order. As in a pluggy call, the
    first exception ends it: the coroutines after it are closed, never run."""
    pending = list(results)
    try:
        while pending:
            await await_me_maybe(pending.pop(0))
    finally:
        for result in pending:
            _close(result)


def _close(result: object) -> None:
    if inspect.iscoroutine(result):
        result.close()


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
        extra=extra,
    )
    return Plugins(pm, report)
