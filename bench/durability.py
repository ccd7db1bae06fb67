"""What durability costs: the throughput workload (3-node passthrough graph, 20 concurrent) on
raw LangGraph + AsyncSqliteSaver in each of its durability modes, and on cortexd with group
commit (the default) and with one commit per write (`[storage] batch_max = 1`). Ratios are to
raw LangGraph with `durability="sync"`, the guarantee cortexd keeps, measured in the same round.

    python bench/durability.py [--runs 1000] [--clients 20] [--rounds 3]
"""

from __future__ import annotations

import statistics
from typing import Any

from common import arguments, daemon, emit, linear_graph, raw_langgraph_runs, run, submit_and_wait

RAW_MODES = ("sync", "async", "exit")
CORTEXD_BATCHING = {"group_commit": 256, "one_commit_per_write": 1}


def cortexd_seconds(spec: dict[str, Any], runs: int, clients: int, batch_max: int) -> float:
    with daemon(
        execution={"max_concurrent_runs": clients}, storage_extra={"batch_max": batch_max}
    ) as process:
        status, _ = process.request("POST", "/api/projects/bench/workflows/graphs", spec)
        assert status == 201
        return run(submit_and_wait(process, spec["id"], runs, clients))


def main() -> None:
    args = arguments(runs=1000)
    spec = linear_graph("three", 3)
    ratios: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        seconds: dict[str, float] = {}
        for mode in RAW_MODES:
            seconds[f"raw_langgraph_{mode}"] = run(
                raw_langgraph_runs(spec, args.runs, args.clients, durability=mode)
            )
        for name, batch_max in CORTEXD_BATCHING.items():
            seconds[f"cortexd_{name}"] = cortexd_seconds(spec, args.runs, args.clients, batch_max)
        baseline = seconds["raw_langgraph_sync"]
        for name, value in seconds.items():
            ratios.setdefault(name, []).append(baseline / value)
    emit(
        {
            "benchmark": "durability",
            "runs": args.runs,
            "clients": args.clients,
            "rounds": args.rounds,
            # Throughput relative to raw LangGraph with durability="sync" (> 1: faster).
            "throughput_ratio_to_raw_sync": {
                name: round(statistics.median(values), 3) for name, values in ratios.items()
            },
            "ratio_of_each_round": {
                name: [round(v, 3) for v in values] for name, values in ratios.items()
            },
        }
    )


if __name__ == "__main__":
    main()
