"""Plugins that use pluggy's ordering and wrappers, as plugin authors write them."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pluggy

hookimpl = pluggy.HookimplMarker("cortexd")
JSON = dict[str, Any]


class Word:
    """A node type named after the plugin that provides it."""

    title = "Word"
    description = "test: returns its name"
    config_schema: JSON = {"type": "object"}

    def __init__(self, name: str) -> None:
        self.name = name

    async def execute(self, ctx: Any, config: JSON, state: JSON) -> JSON:
        return {"word": self.name}


class Plain:
    """Records when each of its hooks is called, under its own name."""

    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name = log, name

    @hookimpl
    def cortexd_node_types(self) -> list[object]:
        self.log.append(f"types {self.name}")
        return [Word(self.name)]

    @hookimpl
    async def cortexd_event(self, event: JSON) -> None:
        self.log.append(f"event {event['seq']} {self.name}")

    @hookimpl
    async def cortexd_startup(self, ctx: object) -> None:
        self.log.append(f"start {self.name}")

    @hookimpl
    def cortexd_shutdown(self, ctx: object) -> None:
        self.log.append(f"stop {self.name}")


class Eager(Plain):
    """Asks to be called first for every hook, and to start first."""

    @hookimpl(tryfirst=True)
    def cortexd_node_types(self) -> list[object]:
        return super().cortexd_node_types()

    @hookimpl(tryfirst=True)
    async def cortexd_event(self, event: JSON) -> None:
        await super().cortexd_event(event)

    @hookimpl(tryfirst=True)
    async def cortexd_startup(self, ctx: object) -> None:
        await super().cortexd_startup(ctx)


class Lazy(Plain):
    """Asks to be called last for every hook, and to start last."""

    @hookimpl(trylast=True)
    def cortexd_node_types(self) -> list[object]:
        return super().cortexd_node_types()

    @hookimpl(trylast=True)
    async def cortexd_event(self, event: JSON) -> None:
        await super().cortexd_event(event)

    @hookimpl(trylast=True)
    async def cortexd_startup(self, ctx: object) -> None:
        await super().cortexd_startup(ctx)


class Traced:
    """A node type wrapped by a tracing plugin: counts the executions of the one it wraps."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name, self.title = inner.name, inner.title
        self.description, self.config_schema = inner.description, inner.config_schema
        self.executions = 0

    async def execute(self, ctx: Any, config: JSON, state: JSON) -> JSON:
        self.executions += 1
        result: JSON = await self.inner.execute(ctx, config, state)
        return result


class Tracing:
    """New-style wrappers: trace every node type and every event delivery of other plugins."""

    def __init__(self) -> None:
        self.delivered: list[int] = []

    @hookimpl(wrapper=True)
    def cortexd_node_types(self) -> Generator[None, list[list[object]], list[list[object]]]:
        provided = yield
        return [[Traced(node_type) for node_type in types] for types in provided]

    @hookimpl(wrapper=True)
    def cortexd_event(self, event: JSON) -> Generator[None, list[object], list[object]]:
        results = yield
        self.delivered.append(event["seq"])
        return results


class ShutdownWatch:
    """An old-style hookwrapper around each plugin's shutdown."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    @hookimpl(hookwrapper=True)
    def cortexd_shutdown(self, ctx: object) -> Generator[None, Any, None]:
        self.log.append("before stop")
        yield
        self.log.append("after stop")
