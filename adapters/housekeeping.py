"""Background upkeep of the database: pruning events past their retention."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog

from core.background import Background

log = structlog.get_logger("cortexd.housekeeping")


class Prunable(Protocol):
    async def prune_events(self, before: datetime, batch: int = 5000) -> int: ...


class Housekeeping:
    """Prunes events older than `retention_days`, at start and then every `interval_s`."""

    def __init__(self, store: Prunable, retention_days: float, interval_s: float = 3600) -> None:
        self._store = store
        self._retention = timedelta(days=retention_days)
        self._interval_s = interval_s
        self._background = Background("housekeeping")

    async def start(self) -> None:
        self._background.start(self._run())

    async def stop(self) -> None:
        await self._background.stop()

    async def prune_once(self) -> int:
        deleted = await self._store.prune_events(datetime.now(UTC) - self._retention)
        if deleted:
            log.info("events_pruned", deleted=deleted, retention_days=self._retention.days)
        return deleted

    async def _run(self) -> None:
        while True:
            try:
                await self.prune_once()
            except Exception:  # a failed pass is retried at the next interval
                log.exception("events_prune_failed")
            await asyncio.sleep(self._interval_s)
