"""Reading and changing a test's store directly, as an operator would with sqlite3 or psql:
the same SQL (with `?` placeholders) on SQLite and on PostgreSQL."""

from __future__ import annotations

import sqlite3
from typing import Any

import psycopg


def run_sql(
    storage: dict[str, str], sql: str, params: tuple[Any, ...] = ()
) -> list[tuple[Any, ...]]:
    """`storage`: `[storage]` settings as keys `path`/`url`, or as CORTEXD_STORAGE__* variables."""
    url = storage.get("url") or storage.get("CORTEXD_STORAGE__URL")
    if url:
        with psycopg.connect(url, autocommit=True) as conn:
            query = sql.replace("%", "%%").replace("?", "%s")
            cursor = conn.execute(query.encode(), params)
            return [tuple(row) for row in cursor.fetchall()] if cursor.description else []
    path = storage.get("path") or storage["CORTEXD_STORAGE__PATH"]
    with sqlite3.connect(path, timeout=10) as conn:
        return [tuple(row) for row in conn.execute(sql, params).fetchall()]
