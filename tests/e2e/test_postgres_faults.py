"""The database goes away under load and comes back (DESIGN §12, issue 14): two daemons on a
private PostgreSQL cluster of this test's own, whose server is killed (no shutdown checkpoint,
every connection cut) while runs are in flight, then started again on the same port."""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import no_postgres
from tests.support.postgres import Server, find_server
from tests.support.process import DaemonProcess, until
from tests.support.stores import run_sql

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]
P = "/api/projects/acme/workflows"
NODES = ("n1", "n2", "n3", "n4", "n5")
RUNS = 16


@pytest.fixture
def private_server() -> Iterator[Server]:
    """A cluster this test may kill: never the server other tests share."""
    server, why = find_server(private_only=True)
    if server is None:
        no_postgres(why)
    try:
        yield server
    finally:
        server.close()


def answers(daemon: DaemonProcess, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    try:
        return daemon.request(method, path, body, timeout=5)
    except OSError:
        return 0, None


def test_a_database_killed_under_load_loses_nothing_and_no_daemon_needs_a_restart(
    tmp_path: Path, private_server: Server
) -> None:
    assert private_server.cluster is not None
    cluster = private_server.cluster
    url = private_server.create_database()
    storage = {"url": url}
    daemons = []
    for name in ("a", "b"):
        workdir = tmp_path / name
        workdir.mkdir()
        daemons.append(
            DaemonProcess(
                workdir,
                storage=storage,
                execution={"max_concurrent_runs": 8, "shutdown_grace_s": 2, "lease_s": 6},
                logging={"format": "json"},
            )
        )
    try:
        for daemon in daemons:
            daemon.start()
        graph = {
            "id": "five",
            "name": "five",
            "nodes": [
                {"id": n, "x": i * 100.0, "y": 0.0, "type": "delay", "config": {"seconds": 0.4}}
                for i, n in enumerate(NODES)
            ],
            "edges": [{"source": x, "target": y} for x, y in itertools.pairwise(NODES)],
        }
        assert daemons[0].request("POST", f"{P}/graphs", graph)[0] == 201
        runs = []
        for i in range(RUNS):
            status, run = daemons[i % 2].request("POST", f"{P}/runs", {"workflow_id": "five"})
            assert status == 201, run
            runs.append(run["id"])

        def completed_nodes() -> int:
            return run_sql(
                storage,
                'SELECT COUNT(*) FROM node_states WHERE body LIKE \'%"status":"completed"%\'',
            )[0][0]

        until(lambda: completed_nodes() >= 8, 60, "some nodes completed")

        cluster.kill()
        for daemon in daemons:
            until(lambda d=daemon: answers(d, "GET", "/readyz")[0] == 503, 30, "not ready")
            status, body = answers(daemon, "POST", f"{P}/graphs", {**graph, "id": "other"})
            assert status == 503, body
            assert "unavailable" in body["detail"]
            assert answers(daemon, "POST", f"{P}/runs", {"workflow_id": "five"})[0] == 503
        time.sleep(1.0)  # the database stays away a while: the daemons keep trying
        assert all(d.proc is not None and d.proc.poll() is None for d in daemons)

        cluster.serve_again()
        for daemon in daemons:
            until(lambda d=daemon: answers(d, "GET", "/readyz")[0] == 200, 60, "ready again")

        def statuses() -> Counter[str]:
            return Counter(answers(daemons[0], "GET", f"{P}/runs/{r}")[1]["status"] for r in runs)

        until(lambda: statuses() == Counter({"completed": RUNS}), 120, "every run completed")
        completions = Counter(
            (run_id, node_id)
            for run_id, node_id, status in (
                (r, n, s)
                for r, n, s in run_sql(
                    storage,
                    "SELECT run_id, body::json->'nodeState'->>'node_id', "
                    "body::json->'nodeState'->>'status' FROM events "
                    "WHERE type = 'workflow.node_state.updated'",
                )
            )
            if status == "completed"
        )
        assert all(completions[(r, n)] == 1 for r in runs for n in NODES), completions
        seqs = [s for (s,) in run_sql(storage, "SELECT seq FROM events ORDER BY seq")]
        assert seqs == list(range(1, len(seqs) + 1))
        assert all(d.proc is not None and d.proc.poll() is None for d in daemons)
    finally:
        for daemon in daemons:
            daemon.stop()
