"""LangGraph's SQLite checkpointer, writing through cortexd's one Writer.

`AsyncSqliteSaver` commits every checkpoint on a connection of its own; next to cortexd's store
that would be two writers on one file (LangGraph's most reported SQLite failure: "database is
locked") and one commit per step. This saver keeps the library's schema, serialisation and read
path (on the reader connection) and sends its three writes through the Writer instead, where
they join the group commit of every other run's writes. A write of a run executed under a
lease (its config carries the `SqliteExecution` under `EXECUTION_KEY`) is fenced by it, and a
task's writes carry that execution's records of the task's node along.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import aiosqlite
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    get_checkpoint_metadata,
)
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from adapters.sqlite.db import read_all
from adapters.sqlite.execution import SqliteExecution
from adapters.sqlite.writer import Op, Tx, Writer
from core.ports import EXECUTION_KEY

_PUT = (
    "INSERT OR REPLACE INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, "
    "parent_checkpoint_id, type, checkpoint, metadata) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_PUT_WRITES = (
    "INSERT OR {mode} INTO writes (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, "
    "idx, channel, type, value) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class GroupCommitSaver(AsyncSqliteSaver):
    def __init__(self, writer: Writer, reader: aiosqlite.Connection) -> None:
        super().__init__(reader)
        self._writer = writer
        self.is_setup = True  # tables were created by db.prepare_database() at start-up

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

        def op(tx: Tx) -> None:
            tx.execute(_PUT, row)

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
        mode = "REPLACE" if all(w[0] in WRITES_IDX_MAP for w in writes) else "IGNORE"
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

        def op(tx: Tx) -> None:
            tx.executemany(_PUT_WRITES.format(mode=mode), rows)
            for rider in riders:
                rider(tx)

        # Lazy: LangGraph does not wait for a task's writes before the step goes on; it waits
        # for the step's checkpoint, submitted right after them. Sharing that commit halves
        # a lone run's commits per step. The FIFO writer never commits the checkpoint before
        # these writes, and the "completed" riding here is published only once committed.
        await self._writer.submit(_fenced(config, op), lazy=True, small=True)

    async def adelete_thread(self, thread_id: str) -> None:
        def op(tx: Tx) -> None:
            tx.execute("DELETE FROM checkpoints WHERE thread_id = ?", (thread_id,))
            tx.execute("DELETE FROM writes WHERE thread_id = ?", (thread_id,))

        await self._writer.write(op)


class SqliteCheckpoints:
    """The Checkpoints port: the saver LangGraph runs with, plus cortexd's housekeeping. The
    saver reads on a connection of its own: LangGraph fetches rows across awaits, and a read
    left open there must not hold back what the store's queries see."""

    def __init__(self, writer: Writer, reader: aiosqlite.Connection) -> None:
        self._saver = GroupCommitSaver(writer, reader)
        self._reader = reader

    @property
    def saver(self) -> GroupCommitSaver:
        return self._saver

    async def exists(self, thread_id: str) -> bool:
        rows = await read_all(
            self._reader, "SELECT 1 FROM checkpoints WHERE thread_id = ? LIMIT 1", (thread_id,)
        )
        return bool(rows)

    async def latest_id(self, thread_id: str) -> str | None:
        # The order LangGraph's own read of a thread's latest checkpoint uses (ids sort by time).
        rows = await read_all(
            self._reader,
            "SELECT checkpoint_id FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = '' "
            "ORDER BY checkpoint_id DESC LIMIT 1",
            (thread_id,),
        )
        return str(rows[0][0]) if rows else None


def _execution(config: Any) -> SqliteExecution | None:
    execution = config["configurable"].get(EXECUTION_KEY)
    return execution if isinstance(execution, SqliteExecution) else None


def _fenced(config: Any, op: Op) -> Op:
    """The write under the lease of the execution the config names, when it names one."""
    execution = _execution(config)
    return op if execution is None else execution.fenced(op)
