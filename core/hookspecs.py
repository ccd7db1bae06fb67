"""Every hook a cortexd plugin can implement. Project name `cortexd`; hook names `cortexd_*`.

A plugin needs only pluggy: ``hookimpl = pluggy.HookimplMarker("cortexd")``. Hooks may be
implemented as plain functions or (where noted) ``async def``; cortexd awaits them.
cortexd calls each hook through pluggy one plugin at a time: ``tryfirst`` plugins first,
``trylast`` ones last, the others in registration order; hook wrappers run around each call.
See docs/plugins.md for the tutorial and an example of each hook.
"""

from __future__ import annotations

from typing import Any

import pluggy

from core.nodes import NodeType, PluginContext

PROJECT = "cortexd"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -- catalogue ---------------------------------------------------------------------------------


@hookspec
def cortexd_node_types() -> list[NodeType]:  # type: ignore[empty-body]
    """Return the node types this plugin provides.

    Called once at start-up, after every plugin is registered and before ``cortexd_startup``.
    A node type is any object with ``name``, ``title``, ``description``, ``config_schema``
    (a JSON Schema for ``node.config``) and ``async def execute(ctx, config, state)``
    returning a JSON object, stored as ``outputs[node_id]``. Two node types with one name
    are a start-up error naming both plugins.

    :return: a list of node types (may be empty). Not firstresult: every plugin's list counts.
    """


# -- events ------------------------------------------------------------------------------------


@hookspec
def cortexd_event(event: dict[str, Any]) -> Any:
    """Receive one event after it has been stored (an event sink). May be ``async def``.

    Called for every event, in ``seq`` order, from a queue of the plugin's own: a slow or
    failing sink never delays a run or another sink; its failures are logged and counted.

    :param event: the JSON-ready dict WebSocket clients get: ``seq``, ``type``,
        ``project_id``, ``run_id`` (run events), ``timestamp`` and one of ``run``,
        ``nodeState`` or ``graph``.
    :return: ignored.
    """


# -- lifecycle ---------------------------------------------------------------------------------


@hookspec
def cortexd_startup(ctx: PluginContext) -> Any:
    """Called once when the daemon starts, before it reports ready. May be ``async def``.

    Plugins start one at a time, in the order above; if one fails, those started are shut down.

    :param ctx: ``ctx.options(name)`` gives the plugin's ``[plugins.<name>]`` config table;
        ``ctx.log`` is a structured logger.
    :return: ignored. An exception here stops start-up with the plugin named.
    """


@hookspec
def cortexd_shutdown(ctx: PluginContext) -> Any:
    """Called once when the daemon stops, after runs are drained. May be ``async def``.

    In the reverse order of ``cortexd_startup``, unless marked ``tryfirst``/``trylast`` itself.

    :param ctx: the same context ``cortexd_startup`` received.
    :return: ignored. Exceptions are logged; shutdown goes on.
    """
