"""Per-node overhead: a 10-node linear graph, time per node, cortexd versus raw LangGraph with
AsyncSqliteSaver (durability="sync"), alone (1 run at a time: latency) and 20 at a time.

    python bench/per_node.py [--runs 200]
"""

from __future__ import annotations

import argparse

from common import compare, emit, linear_graph

NODES = 10


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    spec = linear_graph("ten", NODES)
    result: dict[str, object] = {"benchmark": "per_node", "nodes": NODES, "runs": args.runs}
    for clients in (1, 20):
        times = compare(spec, args.runs, clients)
        per_node = {k: times[k] / args.runs / NODES * 1000 for k in ("raw_s", "cortexd_s")}
        result[f"concurrency_{clients}"] = {
            "raw_langgraph_ms_per_node": round(per_node["raw_s"], 3),
            "cortexd_ms_per_node": round(per_node["cortexd_s"], 3),
            "overhead_ratio": round(per_node["cortexd_s"] / per_node["raw_s"], 3),
            "cortexd_commits_per_node": round(times["commits"] / args.runs / NODES, 2),
        }
    emit(result)


if __name__ == "__main__":
    main()
