"""Work done once per database, not once per daemon (DESIGN §8): event sinks, housekeeping.

Whichever daemon holds the store's `duties` singleton does them; it renews the hold every
`lease_s`/4. When it stops, its hold is released; when it dies, another daemon takes it over as
soon as the holder is provably dead, or its lease has expired.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import structlog

from core.background import Background
from core.ports import Liveness, Store
from core.scheduler import dead_owners

log = structlog.get_logger("cortexd.duties")
NAME = "duties"


class Duties:
    def __init__(
        self,
        store: Store,
        instance: str,
        lease_s: float,
        liveness: Liveness,
        work: Sequence[tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]],
    ) -> None:
        """`work`: (start, stop) pairs, started when this daemon takes the duties and stopped
        when it loses them or stops."""
        self._store = store
        self._instance = instance
        self._lease_s = lease_s
        self._liveness = liveness
        self._work = work
        self._background = Background("duties")
        self.held = False

    async def start(self) -> None:
        await self.hold_once()
        self._background.start(self._run())

    async def stop(self) -> None:
        await self._background.stop()
        await self._let_go()

    async def hold_once(self) -> None:
        dead = await dead_owners(self._store, self._liveness, self._instance)
        held = await self._store.hold_singleton(NAME, self._instance, self._lease_s, dead)
        if held and not self.held:
            self.held = True
            log.info("duties_taken", instance=self._instance)
            for start, _ in self._work:
                await start()
        elif not held and self.held:
            log.warning("duties_lost", instance=self._instance)
            await self._let_go()

    async def _let_go(self) -> None:
        if self.held:
            self.held = False
            for _, stop in reversed(self._work):
                await stop()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._lease_s / 4)
            try:
                await self.hold_once()
            except Exception:  # retried at the next round, within the lease
                log.exception("duties_upkeep_failed")
