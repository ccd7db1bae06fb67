"""LangGraph's checkpointer, writing through the store's one writer, on both databases.

`AsyncSqliteSaver` commits every checkpoint on a connection of its own; next to cortexd's store
that would be two writers on one file (LangGraph's most reported SQLite failure: "database is
locked") and one commit per step. This saver keeps that library's schema, serialisation and
read path and sends its three writes through the store's writer instead, where they join the
group commit of every other run's writes. A write of a run executed under a lease (its config
carries the `SqlExecution` under `EXECUTION_KEY`) is fenced by it, and a task's writes carry
that execution's records of the task's node along.

The read path is the library's own, in SQL that PostgreSQL speaks too: on PostgreSQL it reads
through a connection-like object over the pool (`adapters.postgres.reads.SaverConnection`),
and the same schema in `adapters/postgres/migrations` (rather than langgraph-checkpoint-
postgres, whose saver serialises every call of a process behind one lock and whose `setup()`
races when several daemons start at once; see docs/decisions.md).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    get_checkpoint_metadata,
)
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from adapters.sql.execution import SqlExecution
from adapters.sql.tx import Op, Reads, Tx, Writes
from core.ports import EXECUTION_KEY

_PUT = (
    "INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, "
    "parent_checkpoint_id, type, checkpoint, metadata) VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id) DO UPDATE SET "
    "parent_checkpoint_id = excluded.parent_checkpoint_id, type = excluded.type, "
    "checkpoint = excluded.checkpoint, metadata = excluded.metadata"
)
_PUT_WRITES = (
    "INSERT INTO writes (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, "
    "idx, channel, type, value) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO {action}"
)
_REPLACE = (
    "UPDATE SET task_path = excluded.task_path, channel = excluded.channel, "
    "type = excluded.type, value = excluded.value"
)


class GroupCommitSaver(AsyncSqliteSaver):
    def __init__(self, writer: Writes, reader: Any, lock: Any = None) -> None:
        """`reader`: an aiosqlite connection, or one that behaves like it; `lock`: what
        serialises the library's reads (on SQLite they share one connection)."""
        super().__init__(reader)
        self._writer = writer
        if lock is not None:
            self.lock = lock
        self.is_setup = True  # the tables come with the store's migrations

    async def aput(
        self,
        config: Any,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> Any:
        conf = config["configurable"]
        thread_id, checkpoint_ns = str(conf["thread_id"]), conf["checkpoint_ns"]
        type_, blob = self.serde.dumps_typed(checkpoint)
        meta = json.dumps(get_checkpoint_metadata(config, metadata), ensure_ascii=False)
        row = (
            thread_id,
            checkpoint_ns,
            checkpoint["id"],
            conf.get("checkpoint_id"),
            type_,
            blob,
            meta.encode("utf-8", "ignore"),
        )

        async def op(tx: Tx) -> None:
            await tx.execute(_PUT, row)

        await self._writer.write(_fenced(config, op), small=True)
        return {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": checkpoint_ns,
                "checkpoint_id": checkpoint["id"],
            }
        }

    async def aput_writes(
        self,
        config: Any,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        conf = config["configurable"]
        replace = all(w[0] in WRITES_IDX_MAP for w in writes)
        sql = _PUT_WRITES.format(action=_REPLACE if replace else "NOTHING")
        rows = [
            (
                str(conf["thread_id"]),
                str(conf["checkpoint_ns"]),
                str(conf["checkpoint_id"]),
                task_id,
                task_path,
                WRITES_IDX_MAP.get(channel, idx),
                channel,
                *self.serde.dumps_typed(value),
            )
            for idx, (channel, value) in enumerate(writes)
        ]

        execution = _execution(config)
        riders = execution.take_riders(task_id) if execution is not None else []

        async def op(tx: Tx) -> None:
            await tx.executemany(sql, rows)
            for rider in riders:
                await rider(tx)

        # Lazy: LangGraph does not wait for a task's writes before the step goes on; it waits
        # for the step's checkpoint, submitted right after them. Sharing that commit halves
        # a lone run's commits per step. The FIFO writer never commits the checkpoint before
        # these writes, and the "completed" riding here is published only once committed.
        await self._writer.submit(_fenced(config, op), lazy=True, small=True)

    async def adelete_thread(self, thread_id: str) -> None:
        async def op(tx: Tx) -> None:
            await tx.execute("DELETE FROM checkpoints WHERE thread_id = ?", (thread_id,))
            await tx.execute("DELETE FROM writes WHERE thread_id = ?", (thread_id,))

        await self._writer.write(op)


class SqlCheckpoints:
    """The Checkpoints port: the saver LangGraph runs with, plus cortexd's housekeeping. On
    SQLite the saver reads on a connection of its own: LangGraph fetches rows across awaits,
    and a read left open there must not hold back what the store's queries see."""

    def __init__(self, saver: GroupCommitSaver, reads: Reads) -> None:
        self._saver = saver
        self._reads = reads

    @property
    def saver(self) -> GroupCommitSaver:
        return self._saver

    async def exists(self, thread_id: str) -> bool:
        rows = await self._reads.all(
            "SELECT 1 FROM checkpoints WHERE thread_id = ? LIMIT 1", (thread_id,)
        )
        return bool(rows)

    async def latest_id(self, thread_id: str) -> str | None:
        # The order LangGraph's own read of a thread's latest checkpoint uses (ids sort by time).
        rows = await self._reads.all(
            "SELECT checkpoint_id FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = '' "
            "ORDER BY checkpoint_id DESC LIMIT 1",
            (thread_id,),
        )
        return str(rows[0][0]) if rows else None


def _execution(config: Any) -> SqlExecution | None:
    execution = config["configurable"].get(EXECUTION_KEY)
    return execution if isinstance(execution, SqlExecution) else None


def _fenced(config: Any, op: Op) -> Op:
    """The write under the lease of the execution the config names, when it names one."""
    execution = _execution(config)
    return op if execution is None else execution.fenced(op)
