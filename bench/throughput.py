"""Throughput: 1,000 runs of a 3-node passthrough graph, submitted over HTTP by 20 concurrent
clients until all completed, versus raw LangGraph + AsyncSqliteSaver (durability="sync", WAL,
synchronous=NORMAL) running the same graph 1,000 times at 20 concurrent, in-process.

    python bench/throughput.py [--runs 1000] [--clients 20]
"""

from __future__ import annotations

import argparse
import asyncio

from common import daemon, emit, linear_graph, raw_langgraph_runs, submit_and_wait


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=20)
    args = parser.parse_args()
    spec = linear_graph("three", 3)

    raw_s = asyncio.run(raw_langgraph_runs(spec, args.runs, args.clients))
    with daemon(execution={"max_concurrent_runs": args.clients}) as process:
        status, _ = process.request("POST", "/api/projects/bench/workflows/graphs", spec)
        assert status == 201
        cortexd_s = asyncio.run(submit_and_wait(process, "three", args.runs, args.clients))
    emit(
        {
            "benchmark": "throughput",
            "runs": args.runs,
            "clients": args.clients,
            "raw_langgraph_runs_per_s": round(args.runs / raw_s, 1),
            "cortexd_runs_per_s": round(args.runs / cortexd_s, 1),
            "ratio": round(raw_s / cortexd_s, 3),
        }
    )


if __name__ == "__main__":
    main()
