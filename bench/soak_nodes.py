"""The soak's node type, loaded by the real daemons through ``[plugins] modules``.

`soak_step` writes one line to a tally file outside the daemon when it starts and one when it
ends (`end`), fails (`fail`) or is cancelled (`cancel`): ``KIND RUN NODE GEN PID NS``, where GEN
is the run input's `gen` (the soak gives each fresh start of a run a new one) and NS is
CLOCK_MONOTONIC in nanoseconds, the clock the soak notes its kills on. Each line is one
``write`` to a file opened ``O_APPEND`` (lines of parallel nodes and processes never mix),
fsynced. The soak checks against this ground truth that no completed node ran again and that no
run was executed by two processes at once.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pluggy

hookimpl = pluggy.HookimplMarker("cortexd")
JSON = dict[str, Any]


def tally_line(path: str, kind: str, ctx: Any, gen: int, *, fsync: bool = True) -> None:
    line = f"{kind} {ctx.run_id} {ctx.node_id} {gen} {os.getpid()} {time.monotonic_ns()}\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode())
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def first_time(markers: str, ctx: Any, gen: int) -> bool:
    """True once per (run, node, gen): the marker file is created exclusively."""
    try:
        fd = os.open(
            Path(markers) / f"{ctx.run_id}.{ctx.node_id}.{gen}",
            os.O_WRONLY | os.O_CREAT | os.O_EXCL,
            0o644,
        )
    except FileExistsError:
        return False
    os.close(fd)
    return True


class SoakStep:
    name = "soak_step"
    title = "Soak step"
    description = (
        "bench: notes start and end in a tally file, waits `seconds`; with `fail_once` (a "
        "directory) fails the first attempt of each fresh start"
    )
    config_schema: JSON = {
        "type": "object",
        "properties": {
            "tally": {"type": "string"},
            "seconds": {"type": "number", "minimum": 0},
            "fail_once": {"type": "string"},
        },
        "required": ["tally"],
    }

    async def execute(self, ctx: Any, config: JSON, state: JSON) -> JSON:
        tally = config["tally"]
        gen = int((state.get("input") or {}).get("gen", 0))
        # Written on the loop, not in a thread: a cancellation can then only come between two
        # lines, never leave one written and its outcome unsaid (a few ms of fsync per line).
        tally_line(tally, "start", ctx, gen)
        try:
            await asyncio.sleep(float(config.get("seconds", 0)))
        except asyncio.CancelledError:
            tally_line(tally, "cancel", ctx, gen)
            raise
        if "fail_once" in config and first_time(config["fail_once"], ctx, gen):
            tally_line(tally, "fail", ctx, gen)
            raise RuntimeError("soak: the first attempt fails")
        tally_line(tally, "end", ctx, gen)
        return {"node": ctx.node_id, "gen": gen}


@hookimpl
def cortexd_node_types() -> list[object]:
    return [SoakStep()]
