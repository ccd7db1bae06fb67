"""Fan-out: 1 -> 8 parallel -> 1 join, cortexd versus raw LangGraph (same joins: `defer=True`).

python bench/fanout.py [--runs 300] [--clients 20]
"""

from __future__ import annotations

import argparse

from common import compare, emit, fan_graph


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--clients", type=int, default=20)
    args = parser.parse_args()
    times = compare(fan_graph("fan", 8), args.runs, args.clients)
    emit(
        {
            "benchmark": "fanout",
            "shape": "1 -> 8 -> 1",
            "runs": args.runs,
            "clients": args.clients,
            "raw_langgraph_runs_per_s": round(args.runs / times["raw_s"], 1),
            "cortexd_runs_per_s": round(args.runs / times["cortexd_s"], 1),
            "ratio": round(times["raw_s"] / times["cortexd_s"], 3),
        }
    )


if __name__ == "__main__":
    main()
