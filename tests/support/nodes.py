"""Node types for tests, registered as a plugin object: they count, fail, and wait on gates."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pluggy

hookimpl = pluggy.HookimplMarker("cortexd")
JSON = dict[str, Any]


class Count:
    """Counts its executions per (run, node) and records the order nodes started in."""

    name = "count"
    title = "Count"
    description = "test: counts executions"
    config_schema: JSON = {"type": "object"}

    def __init__(self, kit: TestKit) -> None:
        self.kit = kit

    async def execute(self, ctx: Any, config: JSON, state: JSON) -> JSON:
        self.kit.executions[(ctx.run_id, ctx.node_id)] += 1
        self.kit.started.append((ctx.run_id, ctx.node_id))
        return {"count": self.kit.executions[(ctx.run_id, ctx.node_id)]}


class Fail:
    """Fails its first `fail_times` attempts per (run, node) (default: always)."""

    name = "fail"
    title = "Fail"
    description = "test: raises"
    config_schema: JSON = {
        "type": "object",
        "properties": {"fail_times": {"type": "integer"}, "message": {"type": "string"}},
    }

    def __init__(self, kit: TestKit) -> None:
        self.kit = kit

    async def execute(self, ctx: Any, config: JSON, state: JSON) -> JSON:
        key = (ctx.run_id, ctx.node_id)
        self.kit.executions[key] += 1
        if self.kit.executions[key] <= config.get("fail_times", 10**9):
            raise RuntimeError(config.get("message", "boom"))
        return {"attempt": ctx.attempt}


class Gate:
    """Waits until the test opens the gate named in its config; reports progress first."""

    name = "gate"
    title = "Gate"
    description = "test: waits for the test"
    config_schema: JSON = {"type": "object", "properties": {"gate": {"type": "string"}}}

    def __init__(self, kit: TestKit) -> None:
        self.kit = kit

    async def execute(self, ctx: Any, config: JSON, state: JSON) -> JSON:
        key = (ctx.run_id, ctx.node_id)
        self.kit.executions[key] += 1
        ctx.report_progress(0.5, "waiting at the gate")
        self.kit.arrived(config.get("gate", "default")).set()
        await self.kit.gate(config.get("gate", "default")).wait()
        return {"passed": True}


class Stubborn:
    """Ignores cancellation: keeps waiting for its gate (a badly written plugin)."""

    name = "stubborn"
    title = "Stubborn"
    description = "test: swallows CancelledError"
    config_schema: JSON = {"type": "object"}

    def __init__(self, kit: TestKit) -> None:
        self.kit = kit

    async def execute(self, ctx: Any, config: JSON, state: JSON) -> JSON:
        self.kit.arrived("stubborn").set()
        while not self.kit.gate("stubborn").is_set():
            try:
                await self.kit.gate("stubborn").wait()
            except asyncio.CancelledError:
                self.kit.executions[("cancel-ignored", ctx.node_id)] += 1
        return {"finished": True}


class TestKit:
    """The plugin object: shared counters and gates for one test."""

    __test__ = False  # not a pytest test class

    def __init__(self) -> None:
        self.executions: Counter[tuple[str, str]] = Counter()
        self.started: list[tuple[str, str]] = []
        self.events: list[JSON] = []
        self._gates: dict[str, asyncio.Event] = {}
        self._arrivals: dict[str, asyncio.Event] = {}

    def gate(self, name: str) -> asyncio.Event:
        return self._gates.setdefault(name, asyncio.Event())

    def arrived(self, name: str) -> asyncio.Event:
        return self._arrivals.setdefault(name, asyncio.Event())

    def count(self, run_id: str, node_id: str) -> int:
        return self.executions[(run_id, node_id)]

    @hookimpl
    def cortexd_node_types(self) -> list[object]:
        return [Count(self), Fail(self), Gate(self), Stubborn(self), Blocking()]

    @hookimpl
    def cortexd_event(self, event: JSON) -> None:
        self.events.append(event)


class Blocking:
    """Blocks the event loop (time.sleep): the mistake the loop watch names."""

    name = "blocking"
    title = "Blocking"
    description = "test: time.sleep on the loop"
    config_schema: JSON = {"type": "object", "properties": {"seconds": {"type": "number"}}}

    async def execute(self, ctx: Any, config: JSON, state: JSON) -> JSON:
        time.sleep(config.get("seconds", 0.8))  # noqa: ASYNC251 -- the mistake under test
        return {}
