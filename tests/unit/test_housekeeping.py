"""Event retention: the cutoff handed to the store is `retention_days` before now."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from adapters.housekeeping import Housekeeping


class RecordingStore:
    def __init__(self) -> None:
        self.cutoffs: list[datetime] = []

    async def prune_events(self, before: datetime, batch: int = 5000) -> int:
        self.cutoffs.append(before)
        return 3


async def test_prune_once_asks_for_events_older_than_the_retention() -> None:
    store = RecordingStore()
    before = datetime.now(UTC)
    assert await Housekeeping(store, retention_days=7).prune_once() == 3
    after = datetime.now(UTC)
    (cutoff,) = store.cutoffs
    assert before - timedelta(days=7) <= cutoff <= after - timedelta(days=7)


async def test_the_background_task_prunes_at_start_and_stops_cleanly() -> None:
    store = RecordingStore()
    housekeeping = Housekeeping(store, retention_days=1, interval_s=3600)
    await housekeeping.start()
    for _ in range(100):  # bounded: the first pass runs as soon as the loop yields
        if store.cutoffs:
            break
        await asyncio.sleep(0)
    await housekeeping.stop()
    assert len(store.cutoffs) == 1
