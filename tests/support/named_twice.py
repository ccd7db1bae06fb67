"""A plugin module that tests register twice: as an entry point and as a configured module."""

from __future__ import annotations

import pluggy

hookimpl = pluggy.HookimplMarker("cortexd")


@hookimpl
def cortexd_node_types() -> list[object]:
    return []
