"""Event sinks (the `cortexd_event` hook): one bounded queue and one worker per sink.

A slow or failing sink only ever hurts itself: its queue fills and further events are dropped
for it (counted and logged); a raising sink is logged and counted, and the next event goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import structlog

from core.background import Background
from core.events import JSON, Published
from core.plugins import Sink, await_me_maybe

log = structlog.get_logger("cortexd.sinks")


class SinkWorker:
    def __init__(self, name: str, sink: Sink, queue_size: int) -> None:
        self.name = name
        self._sink = sink
        self._queue: asyncio.Queue[JSON] = asyncio.Queue(maxsize=queue_size)
        self._background = Background(f"sink:{name}")
        self._started = False
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self._dropping = False

    def offer(self, item: Published) -> None:
        try:
            self._queue.put_nowait(item.event)
            self._dropping = False
        except asyncio.QueueFull:
            self.dropped += 1
            if not self._dropping:  # one line per burst; the count is in the metrics
                self._dropping = True
                log.warning("sink_queue_full", sink=self.name, seq=item.seq, **_ids(item.event))

    def start(self) -> None:
        self._background.start(self._work())
        self._started = True

    async def _work(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await await_me_maybe(self._sink(event=event))
                self.delivered += 1
            except Exception:
                self.failed += 1
                log.exception("sink_failed", sink=self.name, seq=event["seq"], **_ids(event))
            finally:
                self._queue.task_done()

    async def stop(self, grace_s: float) -> None:
        """Deliver what is queued within the grace period, then stop."""
        if self._started:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), grace_s)
        await self._background.stop()


class Sinks:
    def __init__(self, sinks: Sequence[tuple[str, Sink]], queue_size: int = 10_000) -> None:
        self.workers = [SinkWorker(name, sink, queue_size) for name, sink in sinks]

    def start(self) -> None:
        for worker in self.workers:
            worker.start()

    def offer(self, item: Published) -> None:
        for worker in self.workers:
            worker.offer(item)

    async def stop(self, grace_s: float = 5.0) -> None:
        await asyncio.gather(*(w.stop(grace_s) for w in self.workers))


def _ids(event: JSON) -> dict[str, str]:
    return {key: event[key] for key in ("project_id", "run_id") if key in event}
