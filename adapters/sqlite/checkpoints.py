"""LangGraph's SQLite checkpointer, writing through cortexd's one Writer.

`AsyncSqliteSaver` commits every checkpoint on a connection of its own; next to cortexd's store
that would be two writers on one file (LangGraph's most reported SQLite failure: "database is
locked") and one commit per step. This saver keeps the library's schema, serialisation and read
path (on the reader connection) and sends its three writes through the Writer instead, where
they join the group commit of every other run's writes.
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

from adapters.sqlite.riders import TaskRiders
from adapters.sqlite.writer import Tx, Writer

_PUT = (
    "INSERT OR REPLACE INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, "
    "parent_checkpoint_id, type, checkpoint, metadata) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_PUT_WRITES = (
    "INSERT OR {mode} INTO writes (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, "
    "idx, channel, type, value) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class GroupCommitSaver(AsyncSqliteSaver):
    def __init__(self, writer: Writer, reader: aiosqlite.Connection, riders: TaskRiders) -> None:
        super().__init__(reader)
        self._writer = writer
        self._riders = riders
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

        await self._writer.write(op, small=True)
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

        riders = self._riders.take(str(conf["thread_id"]), task_id)

        def op(tx: Tx) -> None:
            tx.executemany(_PUT_WRITES.format(mode=mode), rows)
            for rider in riders:
                rider(tx)

        # Lazy: LangGraph does not wait for a task's writes before the step goes on; it waits
        # for the step's checkpoint, submitted right after them. Sharing that commit halves
        # a lone run's commits per step. The FIFO writer never commits the checkpoint before
        # these writes, and the "completed" riding here is published only once committed.
        await self._writer.submit(op, lazy=True, small=True)

    async def adelete_thread(self, thread_id: str) -> None:
        def op(tx: Tx) -> None:
            tx.execute("DELETE FROM checkpoints WHERE thread_id = ?", (thread_id,))
            tx.execute("DELETE FROM writes WHERE thread_id = ?", (thread_id,))

        await self._writer.write(op)


class SqliteCheckpoints:
    """The Checkpoints port: the saver LangGraph runs with, plus cortexd's housekeeping."""

    def __init__(self, writer: Writer, reader: aiosqlite.Connection, riders: TaskRiders) -> None:
        self._saver = GroupCommitSaver(writer, reader, riders)
        self._writer = writer
        self._reader = reader

    @property
    def saver(self) -> GroupCommitSaver:
        return self._saver

    async def exists(self, thread_id: str) -> bool:
        async with self._reader.execute(
            "SELECT 1 FROM checkpoints WHERE thread_id = ? LIMIT 1", (thread_id,)
        ) as cursor:
            return await cursor.fetchone() is not None

    async def latest_id(self, thread_id: str) -> str | None:
        # The order LangGraph's own read of a thread's latest checkpoint uses (ids sort by time).
        async with self._reader.execute(
            "SELECT checkpoint_id FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = '' "
            "ORDER BY checkpoint_id DESC LIMIT 1",
            (thread_id,),
        ) as cursor:
            row = await cursor.fetchone()
        return None if row is None else str(row[0])

    async def delete(self, thread_id: str) -> None:
        await self._saver.adelete_thread(thread_id)

    async def prune(self, thread_id: str, keep: int) -> None:
        """Keep the newest `keep` checkpoints of a thread (ids sort by time) and their writes."""

        def op(tx: Tx) -> None:
            kept = (
                "SELECT checkpoint_id FROM checkpoints WHERE thread_id = ? "
                "ORDER BY checkpoint_id DESC LIMIT ?"
            )
            tx.execute(
                f"DELETE FROM checkpoints WHERE thread_id = ? AND checkpoint_id NOT IN ({kept})",
                (thread_id, thread_id, keep),
            )
            tx.execute(
                f"DELETE FROM writes WHERE thread_id = ? AND checkpoint_id NOT IN ({kept})",
                (thread_id, thread_id, keep),
            )

        await self._writer.write(op)
