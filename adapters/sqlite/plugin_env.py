"""What plugins get besides hook calls: a key/value space of their own and the event log."""

from __future__ import annotations

import json
from typing import Any

import aiosqlite

from adapters.sqlite.db import read_all
from adapters.sqlite.writer import Tx, Writer


class SqlitePluginState:
    def __init__(self, writer: Writer, reader: aiosqlite.Connection, plugin: str) -> None:
        self._writer = writer
        self._reader = reader
        self._plugin = plugin

    async def get(self, key: str, default: Any = None) -> Any:
        rows = await read_all(
            self._reader,
            "SELECT value FROM plugin_state WHERE plugin = ? AND key = ?",
            (self._plugin, key),
        )
        return json.loads(rows[0][0]) if rows else default

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
        rows = await read_all(
            self._reader,
            "SELECT seq, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, limit),
        )
        return [{"seq": s, **json.loads(body)} for s, body in rows]

    async def last_seq(self) -> int:
        rows = await read_all(self._reader, "SELECT COALESCE(MAX(seq), 0) FROM events")
        return int(rows[0][0]) if rows else 0
