"""The unit of work of one execution of a run: every write fenced by the claim's lease.

A node is durably complete when LangGraph saves its task's writes (`aput_writes`): after a crash
it will not run again. Its "completed" record waits here, keyed by the task, until the
checkpointer, finding this execution in the run's config, commits it in that very transaction.
So the store never says "completed" about a node that would run again, nor the other way round.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from adapters.sql import runs
from adapters.sql.tx import Op, Tx, Writes
from core.domain import NodeState, Run
from core.ports import Change, Claim, Lease


class SqlExecution:
    def __init__(self, writer: Writes, claim: Claim) -> None:
        self._writer = writer
        self._lease = claim.lease
        self._project_id = claim.run.project_id
        self._riders: dict[str, list[Op]] = {}
        self.closed = False

    @property
    def lease(self) -> Lease:
        return self._lease

    def record(self, states: Sequence[NodeState], now: datetime) -> asyncio.Future[None]:
        write = self._writer.submit(self._states_op(states, now), lazy=True, small=True)
        # Awaited by the run's scope when it settles; one made just before the lease was lost
        # (a cancel) may never be: its LeaseLost is expected, not an unretrieved error.
        write.add_done_callback(_retrieve)
        return write

    def record_with_task(self, task_id: str, states: Sequence[NodeState], now: datetime) -> None:
        if not self.closed:
            self._riders.setdefault(task_id, []).append(self._states_op(states, now))

    async def save(self, states: Sequence[NodeState], now: datetime) -> None:
        await self._writer.write(self._states_op(states, now), small=True)

    async def finish(self, change: Change) -> Run:
        op = partial(
            runs.change_run,
            project_id=None,
            run_id=self._lease.run_id,
            change=change,
            lease=self._lease,
        )
        return await self._writer.write(op, small=True)

    async def release(self, now: datetime) -> None:
        await self._writer.write(partial(runs.release_run, lease=self._lease, now=now), small=True)

    def close(self) -> None:
        self.closed = True
        self._riders.clear()

    # -- for the checkpointer -------------------------------------------------------------

    def fenced(self, op: Op) -> Op:
        """`op` done only while the lease holds (LeaseLost otherwise, and nothing written)."""
        return Fenced(self._lease, op)

    def take_riders(self, task_id: str) -> list[Op]:
        return self._riders.pop(task_id, [])

    def _states_op(self, states: Sequence[NodeState], now: datetime) -> Op:
        return self.fenced(
            partial(
                runs.save_node_states,
                run_id=self._lease.run_id,
                project_id=self._project_id,
                states=list(states),
                now=now,
            )
        )


@dataclass(frozen=True, slots=True)
class Fenced:
    """An operation done only while `lease` holds. A writer may read the fences of a whole
    batch at once (`adapters.postgres.writer`)."""

    lease: Lease
    op: Op

    async def __call__(self, tx: Tx) -> object:
        await runs.fence(tx, self.lease)
        return await self.op(tx)


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
