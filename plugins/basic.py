"""Built-in node types: `passthrough` (the original service's echo) and `delay`."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pluggy

hookimpl = pluggy.HookimplMarker("cortexd")

JSON = dict[str, Any]


class Passthrough:
    name = "passthrough"
    title = "Pass through"
    description = (
        "Echoes the run input as its output: the original service's stub node. "
        "Every node of a graph without a `type` is one."
    )
    config_schema: JSON = {"type": "object"}

    async def execute(self, ctx: Any, config: JSON, state: JSON) -> JSON:
        return {"node_id": ctx.node_id, "input": state["input"], **config}


class Delay:
    name = "delay"
    title = "Delay"
    description = (
        "Waits `seconds` (reporting progress about once a second), then passes on. A wait "
        "longer than `[execution] park_after_s` gives the run's slot back meanwhile."
    )
    config_schema: JSON = {
        "type": "object",
        "properties": {"seconds": {"type": "number", "minimum": 0, "maximum": 86400}},
        "required": ["seconds"],
        "additionalProperties": False,
    }

    async def execute(self, ctx: Any, config: JSON, state: JSON) -> JSON:
        seconds = float(config["seconds"])
        park_after_s = getattr(ctx, "park_after_s", None)
        if park_after_s is not None and seconds > park_after_s:
            await ctx.sleep(seconds)  # parked: no progress reports, no slot held
            return {"slept_s": seconds}
        deadline = time.monotonic() + seconds
        # A timer may fire up to a millisecond early (uvloop's resolution): no second round,
        # and no second "100 %" report, for what is left of that.
        while (left := deadline - time.monotonic()) > 0.001:
            await asyncio.sleep(min(1.0, left))
            ctx.report_progress(1.0 - max(0.0, deadline - time.monotonic()) / seconds)
        return {"slept_s": seconds}


@hookimpl
def cortexd_node_types() -> list[object]:
    return [Passthrough(), Delay()]
