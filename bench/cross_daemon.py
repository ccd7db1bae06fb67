"""Cross-process event delivery: two daemons on one SQLite file, runs executed by daemon A, and a
WebSocket client on each daemon. For every event, the time from the change it records (its
`timestamp`, taken on A just before the commit; same host, same clock) to the frame reaching
each client. The client on A is the baseline (no process boundary); the client on B measures
what crossing it costs: A's datagram wake-up, B's read of the log, B's send.

    python bench/cross_daemon.py [--runs 200]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from common import arguments, emit, linear_graph, run

from tests.support.process import DaemonProcess


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(a: DaemonProcess, b: DaemonProcess, runs: int) -> dict[str, list[float]]:
    latencies: dict[str, list[float]] = {"same_daemon": [], "other_daemon": []}
    done = asyncio.Event()
    completed: set[str] = set()

    async def watch(ws: aiohttp.ClientWebSocketResponse, key: str) -> None:
        async for message in ws:
            received = time.time()
            event = json.loads(message.data)
            stamp = datetime.fromisoformat(event["timestamp"]).timestamp()
            latencies[key].append((received - stamp) * 1000)
            if key == "other_daemon" and event["type"] == "workflow.run.completed":
                completed.add(event["run_id"])
                if len(completed) == runs:
                    done.set()
                    return

    async with aiohttp.ClientSession() as session:
        base = "/api/projects/bench"
        async with (
            session.ws_connect(f"{a.url}{base}/ws") as on_a,
            session.ws_connect(f"{b.url}{base}/ws") as on_b,
        ):
            watchers = [
                asyncio.create_task(watch(on_a, "same_daemon")),
                asyncio.create_task(watch(on_b, "other_daemon")),
            ]
            for i in range(runs):  # one at a time: latency, not throughput
                body = {"workflow_id": "one", "input": {"i": i}}
                async with session.post(f"{a.url}{base}/workflows/runs", json=body) as response:
                    assert response.status == 201
                    run_id = (await response.json())["id"]
                for _ in range(2000):  # bounded wait for this run's end on B's client
                    if run_id in completed:
                        break
                    await asyncio.sleep(0.002)
            await asyncio.wait_for(done.wait(), 60)
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
    return latencies


def main() -> None:
    args = arguments(runs=200, clients=False, rounds=False)
    result: dict[str, Any] = {"benchmark": "cross_daemon", "runs": args.runs}
    with tempfile.TemporaryDirectory() as tmp:
        shared = str(Path(tmp) / "shared.db")
        made = []
        for name, slots in (("a", 4), ("b", 1)):
            (Path(tmp) / name).mkdir()
            made.append(
                DaemonProcess(
                    Path(tmp) / name,
                    logging={"level": "warning"},
                    storage={"path": shared},
                    execution={"max_concurrent_runs": slots},
                )
            )
        a, b = made
        try:
            # B executes none of the measured runs: its one slot holds a run that outlasts them.
            b.start()
            hold = linear_graph("hold", 1, "delay")
            hold["nodes"][0]["config"] = {"seconds": 3600}
            for spec in (linear_graph("one", 1), hold):
                status, _ = b.request("POST", "/api/projects/bench/workflows/graphs", spec)
                assert status == 201
            status, held = b.request(
                "POST", "/api/projects/bench/workflows/runs", {"workflow_id": "hold"}
            )
            assert status == 201
            for _ in range(200):
                if (
                    b.request("GET", f"/api/projects/bench/workflows/runs/{held['id']}")[1][
                        "status"
                    ]
                    == "running"
                ):
                    break
                time.sleep(0.05)
            a.start()
            latencies = run(measure(a, b, args.runs))
        finally:
            a.stop()
            b.stop()
    for key, values in latencies.items():
        result[key] = {
            "events": len(values),
            "p50_ms": round(statistics.median(values), 2),
            "p90_ms": round(percentile(values, 0.9), 2),
            "p99_ms": round(percentile(values, 0.99), 2),
        }
    result["other_over_same_p50"] = round(
        result["other_daemon"]["p50_ms"] / max(result["same_daemon"]["p50_ms"], 1e-3), 2
    )
    emit(result)


if __name__ == "__main__":
    main()
