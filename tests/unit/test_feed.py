"""The event feed: every daemon's bus gets the store's events once each, in seq order, with no
gap, its own commits at once and other daemons' through the tail."""

from __future__ import annotations

import asyncio

from core.events import EventBus, Published
from core.feed import EventFeed


class Log:
    """The store's event log, as the feed reads it (other daemons append to it too)."""

    def __init__(self) -> None:
        self.items: list[Published] = []

    def append(self) -> Published:
        seq = len(self.items) + 1
        item = Published({"seq": seq, "type": "t", "project_id": "p"}, f'{{"seq":{seq}}}')
        self.items.append(item)
        return item

    async def events_after(self, seq: int, limit: int = 1000) -> list[Published]:
        return [i for i in self.items if i.seq > seq][:limit]

    async def last_seq(self) -> int:
        return len(self.items)


class Seen:
    def __init__(self) -> None:
        self.seqs: list[int] = []

    def offer(self, item: Published) -> None:
        self.seqs.append(item.seq)


async def test_own_commits_past_a_gap_wait_for_the_tail_to_read_it() -> None:
    log, bus, seen = Log(), EventBus(), Seen()
    bus.subscribe(seen)
    feed = EventFeed(bus, log, poll_s=3600)
    log.append()  # before this daemon started: not replayed
    await feed.start()
    try:
        feed.committed([log.append()])  # follows the last one: published at once
        assert seen.seqs == [2]
        log.append()  # another daemon's commit (3), then this daemon's (4)
        feed.committed([log.append()])
        assert seen.seqs == [2]  # held: 3 is not published yet
        feed.wake()
        for _ in range(100):  # bounded: the tail runs as soon as the loop lets it
            if seen.seqs == [2, 3, 4]:
                break
            await asyncio.sleep(0)
        assert seen.seqs == [2, 3, 4]
        assert feed.tailed == 1
        feed.committed([log.append()])
        assert seen.seqs == [2, 3, 4, 5]
    finally:
        await feed.stop()


async def test_own_commits_with_another_daemons_between_them_wait_for_the_tail() -> None:
    """One hand-over of the writer's can hold two of its transactions, and another daemon's
    commit between them (PostgreSQL: a failed operation decided again alone): what follows
    the gap waits for the tail, which reads the other daemon's events first."""
    log, bus, seen = Log(), EventBus(), Seen()
    bus.subscribe(seen)
    feed = EventFeed(bus, log, poll_s=3600)
    await feed.start()
    try:
        first = log.append()  # this daemon's (1), another daemon's (2), this daemon's (3)
        log.append()
        feed.committed([first, log.append()])
        assert seen.seqs == [1]  # 3 held: 2 is not published yet
        for _ in range(100):  # bounded: the tail runs as soon as the loop lets it
            if seen.seqs == [1, 2, 3]:
                break
            await asyncio.sleep(0)
        assert seen.seqs == [1, 2, 3]
        assert feed.tailed == 1
    finally:
        await feed.stop()


async def test_other_daemons_events_arrive_on_a_wake_up_or_the_next_poll() -> None:
    log, bus, seen = Log(), EventBus(), Seen()
    bus.subscribe(seen)
    feed = EventFeed(bus, log, poll_s=0.01)  # no wake-up at all: the poll finds them
    await feed.start()
    try:
        for _ in range(3):
            log.append()
        for _ in range(500):  # bounded
            if len(seen.seqs) == 3:
                break
            await asyncio.sleep(0.005)
        assert seen.seqs == [1, 2, 3]
    finally:
        await feed.stop()
