"""Throughput: 1,000 runs of a 3-node passthrough graph, submitted over HTTP by 20 concurrent
clients until all completed, versus raw LangGraph + AsyncSqliteSaver (durability="sync", WAL,
synchronous=NORMAL) running the same graph 1,000 times at 20 concurrent, in-process.

With `--daemons N` (N > 1), each round also runs N daemons on one database file, the clients
spread over them: the scaling ratio is N daemons' throughput over one daemon's, in the same
round.

With `--backend postgres`, every store is a fresh PostgreSQL database on the local server, and
the baseline is raw LangGraph + AsyncPostgresSaver (a pool of 10, durability="sync") on the
same server: the daemons, the benchmark's clients and the server share this machine's cores.

    python bench/throughput.py [--runs 1000] [--clients 20] [--rounds 3] [--daemons 2]
                               [--backend sqlite|postgres]
"""

from __future__ import annotations

import statistics
import sys

from common import (
    arguments,
    choose_backend,
    compare,
    daemons,
    emit,
    linear_graph,
    process_cpu_s,
    run,
    runs_per_s,
    submit_and_wait,
)


def several(spec: dict[str, object], count: int, runs: int, clients: int) -> tuple[float, float]:
    """Seconds for the runs on `count` daemons on one store, and their CPU seconds in all."""
    with daemons(count, execution={"max_concurrent_runs": clients}) as processes:
        status, _ = processes[0].request("POST", "/api/projects/bench/workflows/graphs", spec)
        assert status == 201
        pids = [p.proc.pid for p in processes if p.proc is not None]
        before = sum(process_cpu_s(pid) for pid in pids)
        seconds = run(submit_and_wait(processes, str(spec["id"]), runs, clients))
        cpu = sum(process_cpu_s(pid) for pid in pids) - before
    return seconds, cpu


def main() -> None:
    backend = choose_backend()
    count = 1
    if "--daemons" in sys.argv:
        at = sys.argv.index("--daemons")
        count = int(sys.argv[at + 1])
        del sys.argv[at : at + 2]
    args = arguments(runs=1000)
    spec = linear_graph("three", 3)
    comparison = compare(spec, args.runs, args.clients, args.rounds)
    median = comparison.median
    result = {
        "benchmark": "throughput",
        "backend": backend,
        "runs": args.runs,
        "clients": args.clients,
        **runs_per_s(comparison, args.runs),
        "cortexd_commits_per_run": round(median.commits / args.runs, 2),
        "cortexd_writes_per_commit": round(median.writes / median.commits, 2),
    }
    if count > 1:
        # Interleaved with the single-daemon rounds above: one more round of each, then N.
        scaling = []
        for _ in range(args.rounds):
            one = compare(spec, args.runs, args.clients, 1).rounds[0]
            seconds, cpu = several(spec, count, args.runs, args.clients)
            scaling.append((one.cortexd_s / seconds, one.cortexd_s, seconds, cpu))
        ranked = sorted(scaling)
        middle = ranked[len(ranked) // 2]
        result["daemons"] = {
            "count": count,
            "runs_per_s": round(args.runs / middle[2], 1),
            "one_daemon_runs_per_s": round(args.runs / middle[1], 1),
            "scaling_over_one_daemon": round(middle[0], 3),
            "scaling_of_each_round": [round(s[0], 3) for s in scaling],
            "cpu_s_per_run_all_daemons": round(
                statistics.median(s[3] for s in scaling) / args.runs, 5
            ),
        }
    emit(result)


if __name__ == "__main__":
    main()
