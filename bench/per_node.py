"""Per-node overhead: a 10-node linear graph, time per node, cortexd versus raw LangGraph with
AsyncSqliteSaver (durability="sync"), alone (1 run at a time: latency) and 20 at a time.

    python bench/per_node.py [--runs 200] [--rounds 3]
"""

from __future__ import annotations

from common import arguments, compare, emit, linear_graph

NODES = 10


def main() -> None:
    args = arguments(runs=200, clients=False)
    spec = linear_graph("ten", NODES)
    result: dict[str, object] = {"benchmark": "per_node", "nodes": NODES, "runs": args.runs}
    for clients in (1, 20):
        comparison = compare(spec, args.runs, clients, args.rounds)
        median = comparison.median
        scale = 1000 / args.runs / NODES  # seconds for all runs -> ms per node
        result[f"concurrency_{clients}"] = {
            "raw_langgraph_ms_per_node": round(median.raw_s * scale, 3),
            "cortexd_ms_per_node": round(median.cortexd_s * scale, 3),
            # cortexd's time over raw LangGraph's: below 1, cortexd is faster.
            "overhead_ratio": round(1 / median.ratio, 3),
            "overhead_ratio_of_each_round": [round(1 / r.ratio, 3) for r in comparison.rounds],
            # CPU time instead of wall time: steadier on a shared machine.
            "cpu_overhead_ratio": round(1 / comparison.median_cpu_ratio, 3),
            "cortexd_commits_per_node": round(median.commits / args.runs / NODES, 2),
        }
    emit(result)


if __name__ == "__main__":
    main()
