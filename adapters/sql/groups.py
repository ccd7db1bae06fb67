"""Per-graph concurrency in the store (DESIGN §11): the SQL of a run's group.

A run's group (`runs.concurrency_key`, with the limit of the graph version it pins) is fixed
when it is created. A group counts its `running` runs. A pending run its group has no room for
is *held* (`concurrency_held`): claims read the queue without the held runs (`runs_claimable`),
so a backlog that waits costs them nothing, and other graphs' runs are never stuck behind it.
A held run is let go, oldest of its group first, when a run of the group leaves `running` or
a waiting (not held) one leaves the queue: one slot, one run let go. Everything is decided in
the store's write transaction, and a decision on a group's count holds the groups' lock
(`Tx.lock`; on SQLite the transactions never overlap anyway) from its count to the end of the
transaction, so the counts are exact with several daemons deciding at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from adapters.sql.tx import Tx
from core.concurrency import Group, group_of
from core.domain import Concurrency, Run

# The largest limit a graph may set: a count stops there, which is all a decision needs.
_MAX_COUNT = 10_000


@dataclass(frozen=True, slots=True)
class Membership:
    """A stored run's group (None: it has none) and whether it is held."""

    key: str | None
    held: bool


class VersionLimits:
    """The `concurrency` of graph versions, each read from the store once: a version is never
    rewritten (nor its number given again), so what was read stays true for every daemon. (A
    run is made of a version its creator read committed.) It saves a creation's transaction a
    read, a round trip on PostgreSQL."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._known: dict[tuple[str, str, int], Concurrency | None] = {}

    async def of(self, tx: Tx, run: Run) -> Concurrency | None:
        version = (run.project_id, run.workflow_id, run.graph_version)
        if version in self._known:
            return self._known[version]
        row = await tx.fetchone(
            "SELECT concurrency FROM graph_versions "
            "WHERE project_id = ? AND graph_id = ? AND version = ?",
            version,
        )
        if row is None:  # no such version (yet): nothing to remember
            return None
        found = None if row[0] is None else Concurrency.model_validate_json(row[0])
        if len(self._known) >= self._size:
            self._known.pop(next(iter(self._known)))
        self._known[version] = found
        return found


async def group_of_new_run(tx: Tx, run: Run, versions: VersionLimits | None = None) -> Group | None:
    """The group of a run about to be stored, from the graph version it pins."""
    concurrency = await (versions or VersionLimits()).of(tx, run)
    return group_of(run.project_id, run.workflow_id, concurrency, run.input)


async def _lock(tx: Tx) -> None:
    """One lock for the decisions of every group, not one per group: a batch decides on
    several groups in whatever order its operations come, and per-group locks taken in two
    orders by two daemons' batches would deadlock (found in review). What it serialises is
    only the transactions that decide on a group."""
    await tx.lock("groups")


async def has_room(tx: Tx, group: Group) -> bool:
    """Whether a new run of `group` may wait unheld: fewer than its limit run or wait so."""
    await _lock(tx)
    hint = tx.dialect.indexed_by
    (taken,) = await tx.fetchone(
        "SELECT (SELECT COUNT(*) FROM (SELECT 1 FROM runs "
        f"{hint('runs_group_running')} WHERE concurrency_key = ? AND status = 'running' "
        "LIMIT ?) AS r) + (SELECT COUNT(*) FROM (SELECT 1 FROM runs "
        f"{hint('runs_group_pending')} WHERE concurrency_key = ? AND status = 'pending' "
        "AND concurrency_held = 0 LIMIT ?) AS w)",
        (group.key, group.limit, group.key, group.limit),
    )
    return int(taken) < group.limit


async def claimable(tx: Tx, limit: int) -> list[Sequence[Any]]:
    """Up to `limit` pending runs to claim, first in, first out: (id, body, owner, epoch).
    A run whose group is full (its running runs, and those taken earlier in this batch,
    reach its limit) is held on the way and read no more; held runs are not read at all."""
    hint = tx.dialect.indexed_by
    taken: list[Sequence[Any]] = []
    running: dict[str, int] = {}
    mine: dict[str, list[str]] = {}  # the runs of each group taken here
    # Groups left to another claim, which holds an older run of theirs: not read further.
    left: list[str] = []
    after = -1
    while len(taken) < limit:
        asked = limit - len(taken)
        marks = ", ".join("?" * len(left))
        others = (
            f"AND (concurrency_key IS NULL OR concurrency_key NOT IN ({marks})) " if left else ""
        )
        rows = await tx.fetchall(
            "SELECT id, body, owner, epoch, queued_at, concurrency_key, concurrency_limit "
            f"FROM runs {hint('runs_claimable')} WHERE status = 'pending' "
            f"AND concurrency_held = 0 AND queued_at > ? {others}ORDER BY queued_at LIMIT ?"
            f"{tx.dialect.take}",
            (after, *left, asked),
        )
        for row in rows:
            key, cap = row[5], row[6]
            if key is not None:
                if key in left:
                    continue
                if key not in running:
                    await _lock(tx)
                    running[key] = await _count_running(tx, key)
                if running[key] >= cap:
                    await tx.execute("UPDATE runs SET concurrency_held = 1 WHERE id = ?", (row[0],))
                    continue
                if tx.dialect.take and await _behind(tx, key, row[4], mine.get(key, [])):
                    left.append(key)
                    continue
                running[key] += 1
                mine.setdefault(key, []).append(row[0])
            taken.append(row[:4])
        if len(rows) < asked:
            break
        after = rows[-1][4]
    return taken


async def _behind(tx: Tx, key: str, queued_at: int, mine: list[str]) -> bool:
    """Whether an older waiting run of the group is held by another transaction (where
    transactions overlap: a claim passes over the runs another claim holds). That claim
    decides on it first, once this one lets the group's lock go: first in, first out within
    the group, whichever claim takes the group's lock first."""
    marks = "".join(", ?" * len(mine))
    row = await tx.fetchone(
        f"SELECT 1 FROM runs {tx.dialect.indexed_by('runs_group_pending')} "
        "WHERE concurrency_key = ? AND status = 'pending' AND concurrency_held = 0 "
        f"AND queued_at < ? AND id NOT IN (''{marks}) LIMIT 1",
        (key, queued_at, *mine),
    )
    return row is not None


async def full(tx: Tx, key: str, limit: int, queued_at: int) -> bool:
    """Whether a `running` run that never started (resumed while pending) must wait: as many
    of its group's `running` runs as its limit are ahead of it, those that started and those
    that never did but joined the queue before it. (Counting every running run, itself and
    a later one included, kept two such runs of a group of one both waiting for good.)"""
    await _lock(tx)
    (count,) = await tx.fetchone(
        "SELECT COUNT(*) FROM (SELECT 1 FROM runs "
        f"{tx.dialect.indexed_by('runs_group_running')} "
        "WHERE concurrency_key = ? AND status = 'running' AND (epoch > 0 OR queued_at < ?) "
        "LIMIT ?) AS r",
        (key, queued_at, _MAX_COUNT),
    )
    return int(count) >= limit


async def _count_running(tx: Tx, key: str) -> int:
    (count,) = await tx.fetchone(
        "SELECT COUNT(*) FROM (SELECT 1 FROM runs "
        f"{tx.dialect.indexed_by('runs_group_running')} "
        "WHERE concurrency_key = ? AND status = 'running' LIMIT ?) AS r",
        (key, _MAX_COUNT),
    )
    return int(count)


async def membership(tx: Tx, run_id: str) -> Membership:
    row = await tx.fetchone(
        "SELECT concurrency_key, concurrency_held FROM runs WHERE id = ?", (run_id,)
    )
    return Membership(None, False) if row is None else Membership(row[0], bool(row[1]))


async def let_next_in(tx: Tx, key: str) -> Sequence[Any] | None:
    """A slot of the group freed: its oldest held run is let go, (body, owner, epoch), if any.
    A held run another transaction has locked is waited for, not passed over: a claim that
    read it and found it held keeps its lock to its commit, and passing over it would lose the
    slot (found in review)."""
    await _lock(tx)
    row = await tx.fetchone(
        "SELECT id, body, owner, epoch FROM runs "
        f"{tx.dialect.indexed_by('runs_group_pending')} WHERE concurrency_key = ? "
        f"AND status = 'pending' AND concurrency_held = 1 ORDER BY queued_at LIMIT 1"
        f"{tx.dialect.lock}",
        (key,),
    )
    if row is None:
        return None
    await tx.execute("UPDATE runs SET concurrency_held = 0 WHERE id = ?", (row[0],))
    let_go: Sequence[Any] = row[1:]
    return let_go


async def requeue(tx: Tx, run_id: str) -> None:
    """A run back in the queue (executed again) is judged afresh by the next claim."""
    await tx.execute("UPDATE runs SET concurrency_held = 0 WHERE id = ?", (run_id,))
