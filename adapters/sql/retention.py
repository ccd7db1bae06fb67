"""Retention of finished runs and of checkpoints nothing will resume from, once per database
(a duty: run by whichever daemon holds the store's `duties`, like event pruning), on both
databases.

A pass walks the runs in creation order (`runs.seq`), a few hundred per transaction, each
deciding on the rows as they stand inside its write (a run executed again meanwhile is not a
finished one any more):

- **Checkpoints nothing resumes from.** A cancelled run is never resumed from its checkpoints
  (`execute` starts it afresh and drops them): they all go. A failed run is resumed from its
  newest checkpoint only (`execute` continues from the failure point, with the writes its
  successful siblings left on that checkpoint): it keeps the newest
  `[storage] checkpoint_retention`, as a completed run does at its completion.
- **Finished runs** (`[storage] finished_run_retention_days` > 0): a completed, failed or
  cancelled run that finished longer ago than that is deleted with its node states,
  checkpoints, their writes and any kept answer. The walk stops at the first run created after
  the cutoff (no later run can have finished before it). Its events stay until
  `[events] retention_days` prunes them (a prefix of the log: never holes).
- **Idempotency-Keys** past their time to live (`[runs] idempotency_ttl_s`): deleted (an
  expired one already counts as absent; this keeps the table to the live ones).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

import structlog

from adapters.sql.tx import Tx, Writes
from core.background import Background
from core.pages import micros

log = structlog.get_logger("cortexd.housekeeping")
BATCH = 200
FINISHED = ("completed", "failed", "cancelled")


@dataclass
class Pass:
    checkpoints_pruned: int = 0  # runs whose checkpoints were pruned
    runs_deleted: int = 0
    keys_expired: int = 0  # Idempotency-Keys past their time to live, deleted


async def delete_expired_keys(tx: Tx, now_us: int) -> int:
    """A batch of the Idempotency-Keys that expired by `now_us` (an expired key already
    counts as absent: this only keeps the table to the keys alive)."""
    # The expiry again on the row deleted: the subquery reads the keys as they were when the
    # statement began, and a key another daemon took again meanwhile (its run made, its
    # expiry moved on) must stay.
    return await _count(
        tx,
        "DELETE FROM idempotency_keys WHERE (project_id, idem_key) IN (SELECT project_id, "
        "idem_key FROM idempotency_keys WHERE expires_us <= ? LIMIT ?) AND expires_us <= ? "
        "RETURNING 1",
        (now_us, BATCH, now_us),
    )


async def prune_resumable_checkpoints(tx: Tx, after: int, keep: int) -> tuple[int, int]:
    """Of the failed and cancelled runs after `after` (a seq), a batch: cancelled ones lose
    every checkpoint, failed ones keep the newest `keep` (0: all). Returns (the last seq
    looked at, 0 when none was; how many runs lost checkpoints)."""
    # Locked as read: a run executed again meanwhile is not failed or cancelled any more, and
    # one executed again after waits for this (its new checkpoints are never pruned).
    rows = await tx.fetchall(
        "SELECT seq, id, status FROM runs WHERE status IN ('failed', 'cancelled') AND seq > ? "
        f"ORDER BY seq LIMIT ?{tx.dialect.lock}",
        (after, BATCH),
    )
    pruned = 0
    for _, run_id, status in rows:
        if status == "cancelled":
            gone = await _count(
                tx, "DELETE FROM checkpoints WHERE thread_id = ? RETURNING 1", (run_id,)
            )
            await tx.execute("DELETE FROM writes WHERE thread_id = ?", (run_id,))
        elif keep > 0:
            kept = (
                "SELECT checkpoint_id FROM checkpoints WHERE thread_id = ? "
                "ORDER BY checkpoint_id DESC LIMIT ?"
            )
            gone = await _count(
                tx,
                f"DELETE FROM checkpoints WHERE thread_id = ? AND checkpoint_id NOT IN ({kept}) "
                "RETURNING 1",
                (run_id, run_id, keep),
            )
            await tx.execute(
                f"DELETE FROM writes WHERE thread_id = ? AND checkpoint_id NOT IN ({kept})",
                (run_id, run_id, keep),
            )
        else:
            gone = 0
        pruned += gone > 0
    return (int(rows[-1][0]) if rows else 0), pruned


async def delete_finished_runs(tx: Tx, after: int, cutoff: datetime) -> tuple[int, int]:
    """Of the runs after `after` (a seq), a batch: those finished before `cutoff` are deleted
    with everything kept for them. Returns (the last seq looked at, 0 when the walk is done;
    how many runs were deleted)."""
    rows = await tx.fetchall(
        "SELECT seq, id, status, body FROM runs WHERE seq > ? ORDER BY seq LIMIT ?",
        (after, BATCH),
    )
    doomed: list[str] = []
    last = 0
    for seq, run_id, status, body in rows:
        run = json.loads(body)
        if _at(run.get("created_at")) >= cutoff:
            # None created later can have finished before.
            return 0, await _delete(tx, doomed, cutoff)
        last = int(seq)
        finished = _at(run.get("finished_at"))
        if status in FINISHED and finished < cutoff:
            doomed.append(run_id)
    return last, await _delete(tx, doomed, cutoff)


async def _delete(tx: Tx, run_ids: Sequence[str], cutoff: datetime) -> int:
    if not run_ids:
        return 0
    # Decided on the rows as they stand, locked: a run executed again since it was read (and
    # maybe finished again since) is kept with everything it has, and one executed again
    # after waits for this.
    placeholders = ",".join("?" * len(FINISHED))
    marks = ",".join("?" * len(run_ids))
    run_ids = [
        row[0]
        for row in await tx.fetchall(
            f"SELECT id, body FROM runs WHERE id IN ({marks}) AND status IN ({placeholders})"
            f"{tx.dialect.lock}",
            (*run_ids, *FINISHED),
        )
        if _at(json.loads(row[1]).get("finished_at")) < cutoff
    ]
    if not run_ids:
        return 0
    marks = ",".join("?" * len(run_ids))
    for sql in (
        f"DELETE FROM checkpoints WHERE thread_id IN ({marks})",
        f"DELETE FROM writes WHERE thread_id IN ({marks})",
        f"DELETE FROM node_states WHERE run_id IN ({marks})",
        f"DELETE FROM run_resumes WHERE run_id IN ({marks})",
    ):
        await tx.execute(sql, tuple(run_ids))
    return await _count(
        tx,
        f"DELETE FROM runs WHERE id IN ({marks}) AND status IN ({placeholders}) RETURNING 1",
        (*run_ids, *FINISHED),
    )


async def _count(tx: Tx, sql: str, params: Sequence[object]) -> int:
    """How many rows a `... RETURNING` statement changed (`Tx.execute` returns nothing)."""
    return len(await tx.fetchall(sql, params))


_NEVER = datetime.max.replace(tzinfo=UTC)


def _at(value: object) -> datetime:
    """A stored timestamp (ISO 8601, `Z` or an offset); a missing one sorts last."""
    if not isinstance(value, str):
        return _NEVER
    stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


class Retention:
    """The duty: a pass at start and then every `interval_s` (at most an hour; a tenth of the
    retention when that is shorter, so the store stays within about 110 % of it)."""

    def __init__(
        self, writer: Writes, finished_run_retention_days: float, keep_checkpoints: int
    ) -> None:
        self._writer = writer
        self._retention = (
            timedelta(days=finished_run_retention_days) if finished_run_retention_days else None
        )
        self._keep = keep_checkpoints
        span = self._retention.total_seconds() / 10 if self._retention else 3600.0
        self.interval_s = max(1.0, min(3600.0, span))
        self._background = Background("retention")

    async def start(self) -> None:
        self._background.start(self._run())

    async def stop(self) -> None:
        await self._background.stop()

    async def pass_once(self, now: datetime | None = None) -> Pass:
        done = Pass()
        seq = 0
        while True:
            seq, pruned = await self._writer.write(
                partial(prune_resumable_checkpoints, after=seq, keep=self._keep)
            )
            done.checkpoints_pruned += pruned
            if seq == 0:
                break
        moment = now or datetime.now(UTC)
        while True:
            expired = await self._writer.write(
                partial(delete_expired_keys, now_us=micros(moment)), small=True
            )
            done.keys_expired += expired
            if expired < BATCH:
                break
        if self._retention is not None:
            cutoff = moment - self._retention
            seq = 0
            while True:
                seq, deleted = await self._writer.write(
                    partial(delete_finished_runs, after=seq, cutoff=cutoff)
                )
                done.runs_deleted += deleted
                if seq == 0:
                    break
        if done.checkpoints_pruned or done.runs_deleted or done.keys_expired:
            log.info(
                "retention_pass",
                runs_deleted=done.runs_deleted,
                runs_checkpoints_pruned=done.checkpoints_pruned,
                idempotency_keys_expired=done.keys_expired,
            )
        return done

    async def _run(self) -> None:
        while True:
            try:
                await self.pass_once()
            except Exception:  # the store failed: tried again at the next interval
                log.exception("retention_pass_failed")
            await asyncio.sleep(self.interval_s)
