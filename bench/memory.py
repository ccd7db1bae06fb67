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

from common import daemon, emit, linear_graph, raw_graph, submit_and_wait
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
    first = args.runs // 10
    spec = linear_graph("three", 3)
    result: dict[str, Any] = {"benchmark": "memory", "runs": args.runs}

    with daemon(execution={"max_concurrent_runs": 20}) as process:
        assert process.request("POST", f"{P}/graphs", spec)[0] == 201
        assert process.proc is not None
        result["cortexd_idle_rss_mb"] = round(rss_mb(process.proc.pid), 1)
        asyncio.run(submit_and_wait(process, "three", first, 20))
        result[f"cortexd_rss_after_{first}_mb"] = round(rss_mb(process.proc.pid), 1)
        asyncio.run(submit_and_wait(process, "three", args.runs - first, 20))
        result[f"cortexd_rss_after_{args.runs}_mb"] = round(rss_mb(process.proc.pid), 1)
    result["cortexd_growth_mb"] = round(
        result[f"cortexd_rss_after_{args.runs}_mb"] - result[f"cortexd_rss_after_{first}_mb"], 1
    )

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        low, high = asyncio.run(raw_rss(spec, [first, args.runs], Path(tmp)))
    result[f"raw_langgraph_maxrss_after_{first}_mb"] = round(low, 1)
    result[f"raw_langgraph_maxrss_after_{args.runs}_mb"] = round(high, 1)
    result["raw_langgraph_growth_mb"] = round(high - low, 1)

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
        asyncio.run(submit_only(process, "slow", args.runs, 20))
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
