"""Memory: the daemon's RSS after 1,000 and after 10,000 completed runs (growth beyond caches is
a leak), and with 10,000 runs queued. Baseline: raw LangGraph + AsyncSqliteSaver in-process,
RSS after 1,000 and 10,000 runs of the same graph.

    python bench/memory.py [--runs 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time
from pathlib import Path
from typing import Any

from common import daemon, emit, linear_graph, raw_graph, run, submit_and_wait
from startup import rss_mb

P = "/api/projects/bench/workflows"


async def raw_rss(spec: dict[str, Any], checkpoints: list[int], tmp: Path) -> list[float]:
    import aiosqlite
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    conn = await aiosqlite.connect(tmp / "raw.db")
    await conn.execute("PRAGMA journal_mode=WAL")
    await conn.execute("PRAGMA synchronous=NORMAL")
    saver = AsyncSqliteSaver(conn)
    await saver.setup()
    graph = raw_graph(spec).compile(checkpointer=saver)
    gate = asyncio.Semaphore(20)
    done, readings = 0, []

    async def one(i: int) -> None:
        async with gate:
            config: Any = {"configurable": {"thread_id": f"t{i}"}}
            await graph.ainvoke(
                {"input": {"i": i}, "outputs": {}, "data": {}}, config, durability="sync"
            )

    for target in checkpoints:
        await asyncio.gather(*(one(i) for i in range(done, target)))
        done = target
        readings.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    await conn.close()
    return readings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10_000)
    args = parser.parse_args()
    # Readings after 10 %, 50 % and 100 % of the runs: caches fill early, a leak keeps growing,
    # so what matters is whether the second half still adds what the first did.
    marks = [args.runs // 10, args.runs // 2, args.runs]
    spec = linear_graph("three", 3)
    result: dict[str, Any] = {"benchmark": "memory", "runs": args.runs}

    cortexd: list[float] = []
    with daemon(execution={"max_concurrent_runs": 20}) as process:
        assert process.request("POST", f"{P}/graphs", spec)[0] == 201
        assert process.proc is not None
        result["cortexd_idle_rss_mb"] = round(rss_mb(process.proc.pid), 1)
        done = 0
        for mark in marks:
            run(submit_and_wait(process, "three", mark - done, 20))
            done = mark
            cortexd.append(rss_mb(process.proc.pid))

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        raw = run(raw_rss(spec, marks, Path(tmp)))
    for name, readings in (("cortexd", cortexd), ("raw_langgraph", raw)):
        result[f"{name}_rss_mb_after"] = {
            str(mark): round(value, 1) for mark, value in zip(marks, readings, strict=True)
        }
        result[f"{name}_growth_mb"] = round(readings[2] - readings[0], 1)
        result[f"{name}_growth_mb_in_last_half"] = round(readings[2] - readings[1], 1)

    # A backlog: one run holds the only slot; the rest wait in the durable queue.
    slow = {
        "id": "slow",
        "name": "slow",
        "nodes": [{"id": "wait", "type": "delay", "config": {"seconds": 3600}}],
        "edges": [],
    }
    with daemon(execution={"max_concurrent_runs": 1, "shutdown_grace_s": 0}) as process:
        assert process.request("POST", f"{P}/graphs", slow)[0] == 201
        assert process.proc is not None
        started = time.perf_counter()
        run(submit_only(process, "slow", args.runs, 20))
        result["queue_submit_runs_per_s"] = round(args.runs / (time.perf_counter() - started), 1)
        result[f"cortexd_rss_with_{args.runs}_queued_mb"] = round(rss_mb(process.proc.pid), 1)
        _, ready = process.request("GET", "/readyz")
        result["queued_reported"] = ready["runs"]["queued"]
    emit(result)


async def submit_only(process: Any, graph_id: str, runs: int, clients: int) -> None:
    import aiohttp

    url = f"{process.url}{P}/runs"
    counter = iter(range(runs))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def client() -> None:
            for i in counter:
                async with session.post(
                    url, json={"workflow_id": graph_id, "input": {"i": i}}
                ) as r:
                    assert r.status == 201

        await asyncio.gather(*(client() for _ in range(clients)))


if __name__ == "__main__":
    main()
