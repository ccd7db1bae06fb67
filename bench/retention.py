"""The store's size under a steady load of runs with retention on (issue 18, item 3): a daemon
with `[storage] finished_run_retention_days` and `[events] retention_days` set to a few seconds
(time compressed: each retention window stands for a day, or an hour), a client creating runs at
a steady rate (every tenth cancelled while it waits), and the database's size sampled. With
retention, the size grows over the first windows and then stays flat; without, it grows with
the runs. Prints JSON: the samples, and the size's growth over the second half of the load.

    python bench/retention.py [--seconds 300] [--rate 20] [--retention-s 25] [--no-retention]
"""

from __future__ import annotations

import argparse
import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from common import daemon, emit, linear_graph

P = "/api/projects/bench/workflows"


def sizes(db: Path) -> dict[str, int]:
    wal = db.with_name(db.name + "-wal")
    with closing(sqlite3.connect(db, timeout=10)) as conn:
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        (free,) = conn.execute("PRAGMA freelist_count").fetchone()
        (size,) = conn.execute("PRAGMA page_size").fetchone()
        (runs,) = conn.execute("SELECT COUNT(*) FROM runs").fetchone()
        (events,) = conn.execute("SELECT COUNT(*) FROM events").fetchone()
        (checkpoints,) = conn.execute("SELECT COUNT(*) FROM checkpoints").fetchone()
    return {
        "db_bytes": db.stat().st_size,
        "wal_bytes": wal.stat().st_size if wal.exists() else 0,
        "used_bytes": (pages - free) * size,
        "runs": runs,
        "events": events,
        "checkpoints": checkpoints,
    }


def load(process: Any, rate: float, stop: threading.Event, made: list[int]) -> None:
    """Creates runs at `rate` per second until stopped; cancels every tenth at once."""
    interval = 1.0 / rate
    due = time.monotonic()
    n = 0
    while not stop.is_set():
        status, run = process.request("POST", f"{P}/runs", {"workflow_id": "three"})
        assert status == 201, run
        n += 1
        if n % 10 == 0:
            process.request("POST", f"{P}/runs/{run['id']}/cancel")
        made[0] = n
        due += interval
        time.sleep(max(0.0, due - time.monotonic()))  # pacing a load, not waiting for a state


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--rate", type=float, default=20, help="runs created per second")
    parser.add_argument("--retention-s", type=float, default=25)
    parser.add_argument("--sample-s", type=float, default=10)
    parser.add_argument("--no-retention", action="store_true")
    args = parser.parse_args()
    days = args.retention_s / 86400
    storage = {"checkpoint_retention": 1}
    events: dict[str, Any] = {"retention_days": days if not args.no_retention else 7}
    if not args.no_retention:
        storage["finished_run_retention_days"] = days  # type: ignore[assignment]
    with daemon(storage_extra=storage, events=events) as process:
        db = Path(process.settings["storage"]["path"])
        assert process.request("POST", f"{P}/graphs", linear_graph("three", 3))[0] == 201
        stop, made = threading.Event(), [0]
        client = threading.Thread(target=load, args=(process, args.rate, stop, made))
        began = time.monotonic()
        client.start()
        samples = []
        try:
            while (elapsed := time.monotonic() - began) < args.seconds:
                time.sleep(args.sample_s)
                samples.append({"t_s": round(elapsed + args.sample_s), "created": made[0]})
                samples[-1].update(sizes(db))
        finally:
            stop.set()
            client.join(30)
    half = [s for s in samples if s["t_s"] >= args.seconds / 2]
    used = [s["used_bytes"] for s in half]
    emit(
        {
            "benchmark": "retention",
            "retention": None if args.no_retention else f"{args.retention_s} s",
            "seconds": args.seconds,
            "rate_per_s": args.rate,
            "runs_created": made[0],
            "retention_windows": round(args.seconds / args.retention_s, 1),
            "second_half": {
                "used_bytes_min": min(used),
                "used_bytes_max": max(used),
                "used_bytes_growth": round(used[-1] / used[0], 3),
                "db_bytes_end": half[-1]["db_bytes"],
                "runs_stored_end": half[-1]["runs"],
            },
            "samples": samples,
        }
    )


if __name__ == "__main__":
    main()
