"""Plugins that break the contract in the ways plugin authors do."""

from __future__ import annotations

from typing import Any

import pluggy

hookimpl = pluggy.HookimplMarker("cortexd")


class Misspelt:
    @hookimpl
    def cortexd_node_typez(self) -> list[object]:
        return []


class Echo:
    name = "passthrough"  # clashes with the built-in
    title = "Echo"
    description = "clash"
    config_schema: dict[str, Any] = {"type": "object"}

    async def execute(self, ctx: Any, config: Any, state: Any) -> dict[str, Any]:
        return {}


class Duplicate:
    @hookimpl
    def cortexd_node_types(self) -> list[object]:
        return [Echo()]


class NotANodeType:
    @hookimpl
    def cortexd_node_types(self) -> list[object]:
        return [object()]


class FailingSink:
    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    async def cortexd_event(self, event: dict[str, Any]) -> None:
        self.calls += 1
        raise RuntimeError("sink down")
