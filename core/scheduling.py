"""Schedules as use cases (create, replace, delete: `ScheduleService`) and their firing
(`ScheduleFirer`, a duty: run by the daemon holding the store's duties, DESIGN §8).

The duty only keeps daemons from doing the same work twice; that a scheduled time has one run
per database comes from the store's unique key (see `core.schedules`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any

import structlog

from core.background import Background
from core.domain import Graph, Run
from core.errors import LimitExceeded, NotFound, Problem, ValidationFailed
from core.ports import Clock, ScheduleStore, Store
from core.schedules import Firing, Schedule, ScheduleSpec, ScheduleState, next_time, plan
from core.validation import parse_body

log = structlog.get_logger("cortexd.schedules")
TICK_S = 1.0


class ScheduleService:
    def __init__(
        self,
        store: Store,
        schedules: ScheduleStore,
        clock: Clock,
        new_id: Callable[[], str],
        max_input_bytes: int = 262_144,
    ) -> None:
        self._max_input_bytes = max_input_bytes
        self._store = store
        self._schedules = schedules
        self._clock = clock
        self._new_id = new_id

    @property
    def store(self) -> ScheduleStore:
        return self._schedules

    async def list(self, project_id: str) -> list[Schedule]:
        return await self._schedules.list_schedules(project_id)

    async def get(self, project_id: str, schedule_id: str) -> Schedule:
        schedule = await self._schedules.get_schedule(project_id, schedule_id)
        if schedule is None:
            raise NotFound("schedule", schedule_id)
        return schedule

    async def create(self, project_id: str, data: Any) -> Schedule:
        spec = await self._valid(project_id, data)
        schedule = self._schedule(project_id, spec.id or self._new_id(), spec)
        return await self._schedules.put_schedule(schedule, create=True)

    async def replace(self, project_id: str, schedule_id: str, data: Any) -> Schedule:
        spec = await self._valid(project_id, data)
        if spec.id is not None and spec.id != schedule_id:
            problem = Problem("/id", f"{spec.id!r} does not match the schedule in the URL")
            raise ValidationFailed("schedule id mismatch", [problem])
        schedule = self._schedule(project_id, schedule_id, spec)
        return await self._schedules.put_schedule(schedule, create=False)

    async def delete(self, project_id: str, schedule_id: str) -> None:
        await self._schedules.delete_schedule(project_id, schedule_id)

    async def _valid(self, project_id: str, data: Any) -> ScheduleSpec:
        spec = parse_body(ScheduleSpec, data, "a schedule")
        size = len(json.dumps(spec.input))
        if size > self._max_input_bytes:
            raise LimitExceeded(
                f"the schedule's input is {size} bytes; the limit is {self._max_input_bytes}"
            )
        graph = await self._store.get_graph(project_id, spec.workflow_id)
        if graph is None:
            problem = Problem("/workflow_id", f"no graph {spec.workflow_id!r} in this project")
            raise ValidationFailed(f"graph {spec.workflow_id!r} not found", [problem])
        if not graph.nodes:
            problem = Problem("/workflow_id", "a graph needs at least one node to run")
            raise ValidationFailed(f"graph {spec.workflow_id!r} has no nodes", [problem])
        return spec

    def _schedule(self, project_id: str, schedule_id: str, spec: ScheduleSpec) -> Schedule:
        now = self._clock.now()
        state = ScheduleState.ACTIVE if spec.enabled else ScheduleState.DISABLED
        return Schedule(
            **spec.model_dump(exclude={"id"}),
            id=schedule_id,
            project_id=project_id,
            state=state,
            next_run_at=next_time(spec.cron, spec.timezone, now) if spec.enabled else None,
            created_at=now,
            updated_at=now,
        )


class ScheduleFirer:
    """Every `tick_s`, fires the schedules that are due. `fire_due` is one pass (tests call
    it with their own clock)."""

    def __init__(
        self,
        schedules: ScheduleStore,
        clock: Clock,
        new_id: Callable[[], str],
        tick_s: float = TICK_S,
    ) -> None:
        self._schedules = schedules
        self._clock = clock
        self._new_id = new_id
        self._tick_s = tick_s
        self._background = Background("schedules")

    async def start(self) -> None:
        self._background.start(self._run())

    async def stop(self) -> None:
        await self._background.stop()

    async def fire_due(self) -> list[Run]:
        now = self._clock.now()
        created: list[Run] = []
        for project_id, schedule_id in await self._schedules.due_schedules(now):
            decide: Callable[[Schedule, Graph | None], Firing] = partial(
                _plan_at, now=now, new_id=self._new_id
            )
            try:
                runs = await self._schedules.fire_schedule(project_id, schedule_id, decide)
            except NotFound:  # deleted meanwhile
                continue
            for run in runs:
                log.info(
                    "schedule_fired",
                    project_id=project_id,
                    schedule_id=schedule_id,
                    run_id=run.id,
                    scheduled_for=run.trigger.get("scheduled_for"),
                )
            created += runs
        return created

    async def _run(self) -> None:
        while True:
            try:
                await self.fire_due()
            except Exception:  # tried again at the next tick
                log.exception("schedules_fire_failed")
            await asyncio.sleep(self._tick_s)


def _plan_at(
    schedule: Schedule, graph: Graph | None, *, now: datetime, new_id: Callable[[], str]
) -> Firing:
    return plan(schedule, graph, now, new_id)
