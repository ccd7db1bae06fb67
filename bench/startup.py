"""Start-up: process start to READY=1 (sd_notify) and to `/readyz` 200; idle RSS. Baseline: a
Python process that imports LangGraph and its SQLite saver and compiles the same 3-node graph.

    python bench/startup.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import CORTEXD_EXE, emit, write_config

BASELINE = """
import asyncio, aiosqlite, sys
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
sys.path.insert(0, {root!r}); sys.path.insert(0, {bench!r})
from common import linear_graph, raw_graph
async def main():
    conn = await aiosqlite.connect({db!r})
    saver = AsyncSqliteSaver(conn); await saver.setup()
    raw_graph(linear_graph("three", 3)).compile(checkpointer=saver)
    print("ready", flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cortexd_once(tmp: Path) -> dict[str, float]:
    config = write_config(tmp, {})
    notify = tmp / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.settimeout(30)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORTEXD_")}
    env["NOTIFY_SOCKET"] = str(notify)
    started = time.perf_counter()
    proc = subprocess.Popen(
        [CORTEXD_EXE, "serve", "--config", str(config.path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while b"READY=1" not in sock.recv(4096):
            pass
        ready = time.perf_counter() - started
        while True:
            try:
                with urllib.request.urlopen(f"{config.url}/readyz", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.005)
        http_ready = time.perf_counter() - started
        time.sleep(1)  # idle: let start-up garbage settle before reading the RSS
        return {"ready_s": ready, "readyz_s": http_ready, "idle_rss_mb": rss_mb(proc.pid)}
    finally:
        proc.terminate()
        proc.wait(30)
        sock.close()
        notify.unlink()


def baseline_once(tmp: Path) -> dict[str, float]:
    code = BASELINE.format(
        root=str(Path(__file__).resolve().parent.parent),
        bench=str(Path(__file__).resolve().parent),
        db=str(tmp / "raw.db"),
    )
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        ready = time.perf_counter() - started
        time.sleep(1)
        return {"ready_s": ready, "idle_rss_mb": rss_mb(proc.pid)}
    finally:
        proc.kill()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    cortexd, raw = [], []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            cortexd.append(cortexd_once(Path(tmp)))
        with tempfile.TemporaryDirectory() as tmp:
            raw.append(baseline_once(Path(tmp)))

    def median(rows: list[dict[str, float]], key: str) -> float:
        return round(statistics.median(r[key] for r in rows), 3)

    emit(
        {
            "benchmark": "startup",
            "repeat": args.repeat,
            "cortexd_ready_s": median(cortexd, "ready_s"),
            "cortexd_readyz_s": median(cortexd, "readyz_s"),
            "cortexd_idle_rss_mb": median(cortexd, "idle_rss_mb"),
            "raw_langgraph_ready_s": median(raw, "ready_s"),
            "raw_langgraph_idle_rss_mb": median(raw, "idle_rss_mb"),
            "ready_ratio": round(median(cortexd, "ready_s") / median(raw, "ready_s"), 3),
            "rss_ratio": round(median(cortexd, "idle_rss_mb") / median(raw, "idle_rss_mb"), 3),
        }
    )


if __name__ == "__main__":
    main()
