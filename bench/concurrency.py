"""Per-graph concurrency (DESIGN §11): what a claim costs with a large backlog of runs that wait
for their group, against the same claim with no backlog. The held runs must cost a claim
nothing (no head-of-line blocking, no read of the backlog).

    python bench/concurrency.py [--backend sqlite|postgres] [--backlog 10000] [--groups 1,1000]
                                [--repeat 200]

On the real store (its writer, its migrations), in one process: a graph `blocked` with
`concurrency = {"limit": 1, "key": "customer"}`, one running run per customer (`--groups`
customers), and `--backlog` more of its runs spread over those customers, all held; then,
`--repeat` times, one run of a graph without a limit is created and one claim of one slot is
timed (it must take that run); and a claim that finds nothing (what a daemon's hint or upkeep
costs) is timed as many times. Each figure is the median; `ratio` is backlog over no backlog
(1.0: flat).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import common
from common import choose_backend, emit, fresh_store
from psycopg_pool import AsyncConnectionPool

from adapters.postgres import db as pg_db
from adapters.postgres.store import PgStore
from adapters.postgres.writer import PgWriter
from adapters.sqlite.db import connect, prepare_database
from adapters.sqlite.store import SqliteStore
from adapters.sqlite.writer import Writer
from core import changes
from core.domain import GraphSpec, Run, RunStatus

NOW = datetime(2026, 1, 1, tzinfo=UTC)
LEASE_S = 600.0


@asynccontextmanager
async def store_on(storage: dict[str, str]) -> AsyncIterator[Any]:
    if "url" in storage:
        await pg_db.prepare_database(storage["url"])
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            storage["url"], min_size=1, max_size=4, kwargs={"autocommit": True}, open=False
        )
        await pool.open()
        writer = PgWriter(storage["url"])
        await writer.start()
        try:
            yield PgStore(writer, pool)
        finally:
            await writer.close()
            await pool.close()
        return
    path = Path(storage["path"])
    await prepare_database(path)
    sqlite_writer = Writer(path)
    await sqlite_writer.start()
    reader = await connect(path)
    try:
        yield SqliteStore(sqlite_writer, reader)
    finally:
        await sqlite_writer.close()
        await reader.close()


def new_run(graph_id: str, run_input: dict[str, Any]) -> Run:
    return Run(
        id=str(uuid.uuid4()),
        workflow_id=graph_id,
        status=RunStatus.PENDING,
        project_id="bench",
        graph_version=1,
        input=run_input,
        created_at=NOW,
    )


async def claim(store: Any, limit: int = 1) -> list[Any]:
    return list(await store.claim_runs("bench", limit, LEASE_S, changes.start(NOW)))


# For contrast, not used: the next run to claim found by filtering the queue as it is read
# (procrastinate's lock check), which visits every blocked run ahead of it.
FILTERED = (
    "SELECT id FROM runs r WHERE status = 'pending' AND (concurrency_key IS NULL OR "
    "(SELECT COUNT(*) FROM runs o WHERE o.concurrency_key = r.concurrency_key "
    "AND o.status = 'running') < concurrency_limit) ORDER BY queued_at LIMIT 1"
)


async def measure(
    storage: dict[str, str], backlog: int, groups: int, repeat: int
) -> dict[str, Any]:
    async with store_on(storage) as store:
        limit = {"limit": 1, "key": "customer"}
        specs = {
            "blocked": {"name": "blocked", "nodes": [{"id": "a"}], "concurrency": limit},
            "free": {"name": "free", "nodes": [{"id": "a"}]},
        }
        for graph_id, spec in specs.items():
            await store.put_graph(
                "bench", graph_id, GraphSpec.model_validate(spec), NOW, create=True
            )
        for start in range(0, groups, 500):  # one running run per customer
            batch = range(start, min(groups, start + 500))
            await asyncio.gather(
                *(store.create_run(new_run("blocked", {"customer": c})) for c in batch)
            )
            await claim(store, len(batch))
        made = time.perf_counter()
        for start in range(0, backlog, 500):  # the backlog: every run of it held
            batch = range(start, min(backlog, start + 500))
            await asyncio.gather(
                *(store.create_run(new_run("blocked", {"customer": i % groups})) for i in batch)
            )
        made_s = time.perf_counter() - made
        counts = await store.queue_counts()
        assert counts.pending == backlog, counts
        claims, empty, creations, filtered = [], [], [], []
        for _ in range(repeat):
            run = new_run("free", {})
            await store.create_run(run)
            started = time.perf_counter()
            taken = await claim(store)
            claims.append(time.perf_counter() - started)
            assert [c.run.id for c in taken] == [run.id], "the free run was held back"
            started = time.perf_counter()
            assert await claim(store) == []
            empty.append(time.perf_counter() - started)
            started = time.perf_counter()
            await store.create_run(new_run("blocked", {"customer": 0}))  # held at creation
            creations.append(time.perf_counter() - started)
        for _ in range(repeat):  # apart: its long reads must not slow the claims above
            run = new_run("free", {})
            await store.create_run(run)
            started = time.perf_counter()
            assert [tuple(row) for row in await store._all(FILTERED)] == [(run.id,)]
            filtered.append(time.perf_counter() - started)
            await claim(store)
        return {
            "claim_one_us": round(statistics.median(claims) * 1e6),
            "claim_nothing_us": round(statistics.median(empty) * 1e6),
            "create_held_us": round(statistics.median(creations) * 1e6),
            "contrast_filtered_read_us": round(statistics.median(filtered) * 1e6),
            "backlog_created_s": round(made_s, 2),
        }


async def main() -> None:
    backend = choose_backend()
    parser = argparse.ArgumentParser()
    parser.add_argument("--backlog", type=int, default=10_000)
    parser.add_argument("--groups", default="1,1000")
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    result: dict[str, Any] = {
        "benchmark": "concurrency",
        "backend": backend,
        "backlog": args.backlog,
        "repeat": args.repeat,
        "cases": [],
    }
    for groups in (int(g) for g in args.groups.split(",")):
        case: dict[str, Any] = {"groups": groups}
        for backlog in (0, args.backlog):
            with tempfile.TemporaryDirectory() as tmp, fresh_store(Path(tmp)) as storage:
                case[f"backlog_{backlog}"] = await measure(storage, backlog, groups, args.repeat)
        empty, full = case["backlog_0"], case[f"backlog_{args.backlog}"]
        case["ratio"] = {
            key: round(full[key] / max(1, empty[key]), 2)
            for key in (
                "claim_one_us",
                "claim_nothing_us",
                "create_held_us",
                "contrast_filtered_read_us",
            )
        }
        result["cases"].append(case)
    emit(result)


if __name__ == "__main__":
    common.run(main())
