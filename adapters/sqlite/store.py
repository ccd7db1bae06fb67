"""The Store port on SQLite: reads on a reader connection, writes through the one Writer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiosqlite

from adapters.sql.store import SqlStore
from adapters.sqlite.db import read_all
from adapters.sqlite.writer import SQLITE, Writer


class SqliteReads:
    """Queries on one reader connection, each run to its end in one call."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return await read_all(self._conn, sql, params)


class SqliteStore(SqlStore):
    def __init__(self, writer: Writer, reader: aiosqlite.Connection) -> None:
        super().__init__(writer, SqliteReads(reader), SQLITE)
