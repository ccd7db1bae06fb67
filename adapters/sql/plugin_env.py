"""What plugins get besides hook calls: a key/value space of their own and the event log."""

from __future__ import annotations

import json
from typing import Any

from adapters.sql.tx import Reads, Tx, Writes


class SqlPluginState:
    def __init__(self, writer: Writes, reads: Reads, plugin: str) -> None:
        self._writer = writer
        self._reads = reads
        self._plugin = plugin

    async def get(self, key: str, default: Any = None) -> Any:
        rows = await self._reads.all(
            "SELECT value FROM plugin_state WHERE plugin = ? AND key = ?",
            (self._plugin, key),
        )
        return json.loads(rows[0][0]) if rows else default

    async def set(self, key: str, value: Any) -> None:
        text = json.dumps(value)

        async def op(tx: Tx) -> None:
            await tx.execute(
                "INSERT INTO plugin_state (plugin, key, value) VALUES (?, ?, ?) "
                "ON CONFLICT (plugin, key) DO UPDATE SET value = excluded.value",
                (self._plugin, key, text),
            )

        await self._writer.write(op)


class SqlEventLog:
    """Read access to the stored events of every project, in `seq` order."""

    def __init__(self, reads: Reads) -> None:
        self._reads = reads

    async def since(self, seq: int, limit: int = 500) -> list[dict[str, Any]]:
        rows = await self._reads.all(
            "SELECT seq, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, limit),
        )
        return [{"seq": s, **json.loads(body)} for s, body in rows]

    async def last_seq(self) -> int:
        rows = await self._reads.all("SELECT COALESCE(MAX(seq), 0) FROM events")
        return int(rows[0][0]) if rows else 0
