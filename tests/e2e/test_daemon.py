"""The original service's contract against the real `cortexd serve` process: a graph in the
original shape runs to completion, errors are JSON with a `detail`, SIGTERM stops it cleanly,
data survives a restart, and `cortexd check-config` names what is wrong."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import CORTEXD, STOP_MARGIN_S, Daemon, daemon_env

pytestmark = pytest.mark.e2e

PROJECT = "acme"
API = f"/api/projects/{PROJECT}/workflows"
RUN_TIMEOUT_S = 30.0
# The original service's shape: nodes with only id/label/x/y, no type or config.
GRAPH: dict[str, Any] = {
    "id": "two-steps",
    "name": "two steps",
    "description": "a then b",
    "nodes": [
        {"id": "a", "label": "Fetch", "x": 0.0, "y": 0.0},
        {"id": "b", "label": "Store", "x": 200.0, "y": 0.0},
    ],
    "edges": [
        {"id": "e0", "source": "__start__", "target": "a"},
        {"id": "e1", "source": "a", "target": "b"},
        {"id": "e2", "source": "b", "target": "__end__"},
    ],
}


class Api:
    """JSON over HTTP to one daemon; answers (status, decoded body, raw text)."""

    def __init__(self, session: aiohttp.ClientSession, daemon: Daemon) -> None:
        self.session = session
        self.daemon = daemon

    async def call(
        self, method: str, path: str, body: Any = None, *, raw: bytes | None = None
    ) -> tuple[int, Any, str]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        headers = {"Content-Type": "application/json"}
        url = self.daemon.url + path
        async with self.session.request(method, url, data=data, headers=headers) as response:
            text = await response.text()
            decoded = json.loads(text) if text else None
            return response.status, decoded, text

    async def get(self, path: str) -> tuple[int, Any]:
        status, body, _ = await self.call("GET", path)
        return status, body

    async def post(self, path: str, body: Any = None) -> tuple[int, Any]:
        status, body, _ = await self.call("POST", path, body)
        return status, body


@pytest.fixture
async def api(daemon: Daemon) -> AsyncIterator[Api]:
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        yield Api(session, daemon)


async def create_graph(api: Api, project: str = PROJECT) -> dict[str, Any]:
    status, graph = await api.post(f"/api/projects/{project}/workflows/graphs", GRAPH)
    assert status == 201, graph
    return dict(graph)


async def create_run(api: Api, workflow_id: str = "two-steps") -> dict[str, Any]:
    status, run = await api.post(f"{API}/runs", {"workflow_id": workflow_id, "input": {"n": 1}})
    assert status == 201, run
    return dict(run)


async def wait_for_status(api: Api, run_id: str, wanted: str) -> dict[str, Any]:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        status, body = await api.get(f"{API}/runs/{run_id}/status")
        assert status == 200, body
        if body["status"] == wanted:
            return dict(body)
        assert body["status"] not in {"failed", "cancelled"}, body
        assert time.monotonic() < deadline, f"run not {wanted} within {RUN_TIMEOUT_S}s: {body}"
        await asyncio.sleep(0.05)


async def completed_run(api: Api) -> dict[str, Any]:
    await create_graph(api)
    run = await create_run(api)
    await wait_for_status(api, run["id"], "completed")
    return run


def node_view(node: dict[str, Any]) -> dict[str, Any]:
    return {key: node[key] for key in ("id", "label", "x", "y")}


def edge_view(edge: dict[str, Any]) -> dict[str, Any]:
    return {key: edge[key] for key in ("id", "source", "target")}


# -- the seed spec's verification ideas ---------------------------------------------------------


async def test_a_graph_in_the_original_shape_is_stored_and_listed(api: Api) -> None:
    created = await create_graph(api)
    assert created["id"] == "two-steps"

    status, graphs = await api.get(f"{API}/graphs")
    assert status == 200
    assert [g["id"] for g in graphs] == ["two-steps"]

    status, graph = await api.get(f"{API}/graphs/two-steps")
    assert status == 200
    assert graph["name"] == "two steps"
    assert graph["description"] == "a then b"
    assert [node_view(n) for n in graph["nodes"]] == GRAPH["nodes"]
    assert [edge_view(e) for e in graph["edges"]] == GRAPH["edges"]


async def test_a_run_of_the_original_graph_completes_every_node(api: Api) -> None:
    await create_graph(api)
    run = await create_run(api)
    assert run["status"] == "pending"
    assert run["workflow_id"] == "two-steps"

    status = await wait_for_status(api, run["id"], "completed")

    assert status["run_id"] == run["id"]
    assert status["progress"] == 1.0
    assert status["current_node"] is None
    assert status["started_at"]
    states = {s["node_id"]: s for s in status["node_states"]}
    assert set(states) == {"a", "b"}
    for state in states.values():
        assert state["status"] == "completed", state
        assert state["progress"] == 1.0, state
        assert state["started_at"], state
        assert state["completed_at"], state
    assert states["a"]["completed_at"] <= states["b"]["started_at"]

    code, stored = await api.get(f"{API}/runs/{run['id']}")
    assert code == 200
    assert stored["status"] == "completed"
    assert stored["started_at"]
    assert stored["finished_at"]
    assert stored["started_at"] <= stored["finished_at"]

    code, runs = await api.get(f"{API}/runs?workflow_id=two-steps")
    assert code == 200
    assert [r["id"] for r in runs] == [run["id"]]


async def test_a_completed_run_has_a_gap_free_event_history(api: Api) -> None:
    run = await completed_run(api)

    status, events = await api.get(f"{API}/runs/{run['id']}/events")

    assert status == 200
    assert isinstance(events, list)
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    types = [e["type"] for e in events]
    assert "workflow.run.created" in types
    assert "workflow.node_state.updated" in types
    assert types[-1] == "workflow.run.completed", types
    assert types.index("workflow.run.created") < types.index("workflow.node_state.updated")
    assert {e["run_id"] for e in events} == {run["id"]}
    assert {e["project_id"] for e in events} == {PROJECT}
    finished = {
        e["nodeState"]["node_id"]
        for e in events
        if e.get("nodeState", {}).get("status") == "completed"
    }
    assert finished == {"a", "b"}


# -- errors ------------------------------------------------------------------------------------


async def test_a_run_of_a_missing_workflow_is_a_404_with_a_detail(api: Api) -> None:
    status, body = await api.post(f"{API}/runs", {"workflow_id": "no-such-graph"})

    assert status == 404
    assert isinstance(body["detail"], str)
    assert "no-such-graph" in body["detail"]


async def test_another_projects_run_and_graph_are_not_found(api: Api) -> None:
    run = await completed_run(api)
    other = "/api/projects/someone-else/workflows"

    for path in (
        f"{other}/runs/{run['id']}",
        f"{other}/runs/{run['id']}/status",
        f"{other}/runs/{run['id']}/events",
        f"{other}/graphs/two-steps",
    ):
        status, body = await api.get(path)
        assert status == 404, (path, body)
        assert body["detail"], path
    status, body = await api.post(f"{other}/runs/{run['id']}/cancel")
    assert status == 404, body
    status, runs = await api.get(f"{other}/runs")
    assert (status, runs) == (200, [])


async def test_execute_on_a_completed_run_is_a_409(api: Api) -> None:
    run = await completed_run(api)

    status, body = await api.post(f"{API}/runs/{run['id']}/execute")

    assert status == 409, body
    assert body["detail"]
    _, stored = await api.get(f"{API}/runs/{run['id']}")
    assert stored["status"] == "completed"


async def test_cancel_on_a_completed_run_is_a_400(api: Api) -> None:
    run = await completed_run(api)

    status, body = await api.post(f"{API}/runs/{run['id']}/cancel")

    assert status == 400, body
    assert body["detail"]
    _, stored = await api.get(f"{API}/runs/{run['id']}")
    assert stored["status"] == "completed"
    assert stored.get("cancelled_at") is None


@pytest.mark.parametrize(
    "path", [f"{API}/runs", f"{API}/graphs"], ids=["create-run", "create-graph"]
)
async def test_malformed_json_is_a_400_without_a_traceback(api: Api, path: str) -> None:
    status, body, text = await api.call("POST", path, raw=b'{"workflow_id": "two-steps",')

    assert status == 400, text
    assert isinstance(body["detail"], str)
    assert body["detail"]
    for leak in ("Traceback", 'File "', "JSONDecodeError", ".py"):
        assert leak not in text, text


# -- process lifecycle --------------------------------------------------------------------------


def log_entries(log_text: str) -> list[dict[str, Any]]:
    """The JSON lines of a daemon's log, as dicts (other lines skipped)."""
    entries = []
    for line in log_text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def stopped_logged(log_text: str) -> bool:
    return any(entry.get("event") == "stopped" for entry in log_entries(log_text))


def test_sigterm_stops_the_daemon_cleanly_and_in_time(daemon: Daemon) -> None:
    started = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    code = daemon.proc.wait(timeout=daemon.shutdown_grace_s + STOP_MARGIN_S)
    took = time.monotonic() - started

    assert code == 0, daemon.log_text()
    assert took < daemon.shutdown_grace_s + STOP_MARGIN_S
    assert stopped_logged(daemon.log_text()), daemon.log_text()
    assert "Traceback" not in daemon.log_text()


async def test_graphs_and_runs_survive_a_restart(api: Api, daemon: Daemon) -> None:
    run = await completed_run(api)
    _, before = await api.get(f"{API}/runs/{run['id']}")
    first_pid = daemon.proc.pid

    await asyncio.to_thread(daemon.restart)

    assert daemon.proc.pid != first_pid

    status, graph = await api.get(f"{API}/graphs/two-steps")
    assert status == 200
    assert [node_view(n) for n in graph["nodes"]] == GRAPH["nodes"]
    status, after = await api.get(f"{API}/runs/{run['id']}")
    assert status == 200
    assert after == before
    status, progress = await api.get(f"{API}/runs/{run['id']}/status")
    assert status == 200
    assert progress["status"] == "completed"
    assert progress["progress"] == 1.0
    assert {s["status"] for s in progress["node_states"]} == {"completed"}


def ready_line(log_text: str) -> dict[str, Any]:
    ready = [entry for entry in log_entries(log_text) if entry.get("event") == "ready"]
    assert ready, f"no 'ready' line in the log:\n{log_text}"
    return ready[0]


async def test_the_event_loop_is_uvloop_unless_the_config_says_asyncio(
    api: Api, daemon: Daemon
) -> None:
    assert ready_line(daemon.log_text())["event_loop"] == "uvloop"
    config = daemon.config_path.read_text()
    daemon.config_path.write_text(
        config.replace("[server]\n", '[server]\nevent_loop = "asyncio"\n')
    )

    await asyncio.to_thread(daemon.restart)

    assert ready_line(daemon.log_text())["event_loop"] == "asyncio"
    await completed_run(api)  # the standard library's loop runs everything too


def test_a_database_of_a_newer_release_stops_the_daemon_with_status_2(tmp_path: Path) -> None:
    """Exit 2, which the unit does not restart on (`RestartPreventExitStatus=2`)."""
    import sqlite3

    daemon = Daemon(tmp_path)
    asyncio.run(_prepared(daemon.db_path))
    with sqlite3.connect(daemon.db_path) as db:
        db.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) "
            "VALUES (9999, '9999_later.sql', 'now')"
        )
    result = subprocess.run(
        [str(CORTEXD), "serve", "--config", str(daemon.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=daemon_env(),
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert "migrated by a newer cortexd (migration 9999" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


async def _prepared(path: Path) -> None:
    from adapters.sqlite.db import prepare_database

    await prepare_database(path)


# -- cortexd check-config -----------------------------------------------------------------------


def check_config(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CORTEXD), "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=daemon_env(),
        cwd=config.parent,
    )


def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    config = tmp_path / "good.toml"
    db = tmp_path / "state.db"
    config.write_text(f'[server]\nport = 9123\n[storage]\npath = "{db}"\n')

    result = check_config(config)

    assert result.returncode == 0, result.stderr
    effective = json.loads(result.stdout)
    assert effective["server"]["port"] == 9123
    assert effective["server"]["host"] == "127.0.0.1"
    assert effective["storage"]["path"] == str(db)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[server]\nport = "abc"\n', "server.port"),
        ("[server]\nprot = 9000\n", "server.prot"),
    ],
    ids=["port-not-a-number", "unknown-key"],
)
def test_check_config_rejects_a_bad_file_naming_the_key(
    tmp_path: Path, text: str, named: str
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)

    result = check_config(config)

    assert result.returncode != 0
    assert named in result.stderr, result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_check_config_rejects_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"

    result = check_config(missing)

    assert result.returncode != 0
    assert str(missing) in result.stderr, result.stderr
    assert "not found" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
