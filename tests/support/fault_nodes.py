"""Node types for the storage fault tests, loaded by a real daemon through ``[plugins]
modules``: a node that writes a line to a tally file (on a file system the test does not
break) when it starts and when it ends, and waits for a gate file in between if told to."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pluggy

hookimpl = pluggy.HookimplMarker("cortexd")
JSON = dict[str, Any]
POLL_S = 0.02
HOLD_LIMIT_S = 120.0


def _tally(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode() + b"\n")  # one write: lines of parallel nodes never mix
    finally:
        os.close(fd)


class Tally:
    name = "tally"
    title = "Tally"
    description = "test: notes its start and end in a file, waits for a gate file if given"
    config_schema: JSON = {
        "type": "object",
        "properties": {"tally": {"type": "string"}, "gate": {"type": "string"}},
        "required": ["tally"],
    }

    async def execute(self, ctx: Any, config: JSON, state: JSON) -> JSON:
        _tally(config["tally"], f"start {ctx.run_id} {ctx.node_id}")
        if "gate" in config:
            gate = Path(config["gate"])
            deadline = time.monotonic() + HOLD_LIMIT_S
            while not await asyncio.to_thread(gate.exists):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{gate} did not appear within {HOLD_LIMIT_S}s")
                await asyncio.sleep(POLL_S)
        _tally(config["tally"], f"end {ctx.run_id} {ctx.node_id}")
        return {"node": ctx.node_id}


@hookimpl
def cortexd_node_types() -> list[object]:
    return [Tally()]
