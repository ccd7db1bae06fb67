"""Crash recovery and graceful stop of the real daemon process, with real signals."""

from __future__ import annotations

import itertools
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.process import DaemonProcess

pytestmark = pytest.mark.e2e
P = "/api/projects/acme/workflows"
NODES = ("n1", "n2", "n3", "n4", "n5")


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    process = DaemonProcess(
        tmp_path,
        execution={"max_concurrent_runs": 30, "shutdown_grace_s": 5},
    )
    yield process
    process.stop()


def five_delays(seconds: float) -> dict[str, Any]:
    nodes = [
        {
            "id": n,
            "label": n,
            "x": i * 100.0,
            "y": 0.0,
            "type": "delay",
            "config": {"seconds": seconds},
        }
        for i, n in enumerate(NODES)
    ]
    pairs = enumerate(itertools.pairwise(NODES))
    edges = [{"id": f"e{i}", "source": a, "target": b} for i, (a, b) in pairs]
    return {"id": "five", "name": "five", "nodes": nodes, "edges": edges}


def until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.05)


def start_runs(daemon: DaemonProcess, count: int) -> list[str]:
    status, _ = daemon.request("POST", f"{P}/graphs", five_delays(0.25))
    assert status == 201
    run_ids = []
    for i in range(count):
        status, run = daemon.request(
            "POST", f"{P}/runs", {"workflow_id": "five", "input": {"i": i}}
        )
        assert status == 201
        run_ids.append(run["id"])
    return run_ids


def node_events(db: Path) -> list[tuple[int, str, str, str]]:
    """(seq, run_id, node_id, node status) of every node-state event, straight from the file."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT seq, run_id, json_extract(body, '$.nodeState.node_id'), "
            "json_extract(body, '$.nodeState.status') FROM events "
            "WHERE type = 'workflow.node_state.updated' ORDER BY seq"
        ).fetchall()
    return [tuple(r) for r in rows]


def all_seqs(db: Path) -> list[int]:
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT seq FROM events ORDER BY seq")]


def statuses(daemon: DaemonProcess, run_ids: list[str]) -> Counter[str]:
    return Counter(daemon.request("GET", f"{P}/runs/{r}")[1]["status"] for r in run_ids)


def test_kill_9_with_runs_in_flight_loses_nothing_and_repeats_no_completed_node(
    daemon: DaemonProcess,
) -> None:
    daemon.start()
    run_ids = start_runs(daemon, 24)
    # Kill once every run is under way and some nodes have completed.
    until(lambda: len({r for _, r, _, s in node_events(daemon.db) if s == "completed"}) >= 20)
    completed_before = {(r, n) for _, r, n, s in node_events(daemon.db) if s == "completed"}
    daemon.signal(signal.SIGKILL)
    assert daemon.wait(10) == -signal.SIGKILL

    daemon.start()
    until(lambda: statuses(daemon, run_ids)["completed"] == len(run_ids), timeout=120)

    events = node_events(daemon.db)
    completions = Counter((r, n) for _, r, n, s in events if s == "completed")
    for run_id in run_ids:
        for node in NODES:
            assert completions[(run_id, node)] == 1, (run_id, node, "completed twice or never")
        _, run = daemon.request("GET", f"{P}/runs/{run_id}")
        assert set(run["output"]["outputs"]) == set(NODES)
        status = daemon.request("GET", f"{P}/runs/{run_id}/status")[1]
        attempts = {s["node_id"]: s["attempts"] for s in status["node_states"]}
        for node in NODES:
            # Completed before the kill: never run again. In flight: at least once more.
            expected = {1} if (run_id, node) in completed_before else {1, 2}
            assert attempts[node] in expected, (run_id, node, attempts[node])

    seqs = all_seqs(daemon.db)
    assert seqs == list(range(1, len(seqs) + 1)), "the event log has a gap"
    assert "recovering_runs" in daemon.log()


def test_sigterm_drains_exits_0_and_the_next_start_finishes_the_runs(
    daemon: DaemonProcess,
) -> None:
    daemon.start()
    run_ids = start_runs(daemon, 5)
    until(lambda: len({r for _, r, _, s in node_events(daemon.db) if s == "running"}) == 5)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(30) == 0
    assert '"stopped"' in daemon.log()

    daemon.start()
    until(lambda: statuses(daemon, run_ids)["completed"] == 5, timeout=60)
    completions = Counter((r, n) for _, r, n, s in node_events(daemon.db) if s == "completed")
    assert all(completions[(r, n)] == 1 for r in run_ids for n in NODES)


def test_a_second_sigterm_exits_at_once_and_nothing_is_lost(tmp_path: Path) -> None:
    # Its 30 s delays are in flight at the signals (not parked).
    daemon = DaemonProcess(tmp_path, execution={"shutdown_grace_s": 60, "park_after_s": 3600})
    daemon.start()
    try:
        status, _ = daemon.request("POST", f"{P}/graphs", five_delays(30))
        assert status == 201
        _, run = daemon.request("POST", f"{P}/runs", {"workflow_id": "five"})
        until(lambda: daemon.request("GET", f"{P}/runs/{run['id']}")[1]["status"] == "running")
        daemon.signal(signal.SIGTERM)
        until(lambda: '"stopping"' in daemon.log(), timeout=10)
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(10) != 0  # not drained: it went at once

        daemon.start()
        _, again = daemon.request("GET", f"{P}/runs/{run['id']}")
        assert again["status"] == "running"  # recovered: under way again
        daemon.request("POST", f"{P}/runs/{run['id']}/cancel")
    finally:
        daemon.stop()


def test_a_plugin_failing_to_start_makes_serve_exit_naming_it(tmp_path: Path) -> None:
    process = DaemonProcess(tmp_path, plugins={"modules": ["tests.support.failing_startup"]})
    process.env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    process.spawn()
    assert process.wait(30) == 3  # exits (nothing left open keeps it alive), not hangs
    log = process.log()
    assert "tests.support.failing_startup" in log
    assert "cannot reach the plugin's database" in log


def one_node(graph_id: str, node_type: str, config: dict[str, Any]) -> dict[str, Any]:
    node = {"id": "n", "label": "n", "x": 0.0, "y": 0.0, "type": node_type, "config": config}
    return {"id": graph_id, "name": graph_id, "nodes": [node], "edges": []}


def run_events(db: Path, run_id: str, kind: str) -> int:
    with sqlite3.connect(db) as conn:
        (count,) = conn.execute(
            "SELECT COUNT(*) FROM events WHERE run_id = ? AND type = ?", (run_id, kind)
        ).fetchone()
    return int(count)


def test_an_acknowledged_answer_survives_kill_9_before_its_run_got_a_slot(
    tmp_path: Path,
) -> None:
    daemon = DaemonProcess(tmp_path, execution={"max_concurrent_runs": 1})
    daemon.start()
    try:
        for graph in (
            one_node("ask", "approval", {"prompt": "Ship it?", "choices": ["yes", "no"]}),
            one_node("slow", "delay", {"seconds": 4}),
        ):
            assert daemon.request("POST", f"{P}/graphs", graph)[0] == 201
        _, asking = daemon.request("POST", f"{P}/runs", {"workflow_id": "ask"})
        asked = f"{P}/runs/{asking['id']}"
        until(lambda: daemon.request("GET", asked)[1]["pause_reason"] == "input_required")
        _, slow = daemon.request("POST", f"{P}/runs", {"workflow_id": "slow"})
        slowed = f"{P}/runs/{slow['id']}"
        until(lambda: daemon.request("GET", slowed)[1]["status"] == "running")

        # Acknowledged, then queued behind the run holding the only slot: not yet executed.
        status, resumed = daemon.request("POST", f"{asked}/resume", {"value": "no"})
        assert (status, resumed["status"]) == (200, "running")
        daemon.signal(signal.SIGKILL)
        assert daemon.wait(10) == -signal.SIGKILL

        daemon.start()

        def settled() -> bool:
            return daemon.request("GET", asked)[1]["status"] in ("completed", "paused", "failed")

        until(settled, timeout=60)
        _, run = daemon.request("GET", asked)
        assert run["status"] == "completed", run  # not asking again: the answer was kept
        assert run["output"]["outputs"]["n"] == {"value": "no"}
        assert run_events(daemon.db, asking["id"], "workflow.run.paused") == 1
        until(lambda: daemon.request("GET", slowed)[1]["status"] == "completed", timeout=60)
        with sqlite3.connect(daemon.db) as conn:
            assert conn.execute("SELECT COUNT(*) FROM run_resumes").fetchone() == (0,)
    finally:
        daemon.stop()
