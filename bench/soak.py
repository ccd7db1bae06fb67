"""Soak: a mixed load on real daemons killed with SIGKILL and restarted every ~30 s; at the end
the invariants of bench/soak_check.py, and the figures, as JSON (exit status 1 on a violation).

    python bench/soak.py --minutes 20 [--kill-every 30] [--daemons 1] [--clients 6]
                         [--watchers 2] [--followers 2] [--seed 1] [--backend sqlite|postgres]

The load (create, pause, resume, cancel, execute, answers to input, status reads) goes to
whichever daemon answers; a request meeting a daemon that is down is tried again on the next
(bounded, counted). WebSocket clients connect, drop and reconnect with `since`, also across
kills. When the time is up the load stops, the daemons finish every run (waiting runs are
answered, stragglers cancelled), the clients catch up, and the store, the API and the tally of
node executions written outside the daemons (bench/soak_nodes.py) are checked.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import aiohttp
from common import ROOT, choose_backend, emit, fresh_store, run
from soak_check import Evidence, FinalRun, check, parse_tally, summarize
from soak_clients import Api, Follower, P, Requests, Sockets, Watcher, World, load
from soak_fleet import Fleet, drain, log_seqs

from tests.support.process import DaemonProcess

JSON = dict[str, Any]
CATCH_UP_S = 60.0
FINISHED = ("completed", "failed", "cancelled")
COMMANDS = ("create", "pause", "resume", "answer", "cancel", "execute")


def graphs(tally: str, markers: str, subworkflow: bool = True) -> list[JSON]:
    """Graphs mixing the node types: lines, a fan-out and join, human input with a branch,
    a failure (retried by `execute`), a retry policy, a built-in delay long enough to park
    its run (`[execution] park_after_s`, 5 s), and a sub-workflow (a child run of `line`)."""

    def step(node_id: str, seconds: float, **extra: Any) -> JSON:
        config = {"tally": tally, "seconds": seconds, **extra}
        return {"id": node_id, "type": "soak_step", "config": config}

    def edges(*pairs: tuple[str, str], **conditions: str) -> list[JSON]:
        made = [{"source": a, "target": b} for a, b in pairs]
        for made_edge in made:
            condition = conditions.get(made_edge["target"])
            if condition:
                made_edge["condition"] = condition
        return made

    ask = {"id": "ask", "type": "approval", "config": {"prompt": "Ship?", "choices": ["yes", "no"]}}
    made = [
        {
            "id": "line",
            "nodes": [step("s_a", 0.2), step("s_b", 0.4), step("s_c", 0.2)],
            "edges": edges(("s_a", "s_b"), ("s_b", "s_c")),
        },
        {
            "id": "fan",
            "nodes": [
                step("s_start", 0.1),
                step("s_b1", 0.3),
                step("s_b2", 0.7),
                step("s_b3", 0.1),
                step("s_join", 0.2),
            ],
            "edges": edges(
                ("s_start", "s_b1"),
                ("s_start", "s_b2"),
                ("s_start", "s_b3"),
                ("s_b1", "s_join"),
                ("s_b2", "s_join"),
                ("s_b3", "s_join"),
            ),
        },
        {
            "id": "ask",
            "nodes": [step("s_a", 0.2), ask, step("s_yes", 0.3), step("s_no", 0.1)],
            "edges": edges(
                ("s_a", "ask"),
                ("ask", "s_yes"),
                ("ask", "s_no"),
                s_yes="outputs.ask.value == 'yes'",
                s_no="outputs.ask.value == 'no'",
            ),
        },
        {
            "id": "flaky",
            "nodes": [step("s_a", 0.2), step("s_f", 0.2, fail_once=markers), step("s_b", 0.2)],
            "edges": edges(("s_a", "s_f"), ("s_f", "s_b")),
        },
        {
            "id": "retried",
            "nodes": [
                step("s_a", 0.1),
                {**step("s_f", 0.2, fail_once=markers), "retry": {"max_attempts": 2}},
                step("s_b", 0.1),
            ],
            "edges": edges(("s_a", "s_f"), ("s_f", "s_b")),
        },
        {
            "id": "slow",
            "nodes": [
                step("s_a", 0.3),
                {"id": "wait", "type": "delay", "config": {"seconds": 6}},
                step("s_b", 0.3),
            ],
            "edges": edges(("s_a", "wait"), ("wait", "s_b")),
        },
        {
            "id": "parent",
            "nodes": [
                step("s_a", 0.1),
                {"id": "child", "type": "subworkflow", "config": {"workflow_id": "line"}},
                step("s_b", 0.1),
            ],
            "edges": edges(("s_a", "child"), ("child", "s_b")),
        },
    ]
    return made if subworkflow else [g for g in made if g["id"] != "parent"]


def clock() -> tuple[int, int]:
    """CLOCK_MONOTONIC (the tally's clock) and how far the wall clock (the log's) is ahead."""
    mono = time.monotonic_ns()
    return mono, time.time_ns() - mono


def final_run(item: JSON) -> FinalRun:
    """A run as the checks see it; a completed parent also with the gen its child ran on."""
    run_input = item.get("input") or {}
    child_gen = None
    child = ((item.get("output") or {}).get("outputs") or {}).get("child")
    if item["status"] == "completed" and isinstance(child, dict):
        gens = {v["gen"] for v in (child.get("outputs") or {}).values() if "gen" in v}
        child_gen = max(gens) if gens else None
    return FinalRun(
        item["status"], item.get("owner"), run_input.get("key"), run_input.get("gen"), child_gen
    )


async def soak(args: argparse.Namespace, fleet: Fleet, storage: dict[str, str], tmp: Path) -> JSON:
    rng = random.Random(args.seed)
    tally_path, markers = tmp / "tally.log", tmp / "markers"
    markers.mkdir()
    specs = graphs(str(tally_path), str(markers), not args.no_subworkflow)
    world = World([g["id"] for g in specs], rng)
    counts = Requests()
    sockets = Sockets()
    urls = [p.url for p in fleet.daemons]
    started = time.monotonic()
    until = started + args.minutes * 60
    clock_at_start = clock()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        api = Api(session, urls, counts)
        for spec in specs:
            answer = await api.call(
                "graph", "POST", f"{P}/workflows/graphs", {"name": spec["id"], **spec}
            )
            assert answer is not None, spec
            assert answer[0] == 201, answer
        stop = asyncio.Event()
        clients = [Watcher(f"watcher{i}", urls, world, sockets) for i in range(args.watchers)]
        clients += [Follower(f"follower{i}", urls, world, sockets) for i in range(args.followers)]
        async with asyncio.TaskGroup() as group:
            readers = [
                group.create_task(c.run(session, stop, random.Random(rng.random())))
                for c in clients
            ]
            chaos = group.create_task(
                fleet.chaos(api, until, args.kill_every, random.Random(rng.random()))
            )
            workers = [
                group.create_task(load(api, world, until, args.max_unfinished))
                for _ in range(args.clients)
            ]
            await asyncio.gather(*workers, chaos)
            load_s = time.monotonic() - started
            cancelled_at_end = await drain(api, world)
            final_items = await api.pages(f"{P}/workflows/runs?limit=1000")
            stored: dict[str, Any] = {}
            for item in final_items:
                events = await api.pages(f"{P}/workflows/runs/{item['id']}/events?limit=10000")
                assert len(events) < 10_000, "a run with more events than one page"
                stored[item["id"]] = [summarize(e) for e in events]
            last_of_run = {r: (e[-1].seq if e else 0) for r, e in stored.items()}
            seqs = log_seqs(storage)
            deadline = time.monotonic() + CATCH_UP_S
            while time.monotonic() < deadline:
                caught = [
                    c.caught_up(last_of_run) if isinstance(c, Follower) else c.last >= seqs[-1]
                    for c in clients
                ]
                if all(caught):
                    break
                await asyncio.sleep(0.2)
            stop.set()
            await asyncio.gather(*readers)
        live = await asyncio.to_thread(fleet.instances)
    evidence = Evidence(
        log_seqs=seqs,
        stored=stored,
        acknowledged=set(world.runs),
        keys_sent=world.keys_sent,
        final={item["id"]: final_run(item) for item in final_items},
        live_owners=live,
        tally=parse_tally(tally_path.read_text() if tally_path.exists() else ""),
        tally_nodes={n["id"] for g in specs for n in g["nodes"] if n["type"] == "soak_step"},
        deaths=fleet.deaths,
        receipts=[c.receipt for c in clients],
        acked=world.acked,
        clock=(clock_at_start, clock()),
    )
    report = check(evidence)
    for exit_ in fleet.exits:
        report.add("daemon_exited_by_itself", **exit_)
    for orphan in fleet.orphans:
        report.add("running_under_a_dead_owner", **orphan)
    figures = report.figures
    acknowledged_keys = {world.runs[r].key for r in world.runs}
    return {
        "benchmark": "soak",
        "backend": args.backend,
        "command": " ".join(["python", "bench/soak.py", *args.argv]),
        "minutes": args.minutes,
        "kill_every_s": args.kill_every,
        "daemons": len(fleet.daemons),
        "seed": args.seed,
        "runs": {
            "created_acknowledged": len(world.runs),
            "created_unacknowledged": sum(
                1 for f in evidence.final.values() if f.key not in acknowledged_keys
            ),
            "stored": len(final_items),
            "of_which_children": sum(1 for i in final_items if i.get("parent_run_id")),
            "creates_answered_by_their_idempotency_key": world.replayed,
            "done_by_final_status": {
                s: figures[f"final_{s}"] for s in FINISHED if figures[f"final_{s}"]
            },
            "cancelled_at_the_end": cancelled_at_end,
        },
        "runs_done": sum(figures[f"final_{s}"] for s in FINISHED),
        "kills_survived": fleet.kills,
        "restarts": fleet.restarts,
        "daemon_processes": len(fleet.pids),
        "commands_issued": {
            kind: sum(v for k, v in c.items() if k != "retried")
            for kind, c in counts.counts.items()
            if kind in COMMANDS
        },
        "requests_by_kind": counts.summary(),
        "orphan_samples": fleet.samples,
        "websocket": {
            "clients": len(clients),
            "connections": sockets.connections,
            "failed_connects": sockets.failed_connects,
            "dropped_by_client": sockets.dropped_by_client,
            "dropped_by_server": sockets.dropped_by_server,
        },
        "checked": {
            k: figures[k]
            for k in (
                "events_checked",
                "frames_checked",
                "executions_checked",
                "commands_checked",
                "reruns_of_killed_nodes",
                "reruns_after_kill_before_commit",
                "tolerated_cancel_overlaps",
            )
        },
        "violations": len(report.violations),
        "violations_by_kind": dict(Counter(v["kind"] for v in report.violations)),
        "violation_list": report.violations[:100],
        "load_s": round(load_s, 1),
        "elapsed_s": round(time.monotonic() - started, 1),
    }


def main() -> None:
    argv = list(sys.argv[1:])
    backend = choose_backend()
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--kill-every", type=float, default=30.0)
    parser.add_argument("--daemons", type=int, default=1)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--watchers", type=int, default=2)
    parser.add_argument("--followers", type=int, default=2)
    parser.add_argument("--max-unfinished", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    # A fresh start of a parent re-executes its old child run with the child's old input: see
    # docs/performance.md, "Soak". Without the graph, the soak checks the rest.
    parser.add_argument("--no-subworkflow", action="store_true", help="leave out the parent graph")
    parser.add_argument("--keep", help="a directory to keep the stores, tally and logs in")
    args = parser.parse_args()
    args.argv = argv
    args.backend = backend
    with ExitStack() as stack:
        tmp = (
            Path(args.keep)
            if args.keep
            else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        )
        tmp.mkdir(parents=True, exist_ok=True)
        storage = stack.enter_context(fresh_store(tmp))
        daemons = []
        for n in range(args.daemons):
            workdir = tmp / f"d{n}"
            workdir.mkdir()
            process = DaemonProcess(
                workdir,
                logging={"level": "warning"},
                storage=storage,
                execution={"max_concurrent_runs": 8, "shutdown_grace_s": 5},
                plugins={"modules": ["bench.soak_nodes"]},
            )
            process.env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{ROOT / 'bench'}"
            daemons.append(process)
        fleet = Fleet(daemons)
        try:
            for process in daemons:
                fleet.start(process)
            result = run(soak(args, fleet, storage, tmp))
        finally:
            for process in daemons:
                process.stop()
    emit(result)
    raise SystemExit(1 if result["violations"] else 0)


if __name__ == "__main__":
    main()
