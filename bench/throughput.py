"""Throughput: 1,000 runs of a 3-node passthrough graph, submitted over HTTP by 20 concurrent
clients until all completed, versus raw LangGraph + AsyncSqliteSaver (durability="sync", WAL,
synchronous=NORMAL) running the same graph 1,000 times at 20 concurrent, in-process.

    python bench/throughput.py [--runs 1000] [--clients 20]
"""

from __future__ import annotations

import argparse

from common import compare, emit, linear_graph


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=20)
    args = parser.parse_args()
    spec = linear_graph("three", 3)

    times = compare(spec, args.runs, args.clients)
    raw_s, cortexd_s = times["raw_s"], times["cortexd_s"]
    emit(
        {
            "benchmark": "throughput",
            "runs": args.runs,
            "clients": args.clients,
            "raw_langgraph_runs_per_s": round(args.runs / raw_s, 1),
            "cortexd_runs_per_s": round(args.runs / cortexd_s, 1),
            "ratio": round(raw_s / cortexd_s, 3),
            "cortexd_commits_per_run": round(times["commits"] / args.runs, 2),
            "cortexd_writes_per_commit": round(times["writes"] / times["commits"], 2),
        }
    )


if __name__ == "__main__":
    main()
