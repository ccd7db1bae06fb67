"""LangGraph's checkpoints on SQLite: the shared saver (`adapters.sql.checkpoints`) reading on a
connection of its own."""

from __future__ import annotations

import aiosqlite

from adapters.sql.checkpoints import GroupCommitSaver, SqlCheckpoints
from adapters.sqlite.store import SqliteReads
from adapters.sqlite.writer import Writer


def sqlite_checkpoints(writer: Writer, reader: aiosqlite.Connection) -> SqlCheckpoints:
    return SqlCheckpoints(GroupCommitSaver(writer, reader), SqliteReads(reader))
