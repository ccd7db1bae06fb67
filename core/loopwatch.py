"""Naming the plugin that blocks the event loop.

Node types run on the daemon's event loop; one that does CPU work or blocking I/O there stalls
every run, the HTTP API and the WebSocket streams. The watch notices the loop falling behind its
own timer and logs a warning naming the node types (and their plugins) that were executing
while it was blocked.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import count

import structlog

from core.background import Background

log = structlog.get_logger("cortexd.loopwatch")


@dataclass(frozen=True, slots=True)
class _Execution:
    node_type: str
    run_id: str
    node_id: str
    started: float


class NodeActivity:
    """Which node executions are under way, and which ended a moment ago."""

    def __init__(self, keep_s: float = 10.0) -> None:
        self._ids = count()
        self._running: dict[int, _Execution] = {}
        self._ended: deque[tuple[float, _Execution]] = deque()
        self._keep_s = keep_s

    def begin(self, node_type: str, run_id: str, node_id: str) -> int:
        key = next(self._ids)
        self._running[key] = _Execution(node_type, run_id, node_id, time.monotonic())
        return key

    def end(self, key: int) -> None:
        execution = self._running.pop(key, None)
        if execution is None:
            return
        now = time.monotonic()
        self._ended.append((now, execution))
        while self._ended and self._ended[0][0] < now - self._keep_s:
            self._ended.popleft()

    def during(self, since: float) -> list[_Execution]:
        """Executions that were under way at some moment after `since` (monotonic)."""
        return [*self._running.values(), *(e for ended, e in self._ended if ended >= since)]


class LoopWatch:
    def __init__(
        self,
        activity: NodeActivity,
        providers: Mapping[str, str],
        threshold_s: float = 0.5,
        interval_s: float = 0.1,
    ) -> None:
        self._activity = activity
        self._providers = providers
        self._threshold_s = threshold_s
        self._interval_s = interval_s
        self._background = Background("loop-watch")

    def start(self) -> None:
        self._background.start(self._run())

    async def stop(self) -> None:
        await self._background.stop()

    async def _run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(self._interval_s)
            blocked = time.monotonic() - before - self._interval_s
            if blocked > self._threshold_s:
                self._warn(before, blocked)

    def _warn(self, since: float, blocked: float) -> None:
        executions = self._activity.during(since)
        types = sorted({e.node_type for e in executions})
        log.warning(
            "event_loop_blocked",
            blocked_s=round(blocked, 3),
            node_types=types,
            plugins=sorted({self._providers.get(t, "?") for t in types}),
            nodes=[f"{e.run_id}/{e.node_id}" for e in executions][:10],
            hint="run blocking or CPU-heavy work in a thread: await asyncio.to_thread(...)",
        )
