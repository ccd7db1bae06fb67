"""What plugins get besides hook calls: a key/value space of their own and the event log."""

from __future__ import annotations

import json
from typing import Any

import aiosqlite

from adapters.sqlite.writer import Tx, Writer


class SqlitePluginState:
    def __init__(self, writer: Writer, reader: aiosqlite.Connection, plugin: str) -> None:
        self._writer = writer
        self._reader = reader
        self._plugin = plugin

    async def get(self, key: str, default: Any = None) -> Any:
        async with self._reader.execute(
            "SELECT value FROM plugin_state WHERE plugin = ? AND key = ?", (self._plugin, key)
        ) as cursor:
            row = await cursor.fetchone()
        return json.loads(row[0]) if row else default

    async def set(self, key: str, value: Any) -> None:
        text = json.dumps(value)

        def op(tx: Tx) -> None:
            tx.execute(
                "INSERT OR REPLACE INTO plugin_state (plugin, key, value) VALUES (?, ?, ?)",
                (self._plugin, key, text),
            )

        await self._writer.write(op)


class SqliteEventLog:
    """Read access to the stored events of every project, in `seq` order."""

    def __init__(self, reader: aiosqlite.Connection) -> None:
        self._reader = reader

    async def since(self, seq: int, limit: int = 500) -> list[dict[str, Any]]:
        async with self._reader.execute(
            "SELECT seq, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
        ) as cursor:
            rows = await cursor.fetchall()
        return [{"seq": s, **json.loads(body)} for s, body in rows]

    async def last_seq(self) -> int:
        async with self._reader.execute("SELECT COALESCE(MAX(seq), 0) FROM events") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0
