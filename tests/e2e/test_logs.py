"""What an operator reads from the real daemon: JSON log lines that name their run and their
request, and a /metrics page that counts what ran."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import Daemon

pytestmark = pytest.mark.e2e

API = "/api/projects/acme/workflows"
DEADLINE_S = 30.0
GRAPH = {
    "id": "two-steps",
    "name": "two steps",
    "nodes": [{"id": "a", "label": "A"}, {"id": "b", "label": "B"}],
    "edges": [{"source": "a", "target": "b"}],
}


def call(daemon: Daemon, method: str, path: str, body: Any = None, request_id: str = "") -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(daemon.url + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if request_id:
        request.add_header("X-Request-ID", request_id)
    with urllib.request.urlopen(request, timeout=10) as response:
        if request_id:
            assert response.headers["X-Request-ID"] == request_id
        raw = response.read()
        return json.loads(raw) if response.headers.get_content_type() == "application/json" else raw


def log_lines(daemon: Daemon) -> list[dict[str, Any]]:
    text = (daemon.workdir / f"daemon-{daemon.starts}.stdout.log").read_text()
    return [json.loads(line) for line in text.splitlines()]  # each line is one JSON object


def until(condition: Any, what: str) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    while (result := condition()) is None or result is False:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not before the deadline")
        time.sleep(0.05)
    return result


def test_log_lines_are_json_and_name_their_run_and_request(daemon: Daemon) -> None:
    call(daemon, "POST", f"{API}/graphs", GRAPH)
    run = call(daemon, "POST", f"{API}/runs", {"workflow_id": "two-steps"}, request_id="e2e-run")
    until(lambda: call(daemon, "GET", f"{API}/runs/{run['id']}")["status"] == "completed", "run")

    def summary() -> dict[str, Any] | None:
        ends = [line for line in log_lines(daemon) if line.get("event") == "run_finished"]
        return ends[0] if ends else None

    finished = until(summary, "run_finished line")
    assert finished["run_id"] == run["id"]
    assert finished["project_id"] == "acme"
    assert finished["status"] == "completed"
    assert finished["duration_s"] >= 0
    assert finished["level"] == "info"

    lines = log_lines(daemon)
    assert {"ready", "run_finished"} <= {line["event"] for line in lines}
    for line in lines:
        assert {"event", "level", "logger", "timestamp"} <= line.keys(), line
        if "run_id" in line:
            assert line["project_id"] == "acme", line
        if "node_id" in line:
            assert line["run_id"] == run["id"], line

    [access] = [
        line
        for line in lines
        if line["logger"] == "aiohttp.access" and line.get("request_id") == "e2e-run"
    ]
    assert access["event"] == "request"
    assert access["method"] == "POST"
    assert access["route"] == "/api/projects/{project_id}/workflows/runs"
    assert access["status"] == 201


def test_metrics_count_the_runs_of_the_real_daemon(daemon: Daemon) -> None:
    call(daemon, "POST", f"{API}/graphs", GRAPH)
    run = call(daemon, "POST", f"{API}/runs", {"workflow_id": "two-steps"})
    until(lambda: call(daemon, "GET", f"{API}/runs/{run['id']}")["status"] == "completed", "run")

    def samples() -> dict[tuple[str, str], float] | None:
        text = call(daemon, "GET", "/metrics").decode()
        found = {
            (s.name, s.labels.get("status", "")): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        return found if found[("cortexd_runs_finished_total", "completed")] == 1 else None

    found = until(samples, "the run in /metrics")
    assert found[("cortexd_runs_started_total", "")] == 1
    assert found[("cortexd_run_duration_seconds_count", "completed")] == 1
    assert found[("cortexd_node_duration_seconds_count", "completed")] == 2
    assert found[("cortexd_runs_active", "")] == 0
