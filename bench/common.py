"""Shared pieces of the benchmarks: the daemon as a subprocess, raw LangGraph baselines."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import aiosqlite
import uvloop
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import END, START, StateGraph
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.postgres import Server, find_server  # noqa: E402
from tests.support.process import DaemonProcess  # noqa: E402

__all__ = ["DaemonProcess"]
T = TypeVar("T")

# The store every daemon and baseline of this run uses: `--backend sqlite|postgres` (taken out of
# sys.argv by `choose_backend`). PostgreSQL: the server tests use (tests/support/postgres.py:
# CORTEXD_TEST_POSTGRES_URL, else 127.0.0.1:5432), a fresh database for each daemon set and
# each baseline, dropped after it.
BACKEND = "sqlite"
_SERVER: Server | None = None


def choose_backend() -> str:
    global BACKEND
    if "--backend" in sys.argv:
        at = sys.argv.index("--backend")
        BACKEND = sys.argv[at + 1]
        del sys.argv[at : at + 2]
    if BACKEND not in ("sqlite", "postgres"):
        raise SystemExit(f"--backend: sqlite or postgres, not {BACKEND!r}")
    return BACKEND


def _server() -> Server:
    global _SERVER
    if _SERVER is None:
        server, why = find_server()
        if server is None:
            raise SystemExit(f"--backend postgres: {why}")
        _SERVER = server
    return _SERVER


@contextmanager
def fresh_store(folder: Path) -> Iterator[dict[str, str]]:
    """The `[storage]` section of a new, empty store of this run's backend."""
    if BACKEND == "postgres":
        with _server().database() as url:
            yield {"url": url}
    else:
        yield {"path": str(folder / "shared.db")}


def linear_graph(graph_id: str, count: int, node_type: str = "passthrough") -> dict[str, Any]:
    nodes = [{"id": f"n{i}", "type": node_type} for i in range(count)]
    edges = [{"source": f"n{i}", "target": f"n{i + 1}"} for i in range(count - 1)]
    return {"id": graph_id, "name": graph_id, "nodes": nodes, "edges": edges}


def fan_graph(graph_id: str, width: int) -> dict[str, Any]:
    nodes = [{"id": "start"}, *({"id": f"b{i}"} for i in range(width)), {"id": "join"}]
    edges = [{"source": "start", "target": f"b{i}"} for i in range(width)]
    edges += [{"source": f"b{i}", "target": "join"} for i in range(width)]
    return {"id": graph_id, "name": graph_id, "nodes": nodes, "edges": edges}


def raw_graph(spec: dict[str, Any]) -> StateGraph[Any, Any, Any, Any]:
    """The same graph on plain LangGraph: no-op async nodes, the same reducer and joins."""
    from core.compiler import RunState

    builder: StateGraph[Any, Any, Any, Any] = StateGraph(RunState)
    incoming: dict[str, int] = {}
    for edge in spec["edges"]:
        incoming[edge["target"]] = incoming.get(edge["target"], 0) + 1
    for node in spec["nodes"]:

        async def run(state: Any, node_id: str = node["id"]) -> dict[str, Any]:
            return {"outputs": {node_id: {"node_id": node_id, "input": state["input"]}}}

        builder.add_node(node["id"], run, defer=incoming.get(node["id"], 0) > 1)
    builder.add_edge(START, spec["nodes"][0]["id"])
    targets = {e["source"] for e in spec["edges"]}
    for edge in spec["edges"]:
        builder.add_edge(edge["source"], edge["target"])
    for node in spec["nodes"]:
        if node["id"] not in targets:
            builder.add_edge(node["id"], END)
    return builder


async def raw_langgraph_runs(
    spec: dict[str, Any], runs: int, concurrency: int, durability: str = "sync"
) -> float:
    """Seconds for `runs` runs at `concurrency` on AsyncSqliteSaver (or, with `--backend
    postgres`, AsyncPostgresSaver on a pool of 10); durable ("sync") unless another LangGraph
    durability mode is asked for."""
    if BACKEND == "postgres":
        return await _raw_postgres_runs(spec, runs, concurrency, durability)
    with tempfile.TemporaryDirectory() as tmp:
        conn = await aiosqlite.connect(Path(tmp) / "raw.db")
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=NORMAL")
        saver = AsyncSqliteSaver(conn)
        await saver.setup()
        elapsed = await _timed_runs(spec, saver, runs, concurrency, durability)
        await conn.close()
        return elapsed


async def _timed_runs(
    spec: dict[str, Any], saver: Any, runs: int, concurrency: int, durability: str
) -> float:
    """Seconds for `runs` runs of the raw graph on `saver`, `concurrency` at a time."""
    graph = raw_graph(spec).compile(checkpointer=saver)
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            config: Any = {"configurable": {"thread_id": f"t{i}"}, "recursion_limit": 100}
            await graph.ainvoke(
                {"input": {"i": i}, "outputs": {}, "data": {}},
                config,
                durability=durability,  # type: ignore[arg-type]
            )

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(runs)))
    return time.perf_counter() - started


async def _raw_postgres_runs(
    spec: dict[str, Any], runs: int, concurrency: int, durability: str
) -> float:
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool

    with _server().database() as url:
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            url,
            min_size=10,
            max_size=10,
            kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
            open=False,
        )
        await pool.open()
        try:
            saver = AsyncPostgresSaver(pool)  # type: ignore[arg-type]
            await saver.setup()
            return await _timed_runs(spec, saver, runs, concurrency, durability)
        finally:
            await pool.close()


@contextmanager
def daemon(
    storage_extra: dict[str, Any] | None = None, **sections: dict[str, Any]
) -> Iterator[DaemonProcess]:
    """A daemon on a fresh store, logging at warning; `storage_extra`: more [storage] keys."""
    with tempfile.TemporaryDirectory() as tmp, fresh_store(Path(tmp)) as storage:
        process = DaemonProcess(
            Path(tmp),
            logging={"level": "warning"},
            storage={**storage, **(storage_extra or {})},
            **sections,
        )
        process.start()
        try:
            yield process
        finally:
            process.stop()


@contextmanager
def daemons(count: int, **sections: dict[str, Any]) -> Iterator[list[DaemonProcess]]:
    """`count` daemons on one fresh store (DESIGN §8), logging at warning."""
    with tempfile.TemporaryDirectory() as tmp, fresh_store(Path(tmp)) as storage:
        made = []
        for n in range(count):
            workdir = Path(tmp) / f"d{n}"
            workdir.mkdir()
            made.append(
                DaemonProcess(
                    workdir,
                    logging={"level": "warning"},
                    storage=storage,
                    **sections,
                )
            )
        try:
            for process in made:
                process.start()
            yield made
        finally:
            for process in made:
                process.stop()


async def submit_and_wait(
    process: DaemonProcess | list[DaemonProcess],
    graph_id: str,
    runs: int,
    clients: int,
    project: str = "bench",
) -> float:
    """Seconds from the first submission to the last completion, over HTTP and WebSocket.
    With several daemons, the clients are spread over them and the WebSocket is on the first
    (it gets every daemon's events)."""
    processes = process if isinstance(process, list) else [process]
    bases = [f"{p.url}/api/projects/{project}" for p in processes]
    connector = aiohttp.TCPConnector(limit=0)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.ws_connect(f"{bases[0]}/ws") as ws,
    ):
        counter = iter(range(runs))
        started = time.perf_counter()

        async def client(base: str) -> None:
            for i in counter:
                body = {"workflow_id": graph_id, "input": {"i": i}}
                async with session.post(f"{base}/workflows/runs", json=body) as response:
                    assert response.status == 201, await response.text()

        submitters = asyncio.gather(*(client(bases[n % len(bases)]) for n in range(clients)))
        done = 0
        async for message in ws:
            event = json.loads(message.data)
            if event.get("type") in ("workflow.run.completed", "workflow.run.failed"):
                assert event["type"] == "workflow.run.completed", event
                done += 1
                if done == runs:
                    break
        elapsed = time.perf_counter() - started
        await submitters
    return elapsed


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run the benchmark's side (raw LangGraph, the clients) on uvloop, the loop cortexd runs
    on by default: so the comparison measures cortexd, not the choice of event loop."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def emit(result: dict[str, Any]) -> None:
    result["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    print(json.dumps(result, indent=2))


@dataclass(frozen=True)
class Round:
    raw_s: float
    cortexd_s: float
    commits: float
    writes: float
    raw_cpu_s: float  # the benchmark process running raw LangGraph (all its threads)
    cortexd_cpu_s: float  # the daemon process (all its threads), from the first submission

    @property
    def ratio(self) -> float:
        """How many times faster cortexd was than raw LangGraph in this round (> 1: faster)."""
        return self.raw_s / self.cortexd_s

    @property
    def cpu_ratio(self) -> float:
        """Raw LangGraph's CPU time over cortexd's for the same runs (> 1: cortexd used less).
        Steadier than wall time on a shared machine, where a neighbour takes the cores."""
        return self.raw_cpu_s / self.cortexd_cpu_s


@dataclass(frozen=True)
class Comparison:
    """Rounds of raw LangGraph then cortexd, interleaved so that both see the same noise of a
    shared machine; the median round (by ratio) is the one reported."""

    rounds: list[Round]

    @property
    def median(self) -> Round:
        ranked = sorted(self.rounds, key=lambda r: r.ratio)
        return ranked[len(ranked) // 2]

    @property
    def median_cpu_ratio(self) -> float:
        return statistics.median(r.cpu_ratio for r in self.rounds)

    def summary(self) -> dict[str, Any]:
        return {
            "rounds": len(self.rounds),
            "ratio_of_each_round": [round(r.ratio, 3) for r in self.rounds],
            "cpu_ratio_of_each_round": [round(r.cpu_ratio, 3) for r in self.rounds],
        }


def arguments(runs: int, *, clients: bool = True, rounds: bool = True) -> argparse.Namespace:
    """The options every benchmark shares: `--runs`, and `--clients`, `--rounds` where used."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=runs)
    if clients:
        parser.add_argument("--clients", type=int, default=20)
    if rounds:
        parser.add_argument("--rounds", type=int, default=3)
    return parser.parse_args()


def runs_per_s(comparison: Comparison, runs: int) -> dict[str, Any]:
    """The throughput fields of a comparison: runs/s of the median round, and the ratios."""
    median = comparison.median
    return {
        "raw_langgraph_runs_per_s": round(runs / median.raw_s, 1),
        "cortexd_runs_per_s": round(runs / median.cortexd_s, 1),
        "ratio": round(median.ratio, 3),
        "cpu_ratio": round(comparison.median_cpu_ratio, 3),
        **comparison.summary(),
    }


def compare(spec: dict[str, Any], runs: int, clients: int, rounds: int = 3) -> Comparison:
    """The same graph, `runs` times at `clients` concurrent: raw LangGraph, then cortexd (a
    fresh daemon and database each round), `rounds` times."""
    results = []
    for _ in range(rounds):
        before = own_cpu_s()
        raw_s = run(raw_langgraph_runs(spec, runs, clients))
        raw_cpu_s = own_cpu_s() - before
        with daemon(execution={"max_concurrent_runs": clients}) as process:
            status, _ = process.request("POST", "/api/projects/bench/workflows/graphs", spec)
            assert status == 201
            assert process.proc is not None
            before = process_cpu_s(process.proc.pid)
            cortexd_s = run(submit_and_wait(process, spec["id"], runs, clients))
            cortexd_cpu_s = process_cpu_s(process.proc.pid) - before
            store = store_counters(process)
        results.append(
            Round(raw_s, cortexd_s, store["commits"], store["writes"], raw_cpu_s, cortexd_cpu_s)
        )
    return Comparison(results)


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def store_counters(process: DaemonProcess) -> dict[str, float]:
    """The writer's commits and writes so far, from /metrics (how much group commit batched)."""
    with urllib.request.urlopen(f"{process.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    return {
        "commits": samples["cortexd_store_commits_total"],
        "writes": samples["cortexd_store_writes_total"],
    }


CORTEXD_EXE = str(Path(sys.executable).parent / "cortexd")


@dataclass(frozen=True)
class Config:
    path: Path
    url: str


def write_config(tmp: Path, sections: dict[str, dict[str, Any]]) -> Config:
    """A config file for a daemon on a free loopback port with its database in `tmp`."""
    process = DaemonProcess(tmp, logging={"level": "warning"}, **sections)
    return Config(process.config, process.url)
