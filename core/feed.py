"""One event log for every daemon on a store (DESIGN §8): this daemon's bus gets every event
committed to the store, by this daemon or any other, once each, in `seq` order, with no gap.

Its own commits are published at once when they follow what was published last (the usual
case, and the only one with a single daemon); a commit past a gap means other daemons
committed in between: it waits while the tail reads the gap from the store. The tail is woken
by other daemons (a datagram on SQLite, NOTIFY on PostgreSQL) and looks anyway every
`poll_s`, so a lost wake-up costs latency, never an event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import structlog

from core.background import Background
from core.events import EventBus, Published, Subscriber
from core.ports import EventSource

log = structlog.get_logger("cortexd.events")
PAGE = 1000


class EventFeed:
    def __init__(self, bus: EventBus, source: EventSource, poll_s: float = 1.0) -> None:
        self._bus = bus
        self._source = source
        self._poll_s = poll_s
        self._held: list[Published] = []  # own commits past a gap, until the gap is read
        self._local: list[Subscriber] = []
        self._wake = asyncio.Event()
        self._background = Background("event-tail")
        self.last_seq = 0
        self.tailed = 0  # events of other daemons published here

    async def start(self) -> None:
        self.last_seq = await self._source.last_seq()
        self._bus.last_seq = self.last_seq
        self._background.start(self._run())

    async def stop(self) -> None:
        await self._background.stop()

    def subscribe_local(self, subscriber: Subscriber) -> None:
        """Also hand `subscriber` the events this daemon commits (and only those), as they
        commit: what counts this daemon's own work (metrics)."""
        self._local.append(subscriber)

    def committed(self, items: Sequence[Published]) -> None:
        """This daemon's writer committed these (in seq order, maybe in more than one
        transaction, with other daemons' commits between them): never blocks."""
        if not items:
            return
        for subscriber in self._local:
            for item in items:
                subscriber.offer(item)
        if not self._held and items[0].seq == self.last_seq + 1:
            contiguous = 1
            while contiguous < len(items) and items[contiguous].seq == items[0].seq + contiguous:
                contiguous += 1
            self._publish(items[:contiguous])
            items = items[contiguous:]  # past a gap: held until the tail has read it
        if items:
            self._held.extend(items)
            self._wake.set()

    def wake(self) -> None:
        """Another daemon committed something."""
        self._wake.set()

    async def catch_up(self) -> None:
        """Publish what the store holds past the last event published here."""
        while True:
            page = await self._source.events_after(self.last_seq, PAGE)
            fresh = [item for item in page if item.seq > self.last_seq]
            own = {item.seq for item in self._held}
            self.tailed += sum(item.seq not in own for item in fresh)
            if fresh:
                self._publish(fresh)
            self._held = [item for item in self._held if item.seq > self.last_seq]
            if len(page) < PAGE:
                break
        # What is still held was committed after the read began: contiguous now, or read next.
        while self._held and self._held[0].seq == self.last_seq + 1:
            self._publish([self._held.pop(0)])
        if self._held:
            self._wake.set()

    def _publish(self, items: Sequence[Published]) -> None:
        self.last_seq = items[-1].seq
        self._bus.publish(items)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_s)
            self._wake.clear()
            try:
                await self.catch_up()
            except Exception:  # the store cannot be read now: the next round tries again
                log.exception("event_tail_failed", after_seq=self.last_seq)
