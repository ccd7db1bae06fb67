"""Runs waiting on timers cost only their rows (DESIGN §11, issue 17): N runs parked on a long
`delay`, the daemon's RSS and CPU while they wait against the same daemon idle with none (the
baseline, measured first in the same run), how fast they park, and how late they wake (each
delay node's completion against its timer's `until`).

    python bench/waits.py [--runs 10000] [--delay 300] [--backend sqlite|postgres]

The delay must outlast creating and parking every run (the first must not wake before the
last parks): the result says whether it did.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from datetime import datetime

import aiohttp
from common import choose_backend, daemon, emit, process_cpu_s, run
from startup import rss_mb

from tests.support.stores import run_sql

P = "/api/projects/bench/workflows"


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--delay", type=float, default=300.0, help="seconds each run waits")
    parser.add_argument("--window", type=float, default=20.0, help="seconds of each reading")
    return parser.parse_args()


async def create(url: str, count: int) -> None:
    gate = asyncio.Semaphore(32)
    async with aiohttp.ClientSession() as session:

        async def one(i: int) -> None:
            async with gate:
                body = {"workflow_id": "timer", "input": {"i": i}}
                async with session.post(f"{url}{P}/runs", json=body) as answer:
                    assert answer.status == 201, await answer.text()

        await asyncio.gather(*(one(i) for i in range(count)))


def reading(pid: int, window_s: float) -> dict[str, float]:
    """RSS at the end of a window, and the CPU the process used per second of it."""
    cpu, began = process_cpu_s(pid), time.monotonic()
    time.sleep(window_s)
    return {
        "rss_mb": round(rss_mb(pid), 1),
        "cpu_per_s": round((process_cpu_s(pid) - cpu) / (time.monotonic() - began), 4),
    }


def quantiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    cut = statistics.quantiles(ordered, n=100, method="inclusive")
    return {
        "p50": round(cut[49], 3),
        "p95": round(cut[94], 3),
        "p99": round(cut[98], 3),
        "max": round(ordered[-1], 3),
    }


def main() -> None:
    choose_backend()
    args = arguments()
    execution = {"max_concurrent_runs": 8, "park_after_s": 1}
    spec = {
        "id": "timer",
        "name": "timer",
        "nodes": [{"id": "wait", "type": "delay", "config": {"seconds": args.delay}}],
        "edges": [],
    }
    with daemon(execution=execution) as process:
        storage = process.settings["storage"]
        pid = process.proc.pid if process.proc is not None else 0
        idle = reading(pid, args.window)
        assert process.request("POST", f"{P}/graphs", spec)[0] == 201
        began = time.monotonic()
        run(create(process.url, args.runs))
        created_s = time.monotonic() - began
        deadline = time.monotonic() + args.delay + 600
        while time.monotonic() < deadline:
            parked = run_sql(storage, "SELECT COUNT(*) FROM runs WHERE wake_at IS NOT NULL")
            if parked[0][0] >= args.runs:
                break
            time.sleep(0.5)
        parked_s = time.monotonic() - began
        waiting = reading(pid, args.window)
        first_due = run_sql(storage, "SELECT MIN(wake_at) FROM runs")[0][0]
        early = first_due is not None and first_due < time.time()
        while time.monotonic() < deadline:
            left = run_sql(storage, "SELECT COUNT(*) FROM runs WHERE status <> 'completed'")[0][0]
            if left == 0:
                break
            time.sleep(1.0)
        untils: dict[str, datetime] = {}
        for (body,) in run_sql(
            storage, "SELECT body FROM events WHERE type = 'workflow.run.updated'"
        ):
            waited = (json.loads(body)["run"].get("waiting_for") or {}).get("until")
            if waited is not None:  # the park (a re-park keeps the same time)
                untils.setdefault(json.loads(body)["run_id"], _time(waited))
        lateness = [
            (_time(json.loads(body)["completed_at"]) - untils[run_id]).total_seconds()
            for run_id, body in run_sql(storage, "SELECT run_id, body FROM node_states")
            if run_id in untils and json.loads(body).get("completed_at")
        ]
        emit(
            {
                "benchmark": "waits",
                "backend": "postgres" if storage.get("url") else "sqlite",
                "runs": args.runs,
                "delay_s": args.delay,
                "created_s": round(created_s, 1),
                "parked_all_s": round(parked_s, 1),
                "woke_before_all_parked": early,
                "idle": idle,
                "waiting": waiting,
                "rss_ratio": round(waiting["rss_mb"] / idle["rss_mb"], 2),
                "cpu_while_waiting_per_s_minus_idle": round(
                    waiting["cpu_per_s"] - idle["cpu_per_s"], 4
                ),
                "lateness_s": quantiles(lateness) if lateness else None,
                "completed": len(lateness),
            }
        )


def _time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


if __name__ == "__main__":
    main()
