"""Event sinks (the `cortexd_event` hook): each event delivered once per database, in order, at
least once, from a cursor kept in the store.

One worker per sink, run by the daemon holding the duties (`core.duties`). It takes events from
this daemon's bus while it keeps up (no read of the store), and from the store's log whenever
the bus has not got what comes next: after a start or a takeover (from the stored cursor),
or after its bounded buffer overflowed. So a slow sink only ever delays itself, and no event
is dropped. A raising sink is logged and counted, and the next event goes on; a sink that must
not lose an event retries inside its hook (the webhook does).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Sequence

import structlog

from core.background import Background
from core.events import JSON, Published
from core.plugins import Sink, await_me_maybe
from core.ports import EventSource, SinkCursors

log = structlog.get_logger("cortexd.sinks")
PAGE = 500
BUFFER = 10_000
POLL_S = 1.0
PERSIST_EVERY_S = 1.0


class SinkWorker:
    def __init__(
        self, name: str, sink: Sink, source: EventSource, cursors: SinkCursors, buffer: int
    ) -> None:
        self.name = name
        self._sink = sink
        self._source = source
        self._cursors = cursors
        self._buffer: deque[Published] = deque()
        self._buffer_max = buffer
        self._wake = asyncio.Event()
        self._background = Background(f"sink:{name}")
        self.running = False
        # Whether the log may hold what the bus did not give this sink (at a start, after a
        # full buffer, after a quiet poll): then the next events are read from the store.
        self._behind = True
        self.caught_up = asyncio.Event()
        self.cursor = 0
        self._stored = 0
        self._stored_at = 0.0
        self.delivered = 0
        self.failed = 0
        self.read_from_log = 0

    def offer(self, item: Published) -> None:
        if not self.running:
            return
        if len(self._buffer) < self._buffer_max:
            self._buffer.append(item)
        else:
            self._behind = True  # dropped here, read from the log later
        self._wake.set()

    async def start(self) -> None:
        """From the stored cursor (a new sink: from the log's end, now)."""
        await self._start_cursor()
        self._behind = True
        self.running = True
        self.caught_up.clear()
        self._background.start(self._work())

    async def stop(self, grace_s: float) -> None:
        """Deliver what the log holds within the grace period, then stop where it is."""
        if not self.running:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.caught_up.wait(), grace_s)
        self.running = False
        await self._background.stop()
        self._buffer.clear()
        with contextlib.suppress(Exception):  # the next holder redelivers from the last one
            await self._store_cursor()

    async def _work(self) -> None:
        while True:
            try:
                await self._deliver_some()
            except Exception:  # the log could not be read, or the cursor not stored
                log.exception("sink_log_unreadable", sink=self.name, after_seq=self.cursor)
                await asyncio.sleep(POLL_S)

    async def _start_cursor(self) -> None:
        stored = await self._cursors.sink_cursor(self.name)
        if stored is None:  # a new sink: what happens from now on, not the history
            stored = await self._source.last_seq()
            await self._cursors.set_sink_cursor(self.name, stored)
        self.cursor = self._stored = stored
        self._stored_at = time.monotonic()

    async def _deliver_some(self) -> None:
        while self._buffer and self._buffer[0].seq <= self.cursor:
            self._buffer.popleft()
        batch: Sequence[Published] = []
        if self._buffer and self._buffer[0].seq == self.cursor + 1:
            batch = [self._buffer.popleft()]
        elif self._behind or self._buffer:  # the log has what the buffer lacks
            self._wake.clear()
            batch = await self._source.events_after(self.cursor, PAGE)
            self.read_from_log += len(batch)
            self._behind = len(batch) == PAGE
        if not batch:
            if self._buffer:
                return  # offered while the log was read: taken from the buffer next
            self.caught_up.set()
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), POLL_S)
            except TimeoutError:
                self._behind = True  # quiet for a while: look at the log once, to be sure
                await self._store_cursor()
            return
        self.caught_up.clear()
        for item in batch:
            await self._deliver(item.event)
            self.cursor = item.seq
        if time.monotonic() - self._stored_at >= PERSIST_EVERY_S:
            await self._store_cursor()

    async def _deliver(self, event: JSON) -> None:
        try:
            await await_me_maybe(self._sink(event=event))
            self.delivered += 1
        except Exception:
            self.failed += 1
            log.exception("sink_failed", sink=self.name, seq=event["seq"], **_ids(event))

    async def _store_cursor(self) -> None:
        if self.cursor != self._stored:
            await self._cursors.set_sink_cursor(self.name, self.cursor)
            self._stored = self.cursor
        self._stored_at = time.monotonic()


class Sinks:
    def __init__(
        self,
        sinks: Sequence[tuple[str, Sink]],
        source: EventSource,
        cursors: SinkCursors,
        buffer: int = BUFFER,
    ) -> None:
        self.workers = [SinkWorker(name, sink, source, cursors, buffer) for name, sink in sinks]

    async def start(self) -> None:
        for worker in self.workers:
            await worker.start()

    def offer(self, item: Published) -> None:
        for worker in self.workers:
            worker.offer(item)

    async def stop(self, grace_s: float = 5.0) -> None:
        await asyncio.gather(*(w.stop(grace_s) for w in self.workers))


def _ids(event: JSON) -> dict[str, str]:
    return {key: event[key] for key in ("project_id", "run_id") if key in event}
