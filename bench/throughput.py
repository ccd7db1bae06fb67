"""Throughput: 1,000 runs of a 3-node passthrough graph, submitted over HTTP by 20 concurrent
clients until all completed, versus raw LangGraph + AsyncSqliteSaver (durability="sync", WAL,
synchronous=NORMAL) running the same graph 1,000 times at 20 concurrent, in-process.

    python bench/throughput.py [--runs 1000] [--clients 20] [--rounds 3]
"""

from __future__ import annotations

from common import arguments, compare, emit, linear_graph, runs_per_s


def main() -> None:
    args = arguments(runs=1000)
    comparison = compare(linear_graph("three", 3), args.runs, args.clients, args.rounds)
    median = comparison.median
    emit(
        {
            "benchmark": "throughput",
            "runs": args.runs,
            "clients": args.clients,
            **runs_per_s(comparison, args.runs),
            "cortexd_commits_per_run": round(median.commits / args.runs, 2),
            "cortexd_writes_per_commit": round(median.writes / median.commits, 2),
        }
    )


if __name__ == "__main__":
    main()
