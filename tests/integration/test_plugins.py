"""Plugin discovery and contract checks, with real modules and the real app."""

from __future__ import annotations

import pytest
import structlog.testing

from core.errors import PluginError
from core.nodes import PluginContext
from core.plugins import build_plugins
from plugins import BUILTINS
from tests.integration.conftest import Api, ApiFactory, linear, until
from tests.support import bad_plugins


def test_builtins_load_and_a_disabled_plugin_is_blocked() -> None:
    plugins = build_plugins(builtins=BUILTINS, use_entry_points=False)
    assert {"passthrough", "delay"} <= set(plugins.node_types)
    blocked = build_plugins(builtins=BUILTINS, disabled=["plugins.basic"], use_entry_points=False)
    assert "passthrough" not in blocked.node_types


def test_a_module_that_fails_to_import_is_named() -> None:
    with pytest.raises(PluginError, match=r"tests\.support\.broken_import.*not installed"):
        build_plugins(
            builtins=BUILTINS, modules=["tests.support.broken_import"], use_entry_points=False
        )


def test_not_strict_skips_the_broken_plugin_and_reports_it() -> None:
    plugins = build_plugins(
        builtins=BUILTINS,
        modules=["tests.support.broken_import", "tests.support.no_such_module"],
        strict=False,
        use_entry_points=False,
    )
    assert [name for name, _ in plugins.skipped] == [
        "tests.support.broken_import",
        "tests.support.no_such_module",
    ]
    assert "passthrough" in plugins.node_types


def test_a_misspelt_hook_is_an_error_naming_the_plugin() -> None:
    with pytest.raises(PluginError, match=r"typo.*cortexd_node_typez"):
        build_plugins(
            builtins=BUILTINS, use_entry_points=False, extra=[("typo", bad_plugins.Misspelt())]
        )


def test_two_node_types_with_one_name_name_both_plugins() -> None:
    with pytest.raises(PluginError, match=r"'passthrough'.*'plugins\.basic'.*'clash'"):
        build_plugins(
            builtins=BUILTINS, use_entry_points=False, extra=[("clash", bad_plugins.Duplicate())]
        )


def test_an_object_lacking_the_node_type_attributes_is_refused() -> None:
    with pytest.raises(PluginError, match=r"'odd'.*lacks name, title"):
        build_plugins(
            builtins=BUILTINS, use_entry_points=False, extra=[("odd", bad_plugins.NotANodeType())]
        )


async def test_a_failing_sink_breaks_neither_runs_nor_other_sinks(make_api: ApiFactory) -> None:
    failing = bad_plugins.FailingSink()
    api: Api = await make_api(extra=[("down", failing)])
    await api.graph(linear("g", "passthrough"))
    run_id = await api.start("g")
    await api.idle()
    assert (await api.run(run_id))["status"] == "completed"
    stored = await api.call("GET", f"/api/projects/acme/workflows/runs/{run_id}/events")
    await until(lambda: failing.calls >= len(stored) + 1)  # + the graph's event
    await until(lambda: len(api.kit.events) >= len(stored) + 1)
    assert api.kit.events[1:] == stored


class _Lifecycle:
    def __init__(self, log: list[str], name: str, fail: bool = False) -> None:
        self.log, self.name, self.fail = log, name, fail

    @bad_plugins.hookimpl
    def cortexd_startup(self, ctx: object) -> None:
        if self.fail:
            raise RuntimeError("no database")
        self.log.append(f"start {self.name}")

    @bad_plugins.hookimpl
    def cortexd_shutdown(self, ctx: object) -> None:
        self.log.append(f"stop {self.name}")


async def test_a_plugin_failing_to_start_is_named_and_the_started_ones_are_stopped() -> None:
    log: list[str] = []
    plugins = build_plugins(
        builtins=(),
        use_entry_points=False,
        extra=[
            ("first", _Lifecycle(log, "first")),
            ("broken", _Lifecycle(log, "broken", fail=True)),
            ("never", _Lifecycle(log, "never")),
        ],
    )
    with pytest.raises(PluginError, match=r"'broken' failed to start: no database"):
        await plugins.startup(PluginContext())
    assert log == ["start first", "stop first"]


async def test_a_node_type_blocking_the_event_loop_is_named_in_a_warning(
    make_api: ApiFactory,
) -> None:
    api = await make_api()
    await api.graph(linear("g", "blocking"))
    with structlog.testing.capture_logs() as logs:
        run_id = await api.start("g")
        await api.idle()
        await until(lambda: any(e["event"] == "event_loop_blocked" for e in logs))
    (warning,) = [e for e in logs if e["event"] == "event_loop_blocked"][:1]
    assert warning["node_types"] == ["blocking"]
    assert warning["plugins"] == ["testkit"]
    assert warning["nodes"] == [f"{run_id}/n1"]
    assert warning["blocked_s"] >= 0.5
