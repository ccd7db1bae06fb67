"""Throughput: 1,000 runs of a 3-node passthrough graph, submitted over HTTP by 20 concurrent
clients until all completed, versus raw LangGraph + AsyncSqliteSaver (durability="sync", WAL,
synchronous=NORMAL) running the same graph 1,000 times at 20 concurrent, in-process.

    python bench/throughput.py [--runs 1000] [--clients 20] [--rounds 3]
"""

from __future__ import annotations

import argparse

from common import compare, emit, linear_graph


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    spec = linear_graph("three", 3)

    comparison = compare(spec, args.runs, args.clients, args.rounds)
    median = comparison.median
    emit(
        {
            "benchmark": "throughput",
            "runs": args.runs,
            "clients": args.clients,
            "raw_langgraph_runs_per_s": round(args.runs / median.raw_s, 1),
            "cortexd_runs_per_s": round(args.runs / median.cortexd_s, 1),
            "ratio": round(median.ratio, 3),
            "cpu_ratio": round(comparison.median_cpu_ratio, 3),
            **comparison.summary(),
            "cortexd_commits_per_run": round(median.commits / args.runs, 2),
            "cortexd_writes_per_commit": round(median.writes / median.commits, 2),
        }
    )


if __name__ == "__main__":
    main()
