"""What the core needs from the outside world, as Protocols. Adapters implement them.

The store is the truth about who executes what (DESIGN §8): a run is executed by the daemon
that claimed it, under a lease with a fencing epoch, and every write that execution makes goes
through one `RunExecution`, the unit of work of that claim. Commands from any daemon are
`change_run` calls decided on the row as stored, in the transaction that records them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from langgraph.checkpoint.base import BaseCheckpointSaver

from core.domain import EventType, Graph, GraphSpec, NodeState, Run
from core.events import Published
from core.idempotency import IdempotencyKey
from core.pages import MAX_PAGE, Page, RunFilter
from core.schedules import Firing, Schedule
from core.waits import Wait
from core.webhooks import Webhook

# Where LangGraph's run config carries the `RunExecution` whose lease fences the checkpoint
# writes of that run, and whose node records ride along with them (see `Checkpoints`).
EXECUTION_KEY = "__cortexd_execution"


@dataclass(frozen=True, slots=True)
class PendingAnswer:
    """The answer (`resume {"value": ...}`) to a run waiting for input, kept from the resume's
    acknowledgement until LangGraph has it in the run's checkpoints. `interrupt_id`: the
    question it answers (LangGraph's interrupt id), when the run waited for exactly one;
    `checkpoint_id`: the newest checkpoint of the run's thread when it was given."""

    checkpoint_id: str | None
    value: Any
    interrupt_id: str | None = None


@dataclass(frozen=True, slots=True)
class Lease:
    """The right to execute one run, as a claim gave it. A write made under it is accepted only
    while the run's row still names this owner and epoch: a claim, a recovery, a cancel and a
    release each move the epoch on, so an executor that lost its lease cannot write."""

    run_id: str
    owner: str
    epoch: int


@dataclass(frozen=True, slots=True)
class Claim:
    run: Run  # running, owned by the claimer
    lease: Lease
    fresh: bool  # it never ran: it starts from its input, with no checkpoint to read
    # The event log's last seq when the claim committed: an event of the run at or before it
    # (one the bus hands on late) tells nothing about this execution.
    seq: int = 0


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """A daemon with a free slot, asking to take the run it creates at once."""

    owner: str
    lease_s: float
    start: Change


@dataclass(frozen=True, slots=True)
class RunChange:
    """What a command or an execution's outcome does to a run, decided on the stored row."""

    run: Run
    event: EventType
    at: datetime
    answer: PendingAnswer | None = None  # kept as the run's pending answer
    drop_answer: bool = False
    release: bool = False  # the run leaves execution: no owner, the epoch moves on
    cancel_nodes: bool = False  # its running node states become `cancelled`
    reset: bool = False  # its checkpoints and node states are dropped (a fresh start)
    keep_checkpoints: int = 0  # > 0: all but the newest N of its checkpoints are dropped
    wait: Wait | None = None  # parked (released, still running) until the wait ends


# Applied to the run as stored; raises a domain error (InvalidTransition, ...) to refuse.
Change = Callable[[Run], RunChange]


@dataclass(frozen=True, slots=True)
class QueueCounts:
    """The store's runs that are not finished, for every daemon on it."""

    pending: int = 0
    running: int = 0  # owned by a daemon, or waiting for one (resumed, taken back)
    paused: int = 0
    claimable: int = 0  # pending, or running without an owner: what a free slot takes


class Clock(Protocol):
    def now(self) -> datetime: ...


class Liveness(Protocol):
    """Whether a daemon instance is provably gone (its process ended), not merely silent."""

    async def is_dead(self, instance: str) -> bool: ...


class RunExecution(Protocol):
    """The writes of one execution of a run (one claim), each fenced by its lease: once the
    lease is lost every one of them fails with `LeaseLost` and writes nothing."""

    @property
    def lease(self) -> Lease: ...

    def record(self, states: Sequence[NodeState], now: datetime) -> Awaitable[None]:
        """Node states (one `workflow.node_state.updated` event each), queued at the call in
        order with every other write and committed with the one that follows; the result
        resolves when they are durable."""
        ...

    def record_with_task(self, task_id: str, states: Sequence[NodeState], now: datetime) -> None:
        """Node states committed in the transaction that saves LangGraph's writes of task
        `task_id` of this run (the checkpointer finds this execution under `EXECUTION_KEY`):
        a node is recorded complete exactly when LangGraph will not run it again. Nothing is
        kept if those writes never come."""
        ...

    async def save(self, states: Sequence[NodeState], now: datetime) -> None:
        """Node states, durable when this returns."""
        ...

    async def finish(self, change: Change) -> Run:
        """The execution's outcome (completed, failed, paused for input): `change_run` under
        the lease, which is released with it."""
        ...

    async def release(self, now: datetime) -> None:
        """The execution ends without finishing the run (drained for a pause or a shutdown):
        the run keeps its status and any daemon may claim it; one left `running` (resumed
        meanwhile) is announced by a `workflow.run.updated` event, so a daemon with a free
        slot claims it at once. A no-op once the lease is lost."""
        ...

    def close(self) -> None:
        """Record nothing more: node records still waiting for task writes are forgotten."""
        ...


class Store(Protocol):
    """Graphs, runs, node states, the event log, and who executes which run.

    Every write is durable when it returns and records its event in the same transaction;
    committed events are handed, in `seq` order, to the listener the composition root set.
    """

    async def list_graphs(
        self, project_id: str, *, limit: int = MAX_PAGE, cursor: str | None = None
    ) -> Page[Graph]:
        """The project's graphs by id, `limit` at most, after `cursor` (InvalidCursor if it
        is not one of this list's)."""
        ...

    async def get_graph(
        self, project_id: str, graph_id: str, version: int | None = None
    ) -> Graph | None: ...

    async def put_graph(
        self, project_id: str, graph_id: str, spec: GraphSpec, now: datetime, *, create: bool
    ) -> Graph:
        """Create (`create=True`; Conflict if it exists) or replace it as a new version
        (NotFound if it does not exist). Every version is kept."""
        ...

    async def delete_graph(self, project_id: str, graph_id: str, now: datetime) -> None:
        """Delete a graph (NotFound if missing, Conflict while it has active runs).
        Its versions stay, so the runs of it can still be read."""
        ...

    async def next_wake(self) -> float | None:
        """Seconds (by the store's clock) until the earliest parked run is due (<= 0: one is
        due now); None when no run is parked."""
        ...

    async def create_run(
        self, run: Run, claim: ClaimRequest | None = None, *, key: IdempotencyKey | None = None
    ) -> Claim | None:
        """Store a new pending run at the end of the queue. With `claim`, and when nothing
        else waits in the queue (first in, first out), the run is claimed for it in the same
        transaction: the Claim, else None. With `key`, the key is recorded as the run's in the
        same transaction; KeyTaken (and nothing stored) when it already names a run of the
        project that exists and its time to live has not passed by `run.created_at`."""
        ...

    async def get_run(self, project_id: str | None, run_id: str) -> Run | None:
        """A run by id, or None; `project_id=None` only for the engine's own lookups."""
        ...

    async def list_runs(
        self,
        project_id: str,
        filters: RunFilter | None = None,
        *,
        limit: int = MAX_PAGE,
        cursor: str | None = None,
    ) -> Page[Run]:
        """The project's runs that match `filters`, newest first (by `created_at`, the order
        of creation among equal times), `limit` at most, after `cursor` (InvalidCursor if it
        is not one of this list's). A page costs the same however many runs are stored."""
        ...

    async def change_run(
        self, project_id: str | None, run_id: str, change: Change, *, lease: Lease | None = None
    ) -> Run:
        """Apply `change` to the run as stored, with its event and what the change asks for,
        in one transaction, and return the run as recorded. NotFound if there is no such run
        (in that project); with `lease`, LeaseLost unless it is still held. Whatever `change`
        raises leaves everything as it was. A run moved to `pending`, or resumed, joins the
        queue: pending runs in the order they joined, resumed ones ahead of them."""
        ...

    async def claim_runs(
        self, owner: str, limit: int, lease_s: float, start: Change
    ) -> list[Claim]:
        """Take up to `limit` runs for `owner`, first in, first out: runs without an owner
        that are `running` (resumed, or taken back from a daemon) ahead of `pending` ones,
        which `start` moves to running. Each gets a lease until the store's clock says
        now + `lease_s`, with an epoch one past the run's last."""
        ...

    async def renew_leases(self, owner: str, lease_s: float) -> dict[str, int]:
        """Extend every lease `owner` holds, in one statement; the runs it holds, with the
        epoch of each lease."""
        ...

    async def recover_runs(
        self, dead: Sequence[str], max_recoveries: int, recover: Change, give_up: Change
    ) -> list[Run]:
        """Take back every run whose lease expired by the store's clock, or whose owner is in
        `dead`: a running one goes back to the queue with `recoveries` one higher, through
        `recover`, or through `give_up` once that would exceed `max_recoveries`; a paused
        one (its owner died while draining it) only loses its owner. Returns those changed."""
        ...

    async def owners(self) -> set[str]:
        """The instances that own runs or singletons now (to ask `Liveness` about)."""
        ...

    async def queue_counts(self) -> QueueCounts: ...

    async def hold_singleton(
        self, name: str, owner: str, lease_s: float, dead: Sequence[str] = ()
    ) -> bool:
        """Take or renew the lease of a once-per-database duty (sinks, housekeeping) for
        `owner`, if nobody else holds it (its holder's lease expired, or it is in `dead`).
        Whether `owner` holds it now."""
        ...

    async def release_runs(
        self, owner: str, now: datetime, leases: Sequence[Lease] | None = None
    ) -> None:
        """`owner` stops executing its runs (all of them, or those of `leases` that still
        hold), gracefully: they keep their status and join the queue ahead of pending runs,
        each `running` one announced as `RunExecution.release` does; no recovery is counted."""
        ...

    async def release_owner(self, owner: str, now: datetime) -> None:
        """`owner` stops: its runs as `release_runs`, its singletons are free, and it is no
        longer one of the store's instances."""
        ...

    def execution(self, claim: Claim) -> RunExecution:
        """The unit of work of one claim."""
        ...

    async def pending_answer(self, run_id: str) -> PendingAnswer | None:
        """The answer a resume kept for the run (see `RunChange.answer`), or None."""
        ...

    async def drop_answer(self, run_id: str, stale: PendingAnswer) -> None:
        """Delete the answer kept for the run if it is still `stale` (not one a resume gave
        since: an execution that lost its lease must not drop a newer answer)."""
        ...

    async def list_node_states(self, run_id: str) -> list[NodeState]: ...

    async def list_events(
        self, project_id: str, since: int = 0, run_id: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Stored events after `since`, in `seq` order, as the JSON-ready dicts clients get."""
        ...

    async def min_event_seq(self) -> int:
        """The oldest `seq` still stored; when none is, the next one to be given (so a client
        that saw events since pruned still learns of the gap)."""
        ...


class ScheduleStore(Protocol):
    """Schedules (DESIGN §10). A firing is decided on the rows as stored, in the transaction
    that creates its runs; a unique key on (schedule, scheduled time) gives each time one run
    per database at most."""

    async def list_schedules(self, project_id: str) -> list[Schedule]: ...

    async def get_schedule(self, project_id: str, schedule_id: str) -> Schedule | None: ...

    async def put_schedule(self, schedule: Schedule, *, create: bool) -> Schedule:
        """Create (Conflict if it exists) or replace (NotFound if not); a replace keeps the
        stored `created_at` and `last_run_at`. The schedule as stored."""
        ...

    async def delete_schedule(self, project_id: str, schedule_id: str) -> None:
        """NotFound if missing."""
        ...

    async def due_schedules(self, now: datetime, limit: int = 100) -> list[tuple[str, str]]:
        """(project, id) of schedules whose `next_run_at` is at or before `now`, earliest first."""
        ...

    async def fire_schedule(
        self,
        project_id: str,
        schedule_id: str,
        plan: Callable[[Schedule, Graph | None], Firing],
    ) -> list[Run]:
        """In one transaction: `plan` applied to the schedule and its graph as stored (None if
        deleted), its runs created except those whose scheduled time already has one, and the
        schedule stored as the plan left it. The runs created. NotFound if it is gone."""
        ...


class WebhookStore(Protocol):
    """Inbound webhooks (DESIGN §10). A hook's id is unique in the store, across projects:
    the URL that starts its runs names no project."""

    async def list_webhooks(self, project_id: str) -> list[Webhook]:
        """The project's hooks by id, without their secrets."""
        ...

    async def get_webhook(self, project_id: str | None, hook_id: str) -> Webhook | None:
        """A hook, with its `secret` only when `project_id` is None (the signature check)."""
        ...

    async def create_webhook(self, hook: Webhook, secret: str) -> Webhook:
        """Conflict if the id is taken (in any project). The hook as stored, without secret."""
        ...

    async def delete_webhook(self, project_id: str, hook_id: str) -> None:
        """NotFound if missing."""
        ...


class EventSource(Protocol):
    """The whole event log, every project's, in `seq` order: what other daemons committed
    reaches this one's bus, and sinks, through it."""

    async def events_after(self, seq: int, limit: int = 1000) -> list[Published]: ...

    async def last_seq(self) -> int:
        """The newest `seq` stored, 0 when none is."""
        ...


class SinkCursors(Protocol):
    """Where each event sink is in the log: it has been given every event up to this seq."""

    async def sink_cursor(self, sink: str) -> int | None: ...

    async def set_sink_cursor(self, sink: str, seq: int) -> None: ...


class Checkpoints(Protocol):
    """LangGraph's checkpoint store for run threads (thread id = run id). Its saver fences
    every write of a run whose config carries a `RunExecution` under `EXECUTION_KEY`, and
    commits that execution's `record_with_task` records with the task's writes."""

    @property
    def saver(self) -> BaseCheckpointSaver[str]: ...

    async def exists(self, thread_id: str) -> bool: ...

    async def latest_id(self, thread_id: str) -> str | None:
        """The id of the thread's newest checkpoint (the one it continues from), or None."""
        ...
