"""The write operations on runs: changes decided on the stored row, claims, leases, recovery.

Each function here runs inside one of a writer's transactions (`Tx`). A change is decided on
the row as it is at that moment, and two daemons can never both claim one run. On SQLite the
transactions of every daemon on the file never overlap (BEGIN IMMEDIATE). On PostgreSQL those
of different daemons do: a row read to be changed is locked as it is read (`dialect.lock`:
the transaction waits for another that is changing it, and reads it as that one left it); a
claim passes over the rows another holds (`dialect.take`: two claimers never wait on each
other, nor take one run); a fenced write holds its run's row against a change of owner
(`adapters/postgres/writer.py`); decisions on more than one row (a concurrency group's count)
take the lock of what they count (`Tx.lock`). Times of leases are the database's clock
(`dialect.now`), never a daemon's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from adapters.sql import groups
from adapters.sql.groups import Membership
from adapters.sql.tx import Tx
from core.domain import Event, EventType, NodeState, NodeStatus, Run, RunStatus
from core.errors import Conflict, LeaseLost, NotFound
from core.idempotency import IdempotencyKey, KeyTaken
from core.pages import micros
from core.ports import Change, Claim, ClaimRequest, Lease, RunChange
from core.states import TERMINAL
from core.waits import Wait

RUN_COLUMNS = "body, owner, epoch"
_QUEUED = (RunStatus.PENDING, RunStatus.RUNNING)  # waiting for a slot, or holding one


def run_from(row: Sequence[Any]) -> Run:
    """A run from (body, owner, ...): the `owner` column is the truth (a claim of a resumed run
    or a renewal does not rewrite the body)."""
    run = Run.model_validate_json(row[0])
    return run if run.owner == row[1] else run.model_copy(update={"owner": row[1]})


def run_event(run: Run, kind: EventType, now: datetime) -> Event:
    return Event(type=kind, project_id=run.project_id, run_id=run.id, timestamp=now, run=run)


# What a fence reads. Inside one transaction nothing but the transaction itself changes a run's
# owner and epoch (SQLite: the writer holds the file's write lock; PostgreSQL: the fence holds
# the run's row, FOR SHARE), so a transaction may remember what this read until one of its own
# statements writes the run (`adapters.postgres.writer`).
FENCE = "SELECT owner, epoch FROM runs WHERE id = ?"


async def fence(tx: Tx, lease: Lease) -> None:
    """Refuse a write of an execution whose lease is no longer the run's."""
    row = await tx.fetchone(FENCE, (lease.run_id,))
    if row is None or row[0] != lease.owner or row[1] != lease.epoch:
        raise LeaseLost(lease.run_id)


async def insert_run(
    tx: Tx,
    run: Run,
    claim: ClaimRequest | None = None,
    key: IdempotencyKey | None = None,
    versions: groups.VersionLimits | None = None,
) -> Claim | None:
    await graph_kept(tx, run.project_id, run.workflow_id)
    if key is not None:
        await take_key(tx, run, key)
    group = await groups.group_of_new_run(tx, run, versions)
    held = group is not None and not await groups.has_room(tx, group)
    seq = (await tx.emit(run_event(run, EventType.RUN_CREATED, run.created_at)))["seq"]
    position, at = queue_position(tx, seq)
    await tx.execute(
        "INSERT INTO runs (id, project_id, workflow_id, status, body, queued_at, created_us, "
        "trigger_type, parent_run_id, concurrency_key, concurrency_limit, concurrency_held) "
        f"VALUES (?, ?, ?, ?, ?, {position}, ?, ?, ?, ?, ?, ?)",
        (
            run.id,
            run.project_id,
            run.workflow_id,
            run.status.value,
            run.model_dump_json(),
            *at,
            micros(run.created_at),
            str(run.trigger.get("type", "api")),
            run.parent_run_id,
            group and group.key,
            group and group.limit,
            int(held),
        ),
    )
    if claim is None or held:
        return None
    # Taken at once only when it is first in the queue: nothing else waits for a slot (runs
    # held for their group's limit do not count: they wait for their group, not for a slot).
    hint = tx.dialect.indexed_by
    waiting = await tx.fetchone(
        f"SELECT EXISTS (SELECT 1 FROM runs {hint('runs_claimable')} "
        "WHERE status = 'pending' AND concurrency_held = 0 AND id != ?) "
        f"OR EXISTS (SELECT 1 FROM runs {hint('runs_unowned')} "
        "WHERE status = 'running' AND owner IS NULL AND wake_at IS NULL) "
        f"OR EXISTS (SELECT 1 FROM runs {hint('runs_waking')} WHERE wake_at IS NOT NULL "
        f"AND wake_at <= {tx.dialect.now} AND status = 'running' AND owner IS NULL)",
        (run.id,),
    )
    if waiting[0]:
        return None
    [taken] = await claim_runs(tx, claim.owner, 1, claim.lease_s, claim.start)
    return taken


async def graph_kept(tx: Tx, project_id: str, graph_id: str) -> None:
    """NotFound unless the graph is stored; else it stays, to the transaction's end, for the
    run about to be made of it: a deletion decided after (its count of active runs) waits
    for this transaction and counts that run, one decided before is seen here."""
    found = await tx.fetchone(
        f"SELECT 1 FROM graphs WHERE project_id = ? AND id = ?{tx.dialect.keep}",
        (project_id, graph_id),
    )
    if found is None:
        raise NotFound("graph", graph_id)


def queue_position(tx: Tx, seq: int) -> tuple[str, tuple[int, ...]]:
    """The SQL of a run's place in the queue as it joins it (its event's `seq` on SQLite, see
    `Dialect.queue_position`), and its parameters."""
    position = tx.dialect.queue_position
    return ("?", (seq,)) if position is None else (position, ())


async def take_key(tx: Tx, run: Run, key: IdempotencyKey) -> None:
    """Record `key` as `run`'s, or raise KeyTaken when it already names a run that exists and
    the key has not expired. With two transactions racing on one key, the second's INSERT
    waits on the first's row (PostgreSQL) or on its write lock (SQLite) and then finds it.
    Whether the run it names still exists is read by a statement of its own, once the key's
    row is locked: a subquery of the INSERT (or of the lock's SELECT) would read the runs as
    they were before the wait (PostgreSQL takes a statement's snapshot as it starts), without
    the run the other transaction stored."""
    now = micros(run.created_at)
    expires = now + round(key.ttl_s * 1_000_000)
    upsert = (
        "INSERT INTO idempotency_keys (project_id, idem_key, fingerprint, run_id, expires_us) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (project_id, idem_key) DO UPDATE SET "
        "fingerprint = excluded.fingerprint, run_id = excluded.run_id, "
        "expires_us = excluded.expires_us WHERE idempotency_keys.expires_us <= ? "
        "RETURNING run_id"
    )
    values = (run.project_id, key.key, key.fingerprint, run.id, expires)
    if await tx.fetchall(upsert, (*values, now)):
        return
    row = await tx.fetchone(
        "SELECT run_id, fingerprint FROM idempotency_keys WHERE project_id = ? AND idem_key = ?"
        f"{tx.dialect.lock}",
        (run.project_id, key.key),
    )
    if await tx.fetchone("SELECT 1 FROM runs WHERE id = ?", (row[0],)):
        raise KeyTaken(row[0], row[1])
    # The run it named is gone (deleted with its history): the key is this run's now.
    await tx.execute(
        "UPDATE idempotency_keys SET fingerprint = ?, run_id = ?, expires_us = ? "
        "WHERE project_id = ? AND idem_key = ?",
        (key.fingerprint, run.id, expires, run.project_id, key.key),
    )


async def change_run(
    tx: Tx, project_id: str | None, run_id: str, change: Change, lease: Lease | None
) -> Run:
    sql = f"SELECT {RUN_COLUMNS}, concurrency_key, concurrency_held FROM runs WHERE id = ?"
    params: tuple[str, ...] = (run_id,)
    if project_id is not None:
        sql, params = sql + " AND project_id = ?", (run_id, project_id)
    row = await tx.fetchone(sql + tx.dialect.lock, params)
    if row is None:
        raise NotFound("run", run_id)
    if lease is not None and (row[1], row[2]) != (lease.owner, lease.epoch):
        raise LeaseLost(run_id)
    current = run_from(row)
    result = change(current)
    if result.run.status is RunStatus.PENDING and current.status in TERMINAL:
        await graph_of_rerun(tx, current)
    return await apply_change(tx, current, result, Membership(row[3], bool(row[4])))


async def graph_of_rerun(tx: Tx, run: Run) -> None:
    """An ended run is executed again only while its graph exists (and the graph then stays
    to the transaction's end, as for a new run): a deleted graph has no active run."""
    try:
        await graph_kept(tx, run.project_id, run.workflow_id)
    except NotFound:
        raise Conflict(
            f"graph {run.workflow_id!r} was deleted: its runs are not executed again"
        ) from None


async def apply_change(
    tx: Tx, current: Run, result: RunChange, member: Membership | None = None
) -> Run:
    """`member`: the run's group as stored, if the caller read it (else read when needed)."""
    run = result.run
    if result.release and run.owner is not None:
        run = run.model_copy(update={"owner": None})
    seq = (await tx.emit(run_event(run, result.event, result.at)))["seq"]
    joins_queue = run.status is RunStatus.PENDING or (
        run.status is RunStatus.RUNNING and current.status is RunStatus.PAUSED
    )
    release = result.release
    wake_in = None if result.wait is None else await _wake_in(tx, result.wait, result.at)
    position, at = queue_position(tx, seq) if joins_queue else ("queued_at", ())
    await tx.execute(
        "UPDATE runs SET status = ?, body = ?, recoveries = ?, "
        f"queued_at = {position}, "
        "owner = CASE WHEN ? THEN NULL ELSE owner END, "
        "lease_expires_at = CASE WHEN ? THEN NULL ELSE lease_expires_at END, "
        f"epoch = epoch + ?, wake_at = {tx.dialect.now} + ? WHERE id = ?",
        (
            run.status.value,
            run.model_dump_json(),
            run.recoveries,
            *at,
            release,
            release,
            int(release),
            wake_in,
            run.id,
        ),
    )
    if run.parent_run_id is not None and run.status in TERMINAL:
        # The parent waiting on it wakes (in this transaction: no wake-up is lost).
        await tx.execute(
            "UPDATE runs SET wake_at = CASE WHEN wake_at IS NOT NULL THEN 0 ELSE wake_at END "
            "WHERE id = ?",
            (run.parent_run_id,),
        )
    if result.reset:
        await tx.execute("DELETE FROM checkpoints WHERE thread_id = ?", (run.id,))
        await tx.execute("DELETE FROM writes WHERE thread_id = ?", (run.id,))
        await tx.execute("DELETE FROM node_states WHERE run_id = ?", (run.id,))
    if result.cancel_nodes:
        await cancel_running_nodes(tx, run, result.at)
    if result.keep_checkpoints > 0:
        await prune_checkpoints(tx, run.id, result.keep_checkpoints)
    if result.answer is not None:
        answer = result.answer
        await tx.execute(
            "INSERT INTO run_resumes (run_id, checkpoint_id, interrupt_id, value) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (run_id) DO UPDATE SET "
            "checkpoint_id = excluded.checkpoint_id, interrupt_id = excluded.interrupt_id, "
            "value = excluded.value",
            (run.id, answer.checkpoint_id, answer.interrupt_id, encode_answer(answer.value)),
        )
    elif result.drop_answer:
        await tx.execute("DELETE FROM run_resumes WHERE run_id = ?", (run.id,))
    await _pass_on_slot(tx, current, run, result.at, member)
    return run


# The wake-up time of a run that waits only for a child: never by the clock (its child's end
# sets it to 0, due at once).
NEVER = 1e18


async def _wake_in(tx: Tx, wait: Wait, now: datetime) -> float:
    """In how many seconds a parked run is due, from the store's clock (`now` is the daemon's:
    a timer's `until` is read against it, so a skew between the two clocks moves no wake-up):
    at once when a child it waits for has already ended (read here, in the transaction that
    parks it), else at its timer, else when a child's end wakes it."""
    if wait.children:
        marks = ", ".join("?" * len(wait.children))
        ended = await tx.fetchone(
            f"SELECT COUNT(*) FROM runs WHERE id IN ({marks}) "
            "AND status IN ('completed', 'failed', 'cancelled')",
            wait.children,
        )
        if ended[0]:
            return 0.0
    return (wait.until - now).total_seconds() if wait.until is not None else NEVER


async def _pass_on_slot(
    tx: Tx, current: Run, run: Run, at: datetime, member: Membership | None
) -> None:
    """Per-graph concurrency: a run that leaves `running`, or leaves the queue without being
    held, frees a place in its group, which goes to the group's oldest held run; that run is
    announced (`workflow.run.updated`, still pending), so that every daemon looks for it."""
    if run.status is RunStatus.PENDING and current.status is not RunStatus.PENDING:
        await groups.requeue(tx, run.id)
        return
    left_running = current.status is RunStatus.RUNNING and run.status is not RunStatus.RUNNING
    left_queue = current.status is RunStatus.PENDING and run.status not in _QUEUED
    if not (left_running or left_queue):
        return
    member = member or await groups.membership(tx, run.id)
    if member.key is None or (left_queue and member.held):
        return
    row = await groups.let_next_in(tx, member.key)
    if row is not None:
        await tx.emit(run_event(run_from(row), EventType.RUN_UPDATED, at))


def encode_answer(value: Any) -> str:
    return json.dumps(value)


async def cancel_running_nodes(tx: Tx, run: Run, now: datetime) -> None:
    """The nodes the store says are running are cancelled with the run (also one whose
    completion was waiting for its task's writes: those will not come)."""
    rows = await tx.fetchall(
        "SELECT body FROM node_states WHERE run_id = ? ORDER BY node_id", (run.id,)
    )
    states = [NodeState.model_validate_json(body) for (body,) in rows]
    cancelled = [
        s.model_copy(update={"status": NodeStatus.CANCELLED, "completed_at": now})
        for s in states
        if s.status is NodeStatus.RUNNING
    ]
    if cancelled:
        await save_node_states(tx, run.id, run.project_id, cancelled, now)


async def save_node_states(
    tx: Tx, run_id: str, project_id: str, states: Sequence[NodeState], now: datetime
) -> None:
    await tx.executemany(
        "INSERT INTO node_states (run_id, node_id, body) VALUES (?, ?, ?) "
        "ON CONFLICT (run_id, node_id) DO UPDATE SET body = excluded.body",
        [(run_id, s.node_id, s.model_dump_json()) for s in states],
    )
    for state in states:
        await tx.emit(
            Event(
                type=EventType.NODE_STATE_UPDATED,
                project_id=project_id,
                run_id=run_id,
                timestamp=now,
                nodeState=state,
            )
        )


async def prune_checkpoints(tx: Tx, thread_id: str, keep: int) -> None:
    """Keep the newest `keep` checkpoints of a thread (ids sort by time) and their writes."""
    kept = (
        "SELECT checkpoint_id FROM checkpoints WHERE thread_id = ? "
        "ORDER BY checkpoint_id DESC LIMIT ?"
    )
    await tx.execute(
        f"DELETE FROM checkpoints WHERE thread_id = ? AND checkpoint_id NOT IN ({kept})",
        (thread_id, thread_id, keep),
    )
    await tx.execute(
        f"DELETE FROM writes WHERE thread_id = ? AND checkpoint_id NOT IN ({kept})",
        (thread_id, thread_id, keep),
    )


async def claim_runs(tx: Tx, owner: str, limit: int, lease_s: float, start: Change) -> list[Claim]:
    # The index hints: without statistics SQLite's planner would take runs_by_status and sort,
    # a cost that grows with the backlog, inside the write lock every process waits for.
    hint = tx.dialect.indexed_by
    unowned = await tx.fetchall(
        f"SELECT id, {RUN_COLUMNS}, concurrency_key, concurrency_limit, queued_at FROM runs "
        f"{hint('runs_unowned')} WHERE status = 'running' AND owner IS NULL AND wake_at IS NULL "
        f"ORDER BY queued_at LIMIT ?{tx.dialect.take}",
        (limit,),
    )
    rows: list[Sequence[Any]] = []
    for row in unowned:
        # One resumed before it ever started (paused while pending) counts in its group from
        # the resume on, but starts only within the group's limit.
        never_claimed = int(row[3]) == 0  # the epoch moves on at every claim and release
        if never_claimed and row[4] is not None and await groups.full(tx, row[4], row[5], row[6]):
            continue
        rows.append(row[:4])
    if len(rows) < limit:  # parked runs whose wait is over, the earliest first
        rows += await tx.fetchall(
            f"SELECT id, {RUN_COLUMNS} FROM runs {hint('runs_waking')} "
            f"WHERE wake_at IS NOT NULL AND wake_at <= {tx.dialect.now} "
            f"AND status = 'running' AND owner IS NULL ORDER BY wake_at LIMIT ?{tx.dialect.take}",
            (limit - len(rows),),
        )
    if len(rows) < limit:  # pending ones, within their groups' limits
        rows += await groups.claimable(tx, limit - len(rows))
    taken = []
    for run_id, *columns in rows:
        current = run_from(columns)
        epoch = int(columns[2]) + 1
        fresh = current.started_at is None  # never ran: no checkpoint or node state to read
        if current.status is RunStatus.PENDING or current.waiting_for is not None:
            # Pending: it starts; parked: it wakes (its wait is over, or due again).
            result = start(current.model_copy(update={"owner": owner}))
            run = await apply_change(tx, current, result)
        else:
            run = current.model_copy(update={"owner": owner})
        await tx.execute(
            f"UPDATE runs SET owner = ?, epoch = ?, lease_expires_at = {tx.dialect.now} + ? "
            "WHERE id = ?",
            (owner, epoch, lease_s, run_id),
        )
        taken.append((run, Lease(run_id, owner, epoch), fresh))
    seq = await tx.last_seq()
    return [Claim(run, lease, fresh, seq) for run, lease, fresh in taken]


async def renew_leases(tx: Tx, owner: str, lease_s: float) -> dict[str, int]:
    if tx.dialect.take:
        # A run whose row another transaction holds (a cancel under way, or one of a daemon
        # stopped in the middle of it) is not renewed this time, and not waited for: the
        # renewal of every other run must not wait on it. It is still this owner's.
        await tx.execute(
            f"UPDATE runs SET lease_expires_at = {tx.dialect.now} + ? WHERE id IN "
            f"(SELECT id FROM runs WHERE owner = ?{tx.dialect.take})",
            (lease_s, owner),
        )
        held = await tx.fetchall("SELECT id, epoch FROM runs WHERE owner = ?", (owner,))
        return {run_id: int(epoch) for run_id, epoch in held}
    rows = await tx.fetchall(
        f"UPDATE runs {tx.dialect.indexed_by('runs_owned')} "
        f"SET lease_expires_at = {tx.dialect.now} + ? WHERE owner = ? RETURNING id, epoch",
        (lease_s, owner),
    )
    return {run_id: int(epoch) for run_id, epoch in rows}


async def recover_runs(
    tx: Tx, dead: Sequence[str], max_recoveries: int, recover: Change, give_up: Change
) -> list[Run]:
    marks = ", ".join("?" * len(dead))
    dead_clause = f" OR owner IN ({marks})" if dead else ""
    rows = await tx.fetchall(
        f"SELECT id, {RUN_COLUMNS}, recoveries FROM runs {tx.dialect.indexed_by('runs_owned')} "
        f"WHERE owner IS NOT NULL AND (lease_expires_at < {tx.dialect.now}{dead_clause})"
        # A run whose owner's write is under way is passed over (that owner is not dead: a
        # dead one's transactions ended with its session), and taken at a later recovery.
        f"{tx.dialect.take}",
        tuple(dead),
    )
    changed = []
    for run_id, *columns in rows:
        current = run_from(columns).model_copy(update={"recoveries": int(columns[3])})
        if current.status is RunStatus.RUNNING:
            later = current.model_copy(update={"recoveries": current.recoveries + 1})
            result = (give_up if later.recoveries > max_recoveries else recover)(later)
            changed.append(await apply_change(tx, current, _released(result)))
        else:  # paused while its owner drained it, or finished: only the owner goes
            await _let_go(tx, run_id)
    if dead:  # what else the dead held: their duties, their entries as instances
        await tx.execute(
            f"UPDATE singletons SET owner = NULL, lease_expires_at = NULL WHERE owner IN ({marks})",
            tuple(dead),
        )
        await tx.execute(f"DELETE FROM instances WHERE id IN ({marks})", tuple(dead))
    return changed


def _released(result: RunChange) -> RunChange:
    return replace(result, release=True)


async def _let_go(tx: Tx, run_id: str) -> None:
    await tx.execute(
        "UPDATE runs SET owner = NULL, lease_expires_at = NULL, epoch = epoch + 1 WHERE id = ?",
        (run_id,),
    )


async def release_run(tx: Tx, lease: Lease, now: datetime) -> None:
    """The execution under `lease` ends without finishing the run (if the lease still holds):
    a run left `running` is announced, so that a daemon with a free slot claims it at once."""
    row = await tx.fetchone(
        f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?{tx.dialect.lock}", (lease.run_id,)
    )
    if row is None or (row[1], row[2]) != (lease.owner, lease.epoch):
        return
    await _release(tx, run_from(row), now)


async def release_runs(
    tx: Tx, owner: str, now: datetime, leases: Sequence[Lease] | None = None
) -> None:
    if leases is not None:
        for lease in leases:
            if lease.owner == owner:
                await release_run(tx, lease, now)
        return
    rows = await tx.fetchall(
        f"SELECT {RUN_COLUMNS} FROM runs {tx.dialect.indexed_by('runs_owned')} WHERE owner = ?"
        f"{tx.dialect.lock}",
        (owner,),
    )
    for row in rows:
        await _release(tx, run_from(row), now)


async def _release(tx: Tx, run: Run, now: datetime) -> None:
    if run.status is RunStatus.RUNNING:
        await apply_change(tx, run, RunChange(run, EventType.RUN_UPDATED, now, release=True))
    else:
        await _let_go(tx, run.id)


async def release_owner(tx: Tx, owner: str, now: datetime) -> None:
    await release_runs(tx, owner, now)
    await tx.execute("DELETE FROM instances WHERE id = ?", (owner,))
    await tx.execute(
        "UPDATE singletons SET owner = NULL, lease_expires_at = NULL WHERE owner = ?", (owner,)
    )


async def hold_singleton(
    tx: Tx, name: str, owner: str, lease_s: float, dead: Sequence[str]
) -> bool:
    d = tx.dialect
    marks = ", ".join("?" * len(dead))
    dead_clause = f" OR singletons.owner IN ({marks})" if dead else ""
    moved = d.differs("singletons.owner", "excluded.owner")
    row = await tx.fetchone(
        "INSERT INTO singletons (name, owner, epoch, lease_expires_at) "
        f"VALUES (?, ?, 1, {d.now} + ?) "
        "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, "
        f"epoch = singletons.epoch + CASE WHEN {moved} THEN 1 ELSE 0 END, "
        "lease_expires_at = excluded.lease_expires_at "
        f"WHERE {d.same('singletons.owner', 'excluded.owner')} OR singletons.owner IS NULL "
        f"OR singletons.lease_expires_at < {d.now}{dead_clause} RETURNING owner",
        (name, owner, lease_s, *dead),
    )
    return row is not None and row[0] == owner
