"""The executor of this daemon: its slots, the executions it runs, and its lifecycle.

The store is the truth about who runs what (DESIGN §8); what is kept here is this daemon's
share of it: the executions it claimed, each an owned task. `core.scheduler` claims and keeps
runs, `core.driver` drives one, `core.commands` records what clients ask, and `core.answers`
holds the input protocol. The engine also reads the event log (it is a bus subscriber): a run
it executes that was cancelled or paused by any daemon is stopped or drained here.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import structlog
from langgraph.runtime import RunControl

from core import changes
from core.answers import Answers
from core.children import Children
from core.commands import Commands
from core.domain import Run, RunStatus
from core.driver import Driver, DriveSettings, Execution
from core.errors import Conflict
from core.events import Published
from core.graphs import GraphCache
from core.loopwatch import NodeActivity
from core.nodes import NodeType
from core.ports import Checkpoints, Claim, ClaimRequest, Clock, Liveness, QueueCounts, Store
from core.scheduler import LeaseSettings, Scheduler

log = structlog.get_logger("cortexd.engine")
_NO_VALUE = object()


_ENDED = frozenset({"completed", "failed", "cancelled"})


@dataclass(frozen=True, slots=True)
class EngineSettings:
    max_concurrent_runs: int = 8
    recursion_limit: int = 100
    node_timeout_s: float = 300.0
    shutdown_grace_s: float = 10.0
    cancel_grace_s: float = 5.0
    checkpoint_retention: int = 1
    compiled_cache_size: int = 128
    lease_s: float = 15.0
    max_recoveries: int = 3
    park_after_s: float = 5.0


class Engine:
    def __init__(
        self,
        store: Store,
        checkpoints: Checkpoints,
        clock: Clock,
        node_types: Mapping[str, NodeType],
        settings: EngineSettings,
        activity: NodeActivity | None = None,
        *,
        instance: str = "local",
        liveness: Liveness | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self.settings = settings
        self.instance = instance
        self.activity = activity
        self.max_concurrent_runs = settings.max_concurrent_runs
        self.graphs = GraphCache(store, checkpoints.saver, settings.compiled_cache_size)
        answers = Answers(store, checkpoints, self.graphs)
        self._driver = Driver(
            store,
            checkpoints,
            clock,
            node_types,
            self.graphs,
            answers,
            DriveSettings(
                settings.recursion_limit,
                settings.node_timeout_s,
                settings.checkpoint_retention,
                settings.park_after_s,
            ),
            activity,
            Children(store, clock, self.wake),
        )
        self.scheduler = Scheduler(
            store,
            self,
            clock,
            instance,
            LeaseSettings(settings.lease_s, settings.max_recoveries),
            liveness,
        )
        self.commands = Commands(store, clock, answers, self)
        self._active: dict[str, Execution] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._detached: dict[asyncio.Task[None], str] = {}  # stopped, not yet finished
        # Slots held for runs being created here (see `reserve`); their creation events need
        # no claim: `submit` launches them or looks for a slot itself.
        self._reserved: dict[str, None] = {}
        self._accepting = False
        self.idle = asyncio.Event()
        self.idle.set()

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def running(self) -> int:
        """Runs this daemon executes now."""
        return len(self._active)

    @property
    def queued(self) -> int:
        """Runs of the store waiting for a slot (on any daemon), as of the last look."""
        return self.scheduler.counts.claimable

    @property
    def accepting(self) -> bool:
        return self._accepting

    async def counts(self) -> QueueCounts:
        """The store's unfinished runs, read now (every daemon's)."""
        self.scheduler.counts = await self._store.queue_counts()
        return self.scheduler.counts

    async def start(self) -> int:
        """Recover and start claiming. Returns how many runs were waiting for a slot."""
        self._accepting = True
        return await self.scheduler.start()

    async def stop(self) -> None:
        """Stop taking runs; let running nodes finish within the grace period (their runs stay
        `running`), cancel what is left, and release every run this daemon still holds: they
        join the queue for the next daemon to claim (this one at its next start)."""
        self._accepting = False
        # Claim nothing more, but keep renewing the leases while the runs drain: a drain
        # longer than the lease must not let another daemon take a run mid-node.
        await self.scheduler.stop_claiming()
        for execution in self._active.values():
            execution.control.request_drain("shutdown")
        tasks = list(self._tasks.values())
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self.settings.shutdown_grace_s)
            for task in late:
                task.cancel()
        leftovers = list(self._tasks.values()) + list(self._detached)
        if leftovers:
            await asyncio.wait(leftovers, timeout=self.settings.cancel_grace_s)
        await self.scheduler.stop()
        try:
            await self._store.release_runs(self.instance, self._clock.now())
        except Exception:  # its leases expire instead; nothing is lost, recovery is later
            log.exception("release_failed", instance=self.instance)

    def set_max_concurrent_runs(self, limit: int) -> None:
        """Change the limit live (SIGHUP). Lowering it lets running runs finish; raising it
        starts queued runs at once."""
        self.max_concurrent_runs = max(1, limit)
        self.idle.clear()
        self.scheduler.slot_freed()

    async def wait_idle(self) -> None:
        """Until nothing runs here and the queue has nothing this daemon could take."""
        await self.idle.wait()

    # -- commands --------------------------------------------------------------------------

    def reserve(self, run_id: str) -> ClaimRequest | None:
        """For a run about to be created: a slot held for it, so that the store may hand it
        to this daemon in the transaction that creates it (one commit, not two). None when
        no slot is free. Every reservation ends with `submit`."""
        if not self._accepting or self.free_slots() <= 0:
            return None
        self._reserved[run_id] = None
        return ClaimRequest(self.instance, self.settings.lease_s, changes.start(self._clock.now()))

    def submit(self, run: Run, claim: Claim | None = None) -> None:
        """A run was queued (created, or executed again; or its creation failed): launched at
        once when the store gave it to this daemon, else claimed when a slot is free."""
        self._reserved.pop(run.id, None)
        if claim is not None and self._accepting:
            self.launch(claim)
        else:
            self.wake()

    def wake(self) -> None:
        """A run may have joined the queue."""
        self.idle.clear()
        self.scheduler.hint()

    async def execute(self, run: Run, *, new_input: dict[str, Any] | None, from_start: bool) -> Run:
        return await self.commands.execute(run, new_input=new_input, from_start=from_start)

    async def cancel(self, run: Run) -> Run:
        return await self.commands.cancel(run)

    async def pause(self, run: Run) -> Run:
        return await self.commands.pause(run)

    async def resume(self, run: Run, value: Any = _NO_VALUE) -> Run:
        return await self.commands.resume(run, None if value is _NO_VALUE else value)

    # -- what the scheduler and the commands call ---------------------------------------------

    def free_slots(self) -> int:
        reserved = len(self._reserved) + self.scheduler.in_flight
        return self.max_concurrent_runs - len(self._active) - reserved

    def executing(self) -> set[str]:
        return set(self._active)

    def launch(self, claim: Claim) -> None:
        run_id = claim.run.id
        if (old := self._active.get(run_id)) is not None:
            # Taken back by another daemon and claimed here again before the renewal told
            # this daemon: the old execution (fenced out already) must not run on beside it.
            self._stop(old, "claimed again")
        execution = Execution(claim, self._store.execution(claim), RunControl(), self._clock.now())
        # A context of its own: not the one of whichever request happened to free a slot.
        task = asyncio.create_task(
            self._driver.drive(execution), name=f"run:{run_id}", context=contextvars.Context()
        )
        self._active[run_id] = execution
        self._tasks[run_id] = task
        self.idle.clear()
        task.add_done_callback(partial(self._reap, run_id))

    def lost(self, run_ids: Iterable[str]) -> None:
        """Leases this daemon no longer holds: stop those tasks, writing nothing more."""
        for run_id in run_ids:
            execution = self._active.get(run_id)
            if execution is not None:
                self._stop(execution, "lease lost")

    def queue_settled(self) -> None:
        self._update_idle()

    def changed(self, run: Run) -> Execution | None:
        """A run changed (by a command here, or any daemon's, seen in the event log)."""
        execution = self._active.get(run.id)
        if run.status is RunStatus.PENDING or (
            run.status is RunStatus.RUNNING and run.owner is None
        ):
            self.wake()
        if execution is None:
            return None
        if run.status is RunStatus.CANCELLED:
            self._stop(execution, "cancel")
        elif run.status is RunStatus.PAUSED:
            # The nodes in flight finish and are checkpointed; no new superstep starts.
            execution.control.request_drain("pause")
        return execution

    def offer(self, item: Published) -> None:
        """The event log (a bus subscriber): runs changed by any daemon."""
        event = item.event
        if event["type"].startswith("workflow.run.") and "run" in event:
            run = event["run"]
            if run.get("parent_run_id") is not None and run["status"] in _ENDED:
                self.wake()  # a child that ended woke its parent (parked, waiting for it)
            if run.get("waiting_for") is not None and run["status"] == "running":
                self.scheduler.parked()  # a park, here or on another daemon
            execution = self._active.get(run["id"])
            if execution is None:
                joined = run["status"] == "pending" or (
                    run["status"] == "running" and run.get("owner") is None
                )
                # One being created here needs no claim: `submit` launches it or looks.
                if joined and run["id"] not in self._reserved:
                    self.wake()
                return
            # An event from before this execution's claim (the bus hands some on late: past a
            # gap, behind the tail) says nothing about it.
            if item.seq <= execution.claim.seq:
                return
            taken = run["status"] == "running" and run.get("owner") != self.instance
            if taken and not execution.released:
                # Taken back by another daemon (this one stalled): stop it now rather than at
                # the next renewal. A release of its own is not that.
                self._stop(execution, "lease lost")
            self.changed(Run.model_validate(run))

    async def wait_detached(self, run_id: str) -> None:
        """A stopped task of this run that is still ending (a node ignoring its cancellation):
        wait for it a while, else refuse."""
        ending = [task for task, owner in self._detached.items() if owner == run_id]
        if ending:
            _, late = await asyncio.wait(ending, timeout=self.settings.cancel_grace_s)
            if late:
                raise Conflict(
                    f"run {run_id!r} is still ending a cancelled node; try again shortly"
                )

    # -- the executions --------------------------------------------------------------------

    def _stop(self, execution: Execution, why: str) -> None:
        run_id = execution.run_id
        log.info("execution_stopped", run_id=run_id, reason=why)
        task = self._tasks.pop(run_id, None)
        self._active.pop(run_id, None)
        if execution.scope is not None:
            execution.scope.close()
        execution.writes.close()
        # Both: no new step even if a node swallows its CancelledError.
        execution.control.request_drain(why)
        if task is not None:
            task.cancel()
            self._detached[task] = run_id
        self.scheduler.slot_freed()

    def _reap(self, run_id: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(run_id) is task:
            del self._tasks[run_id]
            if self._active.pop(run_id).released:
                self.wake()  # resumed while it drained: claimable again (here, at once)
        self._detached.pop(task, None)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("run_task_crashed", run_id=run_id, exc_info=exc)
        self.scheduler.slot_freed()
        self._update_idle()

    def _update_idle(self) -> None:
        if not self._active and not self._detached and self.scheduler.settled:
            self.idle.set()
        else:
            self.idle.clear()
