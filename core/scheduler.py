"""Claiming and keeping runs: this daemon's side of the store's queue and leases (DESIGN §8).

The claim loop takes runs FIFO from the store up to the free slots whenever the queue may hold
one (a run queued, resumed, released or taken back anywhere, a slot freed here). The upkeep,
every `lease_s`/4, renews every lease this daemon holds in one statement (a run missing from
the answer was lost: its task is stopped; one held without a task here, twice running, is
released), and takes back for the queue the runs of daemons that are provably dead, or whose
leases expired.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import structlog

from core import changes
from core.background import Background
from core.ports import Claim, Clock, Lease, Liveness, QueueCounts, Store

log = structlog.get_logger("cortexd.engine")
RETRY_AFTER_ERROR_S = 1.0


@dataclass(frozen=True, slots=True)
class LeaseSettings:
    lease_s: float = 15.0
    max_recoveries: int = 3


class Launcher(Protocol):
    """The engine, as the scheduler sees it."""

    @property
    def accepting(self) -> bool: ...

    def free_slots(self) -> int: ...

    def executing(self) -> set[str]: ...

    def launch(self, claim: Claim) -> None: ...

    def lost(self, run_ids: Iterable[str]) -> None: ...

    def queue_settled(self) -> None: ...


async def dead_owners(store: Store, liveness: Liveness, instance: str) -> list[str]:
    """The other instances the store names as owners (of runs, duties) that are provably dead."""
    others = await store.owners() - {instance}
    return sorted([owner for owner in others if await liveness.is_dead(owner)])


class NobodyDies:
    """Liveness when nothing can prove a daemon dead: leases expire instead."""

    async def is_dead(self, instance: str) -> bool:
        return False


class Scheduler:
    def __init__(
        self,
        store: Store,
        launcher: Launcher,
        clock: Clock,
        instance: str,
        settings: LeaseSettings,
        liveness: Liveness | None = None,
    ) -> None:
        self._store = store
        self._launcher = launcher
        self._clock = clock
        self._instance = instance
        self._settings = settings
        self._liveness = liveness or NobodyDies()
        self._wake = asyncio.Event()
        self._claims = Background("claims")
        self._upkeep = Background("leases")
        self.counts = QueueCounts()
        # Whether the queue may hold a run this daemon could take: set by what queues runs
        # (an event, a local command, the periodic upkeep), cleared by a claim that found
        # fewer than it asked for. Without it every event would cost a claim transaction.
        self._backlog = True
        self._hints = 0
        self._orphans: set[str] = set()
        self.in_flight = 0  # slots a claim under way may fill
        self.settled = True  # nothing to take, as far as this daemon knows
        self._timer: asyncio.TimerHandle | None = None  # the next parked run's wake-up
        # Whether runs may be parked (a park seen since the store last said none is): only
        # then does a claim look for the next wake-up; the upkeep always does.
        self._parked = True

    async def start(self) -> int:
        """Take back what dead daemons held (this one's previous life included), claim a first
        batch, and start the loops. Returns how many runs were waiting for a slot."""
        await self.upkeep()
        waiting = self.counts.claimable
        await self.claim()
        self._claims.start(self._claim_loop())
        self._upkeep.start(self._upkeep_loop())
        return waiting

    async def stop_claiming(self) -> None:
        await self._claims.stop()

    async def stop(self) -> None:
        await self._claims.stop()
        await self._upkeep.stop()
        if self._timer is not None:
            self._timer.cancel()

    def hint(self) -> None:
        """A run may have joined the queue (created, executed again, resumed, taken back):
        look soon (cheap; coalesced)."""
        self._hints += 1
        self._backlog = True
        self.settled = False
        self._wake.set()

    def slot_freed(self) -> None:
        """A slot of this daemon freed up: look if the queue may hold something."""
        if self._backlog:
            self.settled = False
            self._wake.set()

    async def claim(self) -> None:
        free = self._launcher.free_slots()
        if not self._launcher.accepting:
            return
        if free <= 0 or not self._backlog:
            self.settled = not self._backlog or free <= 0
            self._launcher.queue_settled()
            return
        seen = self._hints
        self.in_flight = free  # these slots are spoken for until the claims are launched
        try:
            claims = await self._store.claim_runs(
                self._instance, free, self._settings.lease_s, changes.start(self._clock.now())
            )
        finally:
            self.in_flight = 0
        for claim in claims:
            self._launcher.launch(claim)
        if len(claims) < free and self._hints == seen:
            self._backlog = False  # as of that transaction, the queue had nothing more
            self.settled = True
            self._launcher.queue_settled()
            if self._parked:
                await self.arm_wake()

    def parked(self) -> None:
        """A run was parked (by any daemon): its wake-up must be armed."""
        self._parked = True
        self.hint()

    async def arm_wake(self) -> None:
        """Look again when the earliest parked run is due (a timer's end): every daemon arms
        one, the first to claim takes the run. Re-armed at each claim that left the queue and
        at each upkeep, so a run parked by another daemon is seen within lease_s/4 at worst
        (its event usually wakes this one at once)."""
        delay = await self._store.next_wake()
        self._parked = delay is not None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if delay is not None:
            # Not a busy loop when one is due now and another daemon is about to take it.
            self._timer = asyncio.get_running_loop().call_later(max(0.05, delay), self.hint)

    async def upkeep(self) -> None:
        lease_s = self._settings.lease_s
        executing = self._launcher.executing()  # before the renewal: a later claim is not lost
        held = await self._store.renew_leases(self._instance, lease_s)
        lost = executing - held.keys()
        if lost:
            log.warning("leases_lost", runs=len(lost), run_ids=sorted(lost)[:10])
            self._launcher.lost(lost)
        # Held but executed by no task here (its task ended without letting go): released,
        # once it was so at two upkeeps running, never a claim still on its way to a task.
        orphans = held.keys() - executing - self._launcher.executing()
        stale = orphans & self._orphans
        self._orphans = orphans - stale
        if stale:
            log.warning("orphan_leases_released", runs=len(stale), run_ids=sorted(stale)[:10])
            # Under the lease as renewed: a claim of the run since (a new epoch) is not undone.
            leases = [Lease(run_id, self._instance, held[run_id]) for run_id in sorted(stale)]
            await self._store.release_runs(self._instance, self._clock.now(), leases)
        dead = await dead_owners(self._store, self._liveness, self._instance)
        now = self._clock.now()
        recovered = await self._store.recover_runs(
            dead,
            self._settings.max_recoveries,
            changes.recover(now),
            changes.give_up(now, self._settings.max_recoveries),
        )
        if recovered:
            log.info(
                "recovering_runs",
                runs=len(recovered),
                dead_instances=dead,
                failed=sum(r.error is not None for r in recovered),
            )
        self.counts = await self._store.queue_counts()
        if self.counts.claimable:
            self.hint()  # also what another daemon released at its stop (no event says so)
        await self.arm_wake()

    async def _claim_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.claim()
            except Exception:  # the store is unavailable: look again shortly
                log.exception("claim_failed")
                await asyncio.sleep(RETRY_AFTER_ERROR_S)
                self._wake.set()

    async def _upkeep_loop(self) -> None:
        while True:
            # A quarter of the lease: "at least every lease_s/3" with room for a slow round.
            await asyncio.sleep(self._settings.lease_s / 4)
            try:
                await self.upkeep()
            except Exception:  # retried at the next round, well within the lease
                log.exception("lease_upkeep_failed")
