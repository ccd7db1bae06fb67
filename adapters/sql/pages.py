"""Pages of runs and graphs, for both databases: keyset pagination, never OFFSET.

Runs are listed newest first: by `created_us` (the run's `created_at` in microseconds), then by
`seq` (creation order) among equal times, so the order is total and a cursor, the last row's
(created_us, seq), says exactly where the next page starts. Each combination of the filters that
are equalities (graph, status) has its own index ending in that order (SQLite migration 0005,
PostgreSQL 0002): a page is one range of one index, as cheap with a million runs stored as with
a thousand. Several statuses are one range per status, each at most a page long, merged.
Graphs are listed by id, on their primary key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from adapters.sql import runs
from core.pages import RunFilter, decode_cursor, encode_cursor, micros

RUNS = "r"
GRAPHS = "g"
_ORDER = "ORDER BY created_us DESC, seq DESC"


def runs_query(
    project_id: str,
    filters: RunFilter,
    limit: int,
    cursor: str | None,
    indexed_by: Callable[[str], str],
) -> tuple[str, list[Any]]:
    """The SQL of a page of runs, one row more than `limit` (whether more exist), and its
    parameters. Its rows are (created_us, seq, *runs.RUN_COLUMNS)."""
    conditions, params = ["project_id = ?"], [project_id]
    index = "runs_page"
    if filters.workflow_id is not None:
        conditions.append("workflow_id = ?")
        params.append(filters.workflow_id)
        index += "_graph"
    if filters.parent_run_id is not None:  # the children of one run: few, read by their index
        conditions.append("parent_run_id = ?")
        params.append(filters.parent_run_id)
        index = "runs_page_parent"
    statuses = filters.status_values
    if filters.trigger is not None:
        conditions.append("trigger_type = ?")
        params.append(filters.trigger)
        # With statuses, the status's index is read and the trigger filtered (documented).
        index += "" if statuses or filters.parent_run_id else "_trigger"
    if statuses:
        conditions.append("status = ?")
        index += "" if filters.parent_run_id else "_status"
    after: list[Any] = []
    if filters.created_after is not None:
        conditions.append("created_us > ?")
        after.append(micros(filters.created_after))
    # One upper bound, the stricter: with two, SQLite ranges the index on `created_before`
    # and filters by the cursor, reading every run between them.
    position = None if cursor is None else decode_cursor(RUNS, cursor, (int, int))
    before = None if filters.created_before is None else micros(filters.created_before)
    if position is not None and (before is None or position[0] < before):
        conditions.append("(created_us, seq) < (?, ?)")
        after.extend(position)
    elif before is not None:
        conditions.append("created_us < ?")
        after.append(before)
    one = (
        f"SELECT created_us, seq, {runs.RUN_COLUMNS} FROM runs {indexed_by(index)} "
        f"WHERE {' AND '.join(conditions)} {_ORDER} LIMIT ?"
    )
    if not statuses:
        return one, [*params, *after, limit + 1]
    if len(statuses) == 1:
        return one, [*params, statuses[0], *after, limit + 1]
    parts = " UNION ALL ".join(f"SELECT * FROM ({one}) AS s{n}" for n in range(len(statuses)))
    merged = [p for status in statuses for p in (*params, status, *after, limit + 1)]
    return f"{parts} {_ORDER} LIMIT ?", [*merged, limit + 1]


def next_run_cursor(rows: list[Any], limit: int) -> str | None:
    """The cursor after the page's last run, when the query found more than a page."""
    if len(rows) <= limit:
        return None
    created_us, seq = rows[limit - 1][0], rows[limit - 1][1]
    return encode_cursor(RUNS, int(created_us), int(seq))


def graphs_query(project_id: str, limit: int, cursor: str | None) -> tuple[str, list[Any]]:
    """A page of graphs by id (rows: id, body), one more than `limit`."""
    if cursor is None:
        sql = "SELECT id, body FROM graphs WHERE project_id = ? ORDER BY id LIMIT ?"
        return sql, [project_id, limit + 1]
    [after] = decode_cursor(GRAPHS, cursor, (str,))
    sql = "SELECT id, body FROM graphs WHERE project_id = ? AND id > ? ORDER BY id LIMIT ?"
    return sql, [project_id, after, limit + 1]


def next_graph_cursor(rows: list[Any], limit: int) -> str | None:
    return encode_cursor(GRAPHS, str(rows[limit - 1][0])) if len(rows) > limit else None
