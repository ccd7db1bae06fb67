"""WebSocket fan-out: latency from an event being stored (its `timestamp`) to its arrival at
each of 100 connected clients (p50/p99), and the engine's throughput with and without those
100 clients (ratio). Runs of a 3-node passthrough graph, 20 submitting clients.

    python bench/ws_fanout.py [--runs 300] [--watchers 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from datetime import datetime
from typing import Any

import aiohttp
from common import DaemonProcess, daemon, emit, linear_graph, run, submit_and_wait


async def watch(
    process: DaemonProcess, watchers: int, runs: int, clients: int
) -> tuple[float, list[float]]:
    """Submit and wait while `watchers` sockets record each event's delivery delay."""
    delays: list[float] = []
    url = f"{process.url}/api/projects/bench/ws"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        sockets = [await session.ws_connect(url) for _ in range(watchers)]

        async def record(ws: aiohttp.ClientWebSocketResponse) -> None:
            async for message in ws:
                event: dict[str, Any] = json.loads(message.data)
                stored = datetime.fromisoformat(event["timestamp"]).timestamp()
                delays.append(time.time() - stored)

        readers = [asyncio.create_task(record(ws)) for ws in sockets]
        elapsed = await submit_and_wait(process, "three", runs, clients)
        for ws in sockets:
            await ws.close()
        await asyncio.gather(*readers, return_exceptions=True)
    return elapsed, delays


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--clients", type=int, default=20)
    args = parser.parse_args()
    spec = linear_graph("three", 3)
    with daemon(execution={"max_concurrent_runs": args.clients}) as process:
        assert process.request("POST", "/api/projects/bench/workflows/graphs", spec)[0] == 201
        alone = run(submit_and_wait(process, "three", args.runs, args.clients))
        watched, delays = run(watch(process, args.watchers, args.runs, args.clients))
    delays.sort()
    emit(
        {
            "benchmark": "ws_fanout",
            "runs": args.runs,
            "watchers": args.watchers,
            "events_received": len(delays),
            "latency_p50_ms": round(statistics.median(delays) * 1000, 2),
            "latency_p99_ms": round(delays[int(len(delays) * 0.99) - 1] * 1000, 2),
            "runs_per_s_without_watchers": round(args.runs / alone, 1),
            "runs_per_s_with_watchers": round(args.runs / watched, 1),
            "throughput_ratio": round(alone / watched, 3),
        }
    )


if __name__ == "__main__":
    main()
