"""Node types that do their work in a worker thread, as the loop-blocking warning advises."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pluggy

hookimpl = pluggy.HookimplMarker("cortexd")
JSON = dict[str, Any]


def _crunch(rounds: int) -> int:
    """CPU work: what a node type moves off the event loop."""
    total = 0
    for i in range(rounds):
        total = (total * 31 + i) % 1_000_003
    return total


class Threaded:
    """Reports progress, logs and writes `data` from `asyncio.to_thread`, step by step."""

    name = "threaded"
    title = "Threaded"
    description = "test: CPU work in a worker thread that reports progress from it"
    config_schema: JSON = {"type": "object", "properties": {"steps": {"type": "integer"}}}

    async def execute(self, ctx: Any, config: JSON, state: JSON) -> JSON:
        steps = config.get("steps", 20)
        loop_thread = threading.get_ident()

        def work() -> JSON:
            assert threading.get_ident() != loop_thread  # really off the loop
            total = 0
            for step in range(1, steps + 1):
                total += _crunch(2_000)
                ctx.report_progress(step / steps, f"step {step}")
                ctx.log.info("threaded_step", step=step)
            ctx.set_data("threaded_total", total)
            return {"total": total, "steps": steps}

        return await asyncio.to_thread(work)


class PlainThread:
    """The same from a thread of its own (no copied context), joined without blocking the loop."""

    name = "plain_thread"
    title = "Plain thread"
    description = "test: progress from a threading.Thread the node starts itself"
    config_schema: JSON = {"type": "object", "properties": {"steps": {"type": "integer"}}}

    async def execute(self, ctx: Any, config: JSON, state: JSON) -> JSON:
        steps = config.get("steps", 10)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def work() -> None:
            try:
                for step in range(1, steps + 1):
                    ctx.report_progress(step / steps, f"plain {step}")
                    ctx.log.info("plain_thread_step", step=step)
            except Exception as exc:  # handed to the node, which fails with it
                loop.call_soon_threadsafe(done.set_exception, exc)
            else:
                loop.call_soon_threadsafe(done.set_result, None)

        thread = threading.Thread(target=work, name="plain-thread-node")
        thread.start()
        await done
        await asyncio.to_thread(thread.join)
        return {"steps": steps}


class ThreadNodes:
    """The plugin object."""

    @hookimpl
    def cortexd_node_types(self) -> list[object]:
        return [Threaded(), PlainThread()]
