"""Fan-out: 1 -> 8 parallel -> 1 join, cortexd versus raw LangGraph (same joins: `defer=True`).

python bench/fanout.py [--runs 300] [--clients 20] [--rounds 3]
"""

from __future__ import annotations

from common import arguments, compare, emit, fan_graph, runs_per_s


def main() -> None:
    args = arguments(runs=300)
    comparison = compare(fan_graph("fan", 8), args.runs, args.clients, args.rounds)
    emit(
        {
            "benchmark": "fanout",
            "shape": "1 -> 8 -> 1",
            "runs": args.runs,
            "clients": args.clients,
            **runs_per_s(comparison, args.runs),
        }
    )


if __name__ == "__main__":
    main()
