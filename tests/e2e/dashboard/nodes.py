"""Node types the dashboard's browser tests steer a real daemon with (loaded through
``[plugins] modules``): a node held until the test creates a file, one that fails until a file
exists, and one that reports progress many times (a long event history)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pluggy

hookimpl = pluggy.HookimplMarker("cortexd")
JSON = dict[str, Any]
POLL_S = 0.01
HOLD_LIMIT_S = 120.0


class Hold:
    name = "hold"
    title = "Hold"
    description = "test: reports 50 %, then waits until the file named in its config exists"
    config_schema: JSON = {
        "type": "object",
        "properties": {"file": {"type": "string"}},
        "required": ["file"],
    }

    async def execute(self, ctx: Any, config: JSON, state: JSON) -> JSON:
        ctx.report_progress(0.5, "held until the test lets go")
        path = Path(config["file"])
        deadline = time.monotonic() + HOLD_LIMIT_S
        while not await asyncio.to_thread(path.exists):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path} did not appear within {HOLD_LIMIT_S}s")
            await asyncio.sleep(POLL_S)
        return {"released": True}


class FailUnless:
    name = "fail_unless"
    title = "Fail unless"
    description = "test: fails while the file named in its config does not exist"
    config_schema: JSON = {
        "type": "object",
        "properties": {"file": {"type": "string"}},
        "required": ["file"],
    }

    async def execute(self, ctx: Any, config: JSON, state: JSON) -> JSON:
        if not await asyncio.to_thread(Path(config["file"]).exists):
            raise RuntimeError("the file is not there yet")
        return {"found": True}


class Chatty:
    name = "chatty"
    title = "Chatty"
    description = "test: reports progress `count` times (one event each)"
    config_schema: JSON = {
        "type": "object",
        "properties": {"count": {"type": "integer", "minimum": 1, "maximum": 100_000}},
        "required": ["count"],
    }

    async def execute(self, ctx: Any, config: JSON, state: JSON) -> JSON:
        count = int(config["count"])
        for i in range(count):
            ctx.report_progress((i + 1) / count)
            if i % 100 == 99:
                await asyncio.sleep(0)  # let the writer commit what is queued
        return {"reports": count}


@hookimpl
def cortexd_node_types() -> list[object]:
    return [Hold(), FailUnless(), Chatty()]
