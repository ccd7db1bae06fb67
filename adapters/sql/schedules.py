"""Schedules in the store, on both databases (DESIGN §10).

A firing is one write transaction: the schedule and its graph are read as stored, the core's
`plan` decides, and each run it asks for is inserted only if its (schedule, scheduled time)
key is new in `schedule_firings`, with the schedule's new times in the same transaction.
Whichever daemon or pass applies a plan, a scheduled time gets at most one run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from adapters.sql.runs import insert_run
from adapters.sql.tx import Reads, Tx, Writes
from core.domain import Graph, Run
from core.errors import Conflict, NotFound
from core.schedules import Firing, Schedule

COLUMNS = "body, next_run_at, last_run_at"
Plan = Callable[[Schedule, Graph | None], Firing]


def _epoch(t: datetime | None) -> float | None:
    return None if t is None else t.timestamp()


def _time(value: Any) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(float(value), UTC)


def schedule_from(row: Sequence[Any]) -> Schedule:
    schedule = Schedule.model_validate_json(row[0])
    return schedule.model_copy(update={"next_run_at": _time(row[1]), "last_run_at": _time(row[2])})


def _body(schedule: Schedule) -> str:
    return schedule.model_dump_json(exclude={"next_run_at", "last_run_at"})


class SqlSchedules:
    """The `ScheduleStore` port on the store's writer and reads."""

    def __init__(self, writer: Writes, reads: Reads) -> None:
        self._writer = writer
        self._reads = reads

    async def list_schedules(self, project_id: str) -> list[Schedule]:
        rows = await self._reads.all(
            f"SELECT {COLUMNS} FROM schedules WHERE project_id = ? ORDER BY id", (project_id,)
        )
        return [schedule_from(row) for row in rows]

    async def get_schedule(self, project_id: str, schedule_id: str) -> Schedule | None:
        rows = await self._reads.all(
            f"SELECT {COLUMNS} FROM schedules WHERE project_id = ? AND id = ?",
            (project_id, schedule_id),
        )
        return schedule_from(rows[0]) if rows else None

    async def put_schedule(self, schedule: Schedule, *, create: bool) -> Schedule:
        """Create (Conflict if it exists) or replace (NotFound if it does not): a replace keeps
        the stored `last_run_at` and `created_at`."""

        async def op(tx: Tx) -> Schedule:
            # One change of a schedule at a time, also while it does not exist yet.
            await tx.lock("schedule", schedule.project_id, schedule.id)
            row = await tx.fetchone(
                f"SELECT {COLUMNS} FROM schedules WHERE project_id = ? AND id = ?",
                (schedule.project_id, schedule.id),
            )
            if create and row:
                raise Conflict(f"schedule {schedule.id!r} already exists; PUT replaces it")
            if not create and not row:
                raise NotFound("schedule", schedule.id)
            stored = schedule
            if row:
                old = schedule_from(row)
                stored = schedule.model_copy(
                    update={"created_at": old.created_at, "last_run_at": old.last_run_at}
                )
            await tx.execute(
                "INSERT INTO schedules (project_id, id, workflow_id, body, next_run_at, "
                "last_run_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (project_id, id) DO UPDATE "
                "SET workflow_id = excluded.workflow_id, body = excluded.body, "
                "next_run_at = excluded.next_run_at",
                (
                    stored.project_id,
                    stored.id,
                    stored.workflow_id,
                    _body(stored),
                    _epoch(stored.next_run_at),
                    _epoch(stored.last_run_at),
                ),
            )
            return stored

        return await self._writer.write(op, small=True)

    async def delete_schedule(self, project_id: str, schedule_id: str) -> None:
        async def op(tx: Tx) -> None:
            await tx.lock("schedule", project_id, schedule_id)  # not while it fires
            gone = await tx.fetchall(
                "DELETE FROM schedules WHERE project_id = ? AND id = ? RETURNING id",
                (project_id, schedule_id),
            )
            if not gone:
                raise NotFound("schedule", schedule_id)
            await tx.execute(
                "DELETE FROM schedule_firings WHERE project_id = ? AND schedule_id = ?",
                (project_id, schedule_id),
            )

        await self._writer.write(op, small=True)

    async def due_schedules(self, now: datetime, limit: int = 100) -> list[tuple[str, str]]:
        """(project, id) of the schedules whose next time is at or before `now`."""
        rows = await self._reads.all(
            "SELECT project_id, id FROM schedules WHERE next_run_at IS NOT NULL "
            "AND next_run_at <= ? ORDER BY next_run_at LIMIT ?",
            (now.timestamp(), limit),
        )
        return [(row[0], row[1]) for row in rows]

    async def fire_schedule(self, project_id: str, schedule_id: str, plan: Plan) -> list[Run]:
        """Apply `plan` to the schedule as stored; the runs created (none for a time that
        already has one). NotFound if the schedule is gone."""

        async def op(tx: Tx) -> list[Run]:
            await tx.lock("schedule", project_id, schedule_id)
            row = await tx.fetchone(
                f"SELECT {COLUMNS} FROM schedules WHERE project_id = ? AND id = ?",
                (project_id, schedule_id),
            )
            if row is None:
                raise NotFound("schedule", schedule_id)
            schedule = schedule_from(row)
            graph_row = await tx.fetchone(
                f"SELECT body FROM graphs WHERE project_id = ? AND id = ?{tx.dialect.keep}",
                (project_id, schedule.workflow_id),
            )
            graph = Graph.model_validate_json(graph_row[0]) if graph_row else None
            firing = plan(schedule, graph)
            created = []
            for run in firing.runs:
                taken = await tx.fetchone(
                    "INSERT INTO schedule_firings (project_id, schedule_id, scheduled_for, "
                    "run_id) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING run_id",
                    (project_id, schedule_id, str(run.trigger["scheduled_for"]), run.id),
                )
                if taken is not None:
                    await insert_run(tx, run)
                    created.append(run)
            moved = firing.schedule
            await tx.execute(
                "UPDATE schedules SET body = ?, next_run_at = ?, last_run_at = ? "
                "WHERE project_id = ? AND id = ?",
                (
                    _body(moved),
                    _epoch(moved.next_run_at),
                    _epoch(moved.last_run_at),
                    project_id,
                    schedule_id,
                ),
            )
            return created

        return await self._writer.write(op, small=True)
