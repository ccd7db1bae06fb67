"""Waiting without a slot (DESIGN §11) across `kill -9`, with a real daemon: runs parked on
timers and a parent parked on its child survive the kill, wake after the restart, and no
completed node runs again. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import signal
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support.process import DaemonProcess, until
from tests.support.stores import run_sql

pytestmark = pytest.mark.e2e
P = "/api/projects/acme/workflows"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    if request.param == "postgres":
        return {"url": request.getfixturevalue("postgres_url")}
    return {"path": str(tmp_path / "waits.db")}


@pytest.fixture
def daemon(tmp_path: Path, storage: dict[str, str]) -> Iterator[DaemonProcess]:
    process = DaemonProcess(
        tmp_path,
        storage=storage,
        # Fewer slots than runs: only parked runs can all be waiting at once.
        execution={"max_concurrent_runs": 4, "park_after_s": 0.5, "lease_s": 3},
    )
    yield process
    process.stop()


def graph(graph_id: str, *nodes: dict[str, Any]) -> dict[str, Any]:
    full = [{"id": f"n{i}", "x": i * 100.0, "y": 0.0, **n} for i, n in enumerate(nodes, 1)]
    edges = [{"source": f"n{i}", "target": f"n{i + 1}"} for i in range(1, len(nodes))]
    return {"id": graph_id, "name": graph_id, "nodes": full, "edges": edges}


def sql(storage: dict[str, str], query: str, *params: Any) -> list[tuple[Any, ...]]:
    return run_sql(storage, query, params)


def completions(storage: dict[str, str]) -> Counter[tuple[str, str]]:
    rows = sql(storage, "SELECT body FROM events WHERE type = 'workflow.node_state.updated'")
    done: Counter[tuple[str, str]] = Counter()
    for (body,) in rows:
        event = json.loads(body)
        if event["nodeState"]["status"] == "completed":
            done[(event["run_id"], event["nodeState"]["node_id"])] += 1
    return done


def statuses(daemon: DaemonProcess, run_ids: list[str]) -> Counter[str]:
    return Counter(daemon.request("GET", f"{P}/runs/{r}")[1]["status"] for r in run_ids)


def test_a_hundred_runs_parked_on_timers_survive_kill_9_and_wake_on_time(
    daemon: DaemonProcess, storage: dict[str, str]
) -> None:
    daemon.start()
    spec = graph("timed", {"type": "passthrough"}, {"type": "delay", "config": {"seconds": 8}})
    assert daemon.request("POST", f"{P}/graphs", spec)[0] == 201
    run_ids = []
    for i in range(100):
        status, run = daemon.request(
            "POST", f"{P}/runs", {"workflow_id": "timed", "input": {"i": i}}
        )
        assert status == 201, run
        run_ids.append(run["id"])
    until(
        lambda: sql(storage, "SELECT COUNT(*) FROM runs WHERE wake_at IS NOT NULL")[0][0] == 100,
        timeout=120,
        what="all 100 parked with 4 slots",
    )
    untils = {
        run_id: datetime.fromisoformat(
            daemon.request("GET", f"{P}/runs/{run_id}/status")[1]["waiting_for"]["until"]
        )
        for run_id in run_ids
    }
    daemon.signal(signal.SIGKILL)
    daemon.wait(10)
    daemon.start()
    until(lambda: statuses(daemon, run_ids) == Counter({"completed": 100}), timeout=180)
    done = completions(storage)
    assert all(done[(r, "n1")] == 1 and done[(r, "n2")] == 1 for r in run_ids), "a node ran twice"
    # None woke early: each delay completed at or after its time.
    for run_id in run_ids:
        states = daemon.request("GET", f"{P}/runs/{run_id}/status")[1]["node_states"]
        finished = datetime.fromisoformat(states[1]["completed_at"].replace("Z", "+00:00"))
        assert finished >= untils[run_id], (run_id, finished, untils[run_id])


def test_a_parent_waiting_on_its_child_survives_kill_9(
    daemon: DaemonProcess, storage: dict[str, str]
) -> None:
    daemon.start()
    child = graph(
        "child",
        {"type": "passthrough"},
        {"type": "delay", "config": {"seconds": 4}},
        {"type": "passthrough"},
    )
    parent = graph(
        "parent",
        {"type": "passthrough"},
        {"type": "subworkflow", "config": {"workflow_id": "child"}},
        {"type": "passthrough"},
    )
    for spec in (child, parent):
        assert daemon.request("POST", f"{P}/graphs", spec)[0] == 201
    status, run = daemon.request("POST", f"{P}/runs", {"workflow_id": "parent"})
    assert status == 201
    parent_id = run["id"]

    def both_parked() -> bool:
        rows = sql(storage, "SELECT id FROM runs WHERE wake_at IS NOT NULL")
        return len(rows) == 2

    until(both_parked, timeout=60, what="parent and child parked")
    [(child_id,)] = sql(storage, "SELECT id FROM runs WHERE parent_run_id = ?", parent_id)
    daemon.signal(signal.SIGKILL)
    daemon.wait(10)
    daemon.start()
    until(
        lambda: statuses(daemon, [parent_id, child_id]) == Counter({"completed": 2}),
        timeout=120,
        what="both completed after the restart",
    )
    done = completions(storage)
    for run_id in (parent_id, child_id):
        for node in ("n1", "n2", "n3"):
            assert done[(run_id, node)] == 1, (run_id, node, done[(run_id, node)])
    output = daemon.request("GET", f"{P}/runs/{parent_id}")[1]["output"]
    assert output["outputs"]["n2"]["outputs"]["n3"]["node_id"] == "n3"
