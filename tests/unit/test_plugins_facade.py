"""The plugin facade calls hooks through pluggy (so tryfirst, trylast and hook wrappers work as
plugin authors expect), and a plugin name is registered once. Real pluggy, real modules; the
entry points are real distributions' metadata on sys.path."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import PluginError
from core.nodes import PluginContext
from core.plugins import await_me_maybe, build_plugins
from core.testing import run_node
from plugins import BUILTINS
from tests.support import hook_order
from tests.support.hook_order import Eager, Lazy, Plain, Tracing

NAMED_TWICE = "tests.support.named_twice"


def lifecycle(log: list[str]) -> list[tuple[str, object]]:
    """Registered in this order: lazy, first, second, eager."""
    return [
        ("lazy", Lazy(log, "lazy")),
        ("first", Plain(log, "first")),
        ("second", Plain(log, "second")),
        ("eager", Eager(log, "eager")),
    ]


def install_dist(site: Path, monkeypatch: pytest.MonkeyPatch, dist: str, **eps: str) -> None:
    """A distribution `dist` 1.0 with entry points of group cortexd, found by importlib.metadata."""
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "".join(f"{name} = {value}\n" for name, value in eps.items())
    (info / "entry_points.txt").write_text(f"[cortexd]\n{lines}")
    monkeypatch.syspath_prepend(str(site))


# -- tryfirst / trylast -------------------------------------------------------------------------


def test_node_types_are_collected_tryfirst_first_trylast_last() -> None:
    log: list[str] = []
    plugins = build_plugins(builtins=(), use_entry_points=False, extra=lifecycle(log))

    assert log == ["types eager", "types first", "types second", "types lazy"]
    assert list(plugins.node_types) == ["eager", "first", "second", "lazy"]
    assert plugins.providers == {name: name for name in ("eager", "first", "second", "lazy")}


async def test_sinks_are_listed_tryfirst_first_and_each_delivers_to_its_plugin_only() -> None:
    log: list[str] = []
    plugins = build_plugins(builtins=(), use_entry_points=False, extra=lifecycle(log))

    sinks = plugins.sinks()
    assert [name for name, _ in sinks] == ["eager", "first", "second", "lazy"]
    for seq, (_, sink) in enumerate(sinks, start=1):
        await await_me_maybe(sink(event={"seq": seq}))

    assert log[-4:] == ["event 1 eager", "event 2 first", "event 3 second", "event 4 lazy"]


async def test_startup_honours_tryfirst_and_trylast_and_shutdown_reverses_it() -> None:
    log: list[str] = []
    plugins = build_plugins(builtins=(), use_entry_points=False, extra=lifecycle(log))
    del log[:]

    await plugins.startup(PluginContext())
    await plugins.shutdown(PluginContext())

    assert log == [
        *("start eager", "start first", "start second", "start lazy"),
        *("stop lazy", "stop second", "stop first", "stop eager"),
    ]


# -- hook wrappers -----------------------------------------------------------------------------


async def test_a_new_style_wrapper_around_node_types_changes_them_keeping_their_provider() -> None:
    plugins = build_plugins(
        builtins=BUILTINS, use_entry_points=False, extra=[("tracing", Tracing())]
    )

    passthrough = plugins.node_types["passthrough"]
    assert isinstance(passthrough, hook_order.Traced)
    assert plugins.providers["passthrough"] == "plugins.basic"
    assert (await run_node(passthrough, {}, {"a": 1})).output is not None
    assert passthrough.executions == 1
    assert "tracing" not in plugins.providers.values()


async def test_a_new_style_wrapper_around_cortexd_event_runs_around_each_sink() -> None:
    log: list[str] = []
    tracing = Tracing()
    plugins = build_plugins(
        builtins=(),
        use_entry_points=False,
        extra=[("first", Plain(log, "first")), ("second", Plain(log, "second")), ("t", tracing)],
    )

    sinks = dict(plugins.sinks())
    assert list(sinks) == ["first", "second"]  # a wrapper alone is not a sink
    await await_me_maybe(sinks["second"](event={"seq": 7}))

    assert tracing.delivered == [7]
    assert log[-1:] == ["event 7 second"]
    assert [(p.name, p.sinks) for p in plugins.info()] == [
        ("first", True),
        ("second", True),
        ("t", False),
    ]


async def test_an_old_style_hookwrapper_runs_around_each_plugins_shutdown() -> None:
    log: list[str] = []
    plugins = build_plugins(
        builtins=(),
        use_entry_points=False,
        extra=[
            ("first", Plain(log, "first")),
            ("second", Plain(log, "second")),
            ("watch", hook_order.ShutdownWatch(log)),
        ],
    )
    del log[:]

    await plugins.shutdown(PluginContext())

    assert log == [
        *("before stop", "stop second", "after stop"),
        *("before stop", "stop first", "after stop"),
    ]


# -- one registration per name ----------------------------------------------------------------


def test_a_built_in_name_reused_by_a_module_is_an_error_naming_both() -> None:
    with pytest.raises(
        PluginError,
        match=r"^plugin 'plugins\.basic' is registered twice: "
        r"by built-in 'plugins\.basic' and by module 'plugins\.basic'$",
    ):
        build_plugins(builtins=BUILTINS, modules=["plugins.basic"], use_entry_points=False)


def test_not_strict_keeps_the_first_registration_and_reports_the_second() -> None:
    plugins = build_plugins(
        builtins=BUILTINS, modules=["plugins.basic"], strict=False, use_entry_points=False
    )

    assert plugins.skipped == [
        (
            "plugins.basic",
            "registered twice: by built-in 'plugins.basic' and by module 'plugins.basic'",
        )
    ]
    assert [p.name for p in plugins.info()] == list(BUILTINS)
    assert plugins.providers["passthrough"] == "plugins.basic"


def test_an_entry_point_and_a_configured_module_of_one_name_are_an_error_naming_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_dist(tmp_path, monkeypatch, "cortexd-twice", **{NAMED_TWICE: NAMED_TWICE})

    with pytest.raises(
        PluginError,
        match=rf"plugin '{NAMED_TWICE}' is registered twice: by entry point '{NAMED_TWICE}' "
        rf"\(dist cortexd-twice 1\.0\) and by module '{NAMED_TWICE}'",
    ):
        build_plugins(builtins=BUILTINS, modules=[NAMED_TWICE])


def test_two_entry_points_of_one_name_are_an_error_naming_both_distributions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_dist(tmp_path / "b", monkeypatch, "cortexd-bee", twice=NAMED_TWICE)
    install_dist(tmp_path / "a", monkeypatch, "cortexd-ay", twice="tests.support.failing_startup")

    with pytest.raises(
        PluginError,
        match=r"plugin 'twice' is registered twice: by entry point 'twice' \(dist cortexd-ay 1\.0\)"
        r" and by entry point 'twice' \(dist cortexd-bee 1\.0\)",
    ):
        build_plugins(builtins=BUILTINS)


def test_one_module_under_two_names_is_an_error_naming_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_dist(tmp_path, monkeypatch, "cortexd-twice", shout=NAMED_TWICE)

    with pytest.raises(
        PluginError,
        match=rf"plugin '{NAMED_TWICE}' is registered twice: by entry point 'shout' "
        rf"\(dist cortexd-twice 1\.0\) and by module '{NAMED_TWICE}'",
    ):
        build_plugins(builtins=BUILTINS, modules=[NAMED_TWICE])


def test_two_objects_registered_under_one_name_are_an_error() -> None:
    with pytest.raises(PluginError, match=r"'x' is registered twice: by object 'x' and by object"):
        build_plugins(
            builtins=(), use_entry_points=False, extra=[("x", Plain([], "a")), ("x", Tracing())]
        )


def test_a_blocked_name_stays_blocked_wherever_it_appears(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_dist(tmp_path, monkeypatch, "cortexd-twice", **{NAMED_TWICE: NAMED_TWICE})

    plugins = build_plugins(
        builtins=BUILTINS,
        modules=[NAMED_TWICE, "plugins.basic"],
        disabled=[NAMED_TWICE, "plugins.basic"],
        extra=[("plugins.basic", Plain([], "basic"))],
    )

    assert plugins.skipped == []
    assert [p.name for p in plugins.info()] == [b for b in BUILTINS if b != "plugins.basic"]
    assert "passthrough" not in plugins.node_types
