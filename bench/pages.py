"""Pages of runs (DESIGN §12): what one page costs, and start-up to ready, as the store grows from
1,000 to 1,000,000 runs. Both should stay flat: a page is one range of one index (keyset), and
nothing at start-up reads every run.

    python bench/pages.py [--backend sqlite|postgres] [--sizes 1000,10000,100000,1000000]
                          [--repeat 30] [--starts 3]

How the runs are made: a daemon creates the store (its migrations: the real schema) and ten
graphs over the API, and is stopped; then each size's new runs are written by one bulk SQL
`INSERT ... SELECT` into that store (SQLite: a recursive CTE; PostgreSQL: generate_series),
every row as cortexd writes it: the run's JSON body (completed 93%, failed 5%, cancelled 2%,
paused 1 in 10,000; ten graphs; created 0.5 s apart, ending now), its `created_us`, and its
`workflow.run.created` event, with the sink cursors moved past those events (so the daemon does
not spend the measurement delivering a million old events to its log sink). PostgreSQL is then
ANALYZEd, as autovacuum would. The daemon is started on the store, timed to READY=1 (sd_notify)
and to `/readyz` 200, and each kind of page is asked for `--repeat` times over one keep-alive
connection; the median latency of each is reported, and its ratio at the largest size to the
smallest (1.0: flat). Last, the largest store is taken back to the schema before pages (the
`created_us` column and its indexes dropped, the migration unrecorded) and the daemon started on
it: how long an upgrade's migration takes with that many runs.
"""

from __future__ import annotations

import argparse
import http.client
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import common
import psycopg
from common import DaemonProcess, choose_backend, emit, fresh_store

from adapters.sql import pages as sql_pages
from core.domain import RunStatus
from core.pages import RunFilter, encode_cursor

PROJECT = "bench"
API = f"/api/projects/{PROJECT}/workflows"
GRAPHS = 10
SPACING_US = 500_000  # runs are created 0.5 s apart
GRAPH = {"name": "bench", "nodes": [{"id": "n0"}], "edges": []}


# -- making the runs -------------------------------------------------------------------------


def _iso(sql_us: str, postgres: bool) -> str:
    """SQL for a time in microseconds as cortexd's JSON writes it (six digits or none, Z)."""
    if postgres:
        whole = f"to_char(to_timestamp(({sql_us}) / 1000000) AT TIME ZONE 'UTC', " + (
            "'YYYY-MM-DD\"T\"HH24:MI:SS')"
        )
        frac = f"lpad((({sql_us}) % 1000000)::text, 6, '0')"
    else:
        whole = f"strftime('%Y-%m-%dT%H:%M:%S', ({sql_us}) / 1000000, 'unixepoch')"
        frac = f"printf('%06d', ({sql_us}) % 1000000)"
    return f"({whole} || CASE WHEN ({sql_us}) % 1000000 = 0 THEN 'Z' ELSE '.' || {frac} || 'Z' END)"


def _runs_sql(postgres: bool) -> str:
    """INSERT the runs numbered ?..? (and their events, by a second statement)."""
    obj = "json_build_object" if postgres else "json_object"
    hexed = (
        "lpad(to_hex(i), 8, '0') || '-0000-4000-8000-' || lpad(to_hex(i), 12, '0')"
        if postgres
        else "printf('%08x-0000-4000-8000-%012x', i, i)"
    )
    status = (
        "CASE WHEN i % 10000 = 7 THEN 'paused' WHEN i % 100 < 5 THEN 'failed' "
        "WHEN i % 100 < 7 THEN 'cancelled' ELSE 'completed' END"
    )
    series = (
        "SELECT i FROM generate_series(%s::bigint, %s::bigint) AS i"
        if postgres
        else "WITH RECURSIVE n(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
        "SELECT i FROM n"
    )
    base = "%s::bigint" if postgres else "?"
    body = f"""{obj}(
        'id', id, 'workflow_id', workflow_id, 'status', status,
        'started_at', {_iso("created_us + 100000", postgres)},
        'finished_at', CASE WHEN status = 'paused' THEN NULL
                            ELSE {_iso("created_us + 300000", postgres)} END,
        'last_message', CASE WHEN status = 'failed' THEN 'boom' ELSE 'n0 ' || status END,
        'task_id', NULL,
        'paused_at', CASE WHEN status = 'paused' THEN {_iso("created_us + 200000", postgres)} END,
        'cancelled_at', CASE WHEN status = 'cancelled'
                             THEN {_iso("created_us + 300000", postgres)} END,
        'project_id', '{PROJECT}', 'graph_version', 1, 'input', {obj}('i', i),
        'output', CASE WHEN status = 'completed'
                       THEN {obj}('outputs', {obj}('n0', {obj}('i', i)), 'data', {obj}()) END,
        'error', CASE WHEN status = 'failed'
                      THEN {obj}('type', 'node_failed', 'message', 'boom', 'node_id', 'n0') END,
        'created_at', {_iso("created_us", postgres)},
        'pause_reason', CASE WHEN status = 'paused' THEN 'requested' END,
        'prompt', NULL, 'owner', NULL, 'recoveries', 0)"""
    return f"""
        INSERT INTO runs (id, project_id, workflow_id, status, body, created_us)
        SELECT id, '{PROJECT}', workflow_id, status, {body}, created_us FROM (
            SELECT i, {hexed} AS id, 'g' || (i % {GRAPHS}) AS workflow_id, {status} AS status,
                   {base} + i * {SPACING_US} AS created_us
            FROM ({series}) AS numbers
        ) AS made"""


def _events_sql(postgres: bool) -> str:
    """One `workflow.run.created` event per run inserted after seq ? (PostgreSQL numbers them
    after the log's head, as its writer does)."""
    obj = "json_build_object" if postgres else "json_object"
    run = "body::json" if postgres else "json(body)"
    seq = "(SELECT seq FROM event_head) + row_number() OVER (ORDER BY r.seq), " if postgres else ""
    return f"""
        INSERT INTO events ({"seq, " if postgres else ""}project_id, run_id, type, timestamp, body)
        SELECT {seq}project_id, id, 'workflow.run.created', body_time,
               {obj}('type', 'workflow.run.created', 'project_id', project_id, 'run_id', id,
                     'timestamp', body_time, 'run', {run})
        FROM (SELECT seq, project_id, id, body,
                     {_iso("created_us", postgres)} AS body_time FROM runs) AS r
        WHERE r.seq > {"%s" if postgres else "?"} ORDER BY r.seq"""


def grow(storage: dict[str, str], first: int, last: int, base_us: int) -> float:
    """Runs number `first`..`last` (and their events) into the store; seconds it took."""
    started = time.perf_counter()
    postgres = "url" in storage
    if postgres:
        with psycopg.connect(storage["url"], autocommit=False) as conn:
            (top,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM runs").fetchone() or (0,)
            conn.execute(_psycopg(_runs_sql(True)), (base_us, first, last))
            conn.execute(_psycopg(_events_sql(True)), (top,))
            conn.execute("UPDATE event_head SET seq = (SELECT MAX(seq) FROM events)")
            conn.execute("UPDATE sink_cursors SET seq = (SELECT seq FROM event_head)")
            conn.commit()
        with psycopg.connect(storage["url"], autocommit=True) as conn:
            conn.execute("ANALYZE runs")
            conn.execute("ANALYZE events")
    else:
        with sqlite3.connect(storage["path"]) as conn:
            (top,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM runs").fetchone()
            conn.execute(_runs_sql(False), (base_us, first, last))
            conn.execute(_events_sql(False), (top,))
            conn.execute("UPDATE sink_cursors SET seq = (SELECT MAX(seq) FROM events)")
        with sqlite3.connect(storage["path"]) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return time.perf_counter() - started


def _psycopg(sql: str) -> bytes:
    """`%` is psycopg's placeholder mark: the SQL's own (modulo) doubled, `%s` kept."""
    return sql.replace("%", "%%").replace("%%s", "%s").encode()


def position(storage: dict[str, str], index: int) -> str:
    """The cursor after run number `index` (as a client would get it from a Link)."""
    run_id = f"{index:08x}-0000-4000-8000-{index:012x}"
    rows = _query(storage, "SELECT created_us, seq FROM runs WHERE id = ?", (run_id,))
    return encode_cursor("r", int(rows[0][0]), int(rows[0][1]))


def _query(storage: dict[str, str], sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    if "url" in storage:
        with psycopg.connect(storage["url"], autocommit=True) as conn:
            return conn.execute(sql.replace("?", "%s").encode(), params).fetchall()
    with sqlite3.connect(storage["path"]) as conn:
        return conn.execute(sql, params).fetchall()


# -- measuring -------------------------------------------------------------------------------


@contextmanager
def started(daemon: DaemonProcess) -> Iterator[dict[str, float]]:
    """The daemon started; its times to READY=1 and to `/readyz` 200 (seconds)."""
    notify = daemon.workdir / "notify.sock"
    notify.unlink(missing_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(notify))
        sock.settimeout(900)  # an upgrade's migration of a million runs included
        daemon.env["NOTIFY_SOCKET"] = str(notify)
        begun = time.perf_counter()
        daemon.spawn()
        try:
            while b"READY=1" not in sock.recv(4096):
                pass
            ready = time.perf_counter() - begun
            while True:
                try:
                    if daemon.request("GET", "/readyz", timeout=5)[0] == 200:
                        break
                except OSError:
                    pass
                time.sleep(0.002)
            yield {"ready_s": ready, "readyz_s": time.perf_counter() - begun}
        finally:
            daemon.stop()


def page_ms(port: int, path: str, repeat: int) -> dict[str, Any]:
    """Median and spread of `repeat` GETs of `path` (after 3 to warm up), one connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    times, count, link = [], 0, False
    try:
        for n in range(repeat + 3):
            begun = time.perf_counter()
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            elapsed = time.perf_counter() - begun
            assert response.status == 200, (path, response.status, body[:300])
            if n >= 3:
                times.append(elapsed * 1000)
            count, link = body.count(b'"workflow_id"'), response.getheader("Link") is not None
    finally:
        conn.close()
    times.sort()
    return {
        "median_ms": round(statistics.median(times), 3),
        "p10_ms": round(times[len(times) // 10], 3),
        "p90_ms": round(times[(len(times) * 9) // 10], 3),
        "runs": count,
        "next_link": link,
    }


@dataclass(frozen=True)
class Kind:
    """A page: the filters, the cursor it starts after, its limit."""

    filters: RunFilter
    cursor: str | None = None
    limit: int = 50

    @property
    def path(self) -> str:
        f = self.filters
        query = {
            "workflow_id": f.workflow_id,
            "status": ",".join(sorted(f.statuses)) or None,
            "created_after": f.created_after and f.created_after.isoformat(),
            "created_before": f.created_before and f.created_before.isoformat(),
            "limit": str(self.limit),
            "cursor": self.cursor,
        }
        return f"{API}/runs?{urlencode({k: v for k, v in query.items() if v is not None})}"

    def sql(self, postgres: bool) -> tuple[str, list[Any]]:
        hint = (lambda index: "") if postgres else (lambda index: f"INDEXED BY {index}")
        return sql_pages.runs_query(PROJECT, self.filters, self.limit, self.cursor, hint)


def kinds(storage: dict[str, str], size: int, base_us: int) -> dict[str, Kind]:
    """The pages asked for at `size` runs: newest, deep (a cursor in the middle, near the
    oldest), filtered by status (one, two merged, a rare one), by graph and status, and a
    window of creation times."""
    middle, oldest = position(storage, size // 2), position(storage, 100)

    def moment(index: int) -> datetime:
        return datetime.fromtimestamp((base_us + index * SPACING_US) / 1_000_000, UTC)

    def status(*names: RunStatus) -> RunFilter:
        return RunFilter(statuses=frozenset(names))

    failed, cancelled = RunStatus.FAILED, RunStatus.CANCELLED
    graph_completed = RunFilter(workflow_id="g3", statuses=frozenset({RunStatus.COMPLETED}))
    window = RunFilter(created_after=moment(size * 2 // 5), created_before=moment(size * 3 // 5))
    return {
        "newest_50": Kind(RunFilter()),
        "newest_1000": Kind(RunFilter(), limit=1000),
        "middle_50": Kind(RunFilter(), middle),
        "near_oldest_50": Kind(RunFilter(), oldest),
        "failed_50": Kind(status(failed)),
        "failed_or_cancelled_middle_50": Kind(status(failed, cancelled), middle),
        "paused_50": Kind(status(RunStatus.PAUSED)),
        "graph_completed_middle_50": Kind(graph_completed, middle),
        "created_window_50": Kind(window),
    }


def store_ms(
    storage: dict[str, str],
    kind: Kind,
    repeat: int,
    make_sql: Callable[[bool], tuple[str, list[Any]]] | None = None,
) -> float:
    """Median time of the page's own SQL on one connection of the benchmark (no HTTP)."""
    postgres = "url" in storage
    sql, params = (make_sql or kind.sql)(postgres)
    times = []
    if postgres:
        with psycopg.connect(storage["url"], autocommit=True) as conn:
            query = sql.replace("?", "%s").encode()
            for n in range(repeat + 3):
                begun = time.perf_counter()
                conn.execute(query, params).fetchall()
                if n >= 3:
                    times.append((time.perf_counter() - begun) * 1000)
    else:
        with sqlite3.connect(storage["path"]) as conn:
            for n in range(repeat + 3):
                begun = time.perf_counter()
                conn.execute(sql, params).fetchall()
                if n >= 3:
                    times.append((time.perf_counter() - begun) * 1000)
    return round(statistics.median(times), 4)


def offset_ms(storage: dict[str, str], size: int, repeat: int) -> float:
    """For contrast, not used by cortexd: the middle page read with OFFSET (what keyset
    avoids: every run before the page is read and thrown away)."""
    sql = (
        "SELECT created_us, seq, body, owner, epoch FROM runs WHERE project_id = ? "
        "ORDER BY created_us DESC, seq DESC LIMIT 51 OFFSET ?"
    )

    def with_offset(postgres: bool) -> tuple[str, list[Any]]:
        return sql, [PROJECT, size // 2]

    return store_ms(storage, Kind(RunFilter()), repeat, with_offset)


def plans(storage: dict[str, str], asked: dict[str, Kind]) -> dict[str, list[str]]:
    """The database's plan of the newest page and of a merged, filtered deep one."""
    postgres = "url" in storage
    found = {}
    for name in ("newest_50", "failed_or_cancelled_middle_50"):
        sql, params = asked[name].sql(postgres)
        explain = "EXPLAIN (COSTS OFF) " if postgres else "EXPLAIN QUERY PLAN "
        rows = _query(storage, explain + sql, tuple(params))
        found[name] = [str(row[0] if postgres else row[3]) for row in rows]
    return found


_UNDO = [
    *(f"DROP INDEX {i}" for i in ("runs_page", "runs_page_graph", "runs_page_status")),
    "DROP INDEX runs_page_graph_status",
    "ALTER TABLE runs DROP COLUMN created_us",
    "CREATE INDEX runs_by_project ON runs (project_id, workflow_id, seq)",
]


def upgrade_s(daemon: DaemonProcess, storage: dict[str, str]) -> dict[str, float]:
    """The store taken back to the schema before pages (its runs kept), then the time the
    daemon takes to start on it: the migration that adds `created_us` and its indexes."""
    postgres = "url" in storage
    undo = [*_UNDO, f"DELETE FROM schema_migrations WHERE version = {2 if postgres else 5}"]
    if postgres:
        with psycopg.connect(storage["url"], autocommit=True) as conn:
            for sql in undo:
                conn.execute(sql.encode())
    else:
        with sqlite3.connect(storage["path"]) as conn:
            for sql in undo:
                conn.execute(sql)
    with started(daemon) as startup:
        status, listed = daemon.request("GET", f"{API}/runs?limit=2")
        assert status == 200
        assert len(listed) == 2
    return {"ready_s": round(startup["ready_s"], 1), "readyz_s": round(startup["readyz_s"], 1)}


def measure(sizes: list[int], repeat: int, starts: int) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, fresh_store(Path(tmp)) as storage:
        daemon = DaemonProcess(Path(tmp), logging={"level": "warning"}, storage=storage)
        daemon.start(timeout=60)
        for n in range(GRAPHS):
            status, _ = daemon.request("POST", f"{API}/graphs", GRAPH | {"id": f"g{n}"})
            assert status == 201
        daemon.stop()
        # Created 0.5 s apart, the largest size's last one now: every event within retention.
        base_us = int(time.time() * 1_000_000) - max(sizes) * SPACING_US
        base_us -= base_us % 1_000_000
        made = 0
        for size in sizes:
            insert_s = grow(storage, made + 1, size, base_us)
            made = size
            startups = []
            for _ in range(starts):
                with started(daemon) as startup:
                    startups.append(startup)
            asked = kinds(storage, size, base_us)
            with started(daemon):
                timings = {name: page_ms(daemon.port, k.path, repeat) for name, k in asked.items()}
            for name, kind in asked.items():
                timings[name]["store_median_ms"] = store_ms(storage, kind, repeat)
            result: dict[str, Any] = {
                "runs": size,
                "insert_s": round(insert_s, 1),
                "ready_s": round(statistics.median(s["ready_s"] for s in startups), 3),
                "readyz_s": round(statistics.median(s["readyz_s"] for s in startups), 3),
                "readyz_s_each": [round(s["readyz_s"], 3) for s in startups],
                "pages": timings,
                "contrast_offset_middle_50_store_ms": offset_ms(storage, size, 5),
            }
            if size == max(sizes):
                result["plans"] = plans(storage, asked)
                result["upgrade_start"] = upgrade_s(daemon, storage)
            results.append(result)
            print(f"{size} runs: ready {result['readyz_s']} s", file=sys.stderr, flush=True)
    small, large = results[0], results[-1]

    def ratios(field: str) -> dict[str, float]:
        return {
            name: round(large["pages"][name][field] / small["pages"][name][field], 2)
            for name in small["pages"]
        }

    return {
        "benchmark": "pages",
        "backend": common.BACKEND,
        "made_by": "bulk INSERT ... SELECT into the store a daemon migrated (see the docstring)",
        "repeat": repeat,
        "sizes": results,
        f"page_ratio_{large['runs']}_to_{small['runs']}": {
            "http_median": ratios("median_ms"),
            "http_p10": ratios("p10_ms"),
            "store_median": ratios("store_median_ms"),
        },
        "readyz_ratio": round(large["readyz_s"] / small["readyz_s"], 2),
        "readyz_s_at_largest": large["readyz_s"],
    }


def main() -> None:
    choose_backend()
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000,100000,1000000")
    parser.add_argument("--repeat", type=int, default=100)
    parser.add_argument("--starts", type=int, default=3)
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    emit(measure(sizes, args.repeat, args.starts))


if __name__ == "__main__":
    main()
