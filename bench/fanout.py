"""Fan-out: 1 -> 8 parallel -> 1 join, cortexd versus raw LangGraph (same joins: `defer=True`).

python bench/fanout.py [--runs 300] [--clients 20] [--rounds 3]
"""

from __future__ import annotations

import argparse

from common import compare, emit, fan_graph


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    comparison = compare(fan_graph("fan", 8), args.runs, args.clients, args.rounds)
    median = comparison.median
    emit(
        {
            "benchmark": "fanout",
            "shape": "1 -> 8 -> 1",
            "runs": args.runs,
            "clients": args.clients,
            "raw_langgraph_runs_per_s": round(args.runs / median.raw_s, 1),
            "cortexd_runs_per_s": round(args.runs / median.cortexd_s, 1),
            "ratio": round(median.ratio, 3),
            "cpu_ratio": round(comparison.median_cpu_ratio, 3),
            **comparison.summary(),
        }
    )


if __name__ == "__main__":
    main()
