"""A plugin whose start-up fails (a missing database, say): the daemon must exit, naming it."""

from __future__ import annotations

import pluggy

hookimpl = pluggy.HookimplMarker("cortexd")


@hookimpl
def cortexd_startup(ctx: object) -> None:
    raise RuntimeError("cannot reach the plugin's database")
