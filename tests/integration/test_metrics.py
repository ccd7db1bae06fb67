"""GET /metrics after real runs: what a Prometheus server scraping cortexd would record."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pluggy
from prometheus_client.parser import text_string_to_metric_families

from adapters.metrics import Metrics
from core.events import Published
from tests.integration.conftest import Api, ApiFactory, P, linear

hookimpl = pluggy.HookimplMarker("cortexd")
RUNS = f"{P}/runs"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class BrokenSink:
    @hookimpl
    def cortexd_event(self, event: dict[str, Any]) -> None:
        raise ConnectionError("the receiver is down")


async def scrape(api: Api) -> Samples:
    response = await api.client.get("/metrics")
    assert response.status == 200
    assert response.content_type == "text/plain"
    text = await response.text()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


async def eventually(api: Api, check: Callable[[Samples], bool], timeout: float = 20) -> Samples:
    """Scrape until `check` holds: events reach the metrics asynchronously, after commit."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        samples = await scrape(api)
        if check(samples):
            return samples
        if loop.time() > deadline:
            raise AssertionError(f"not met before the deadline; last scrape: {samples}")
        await asyncio.sleep(0.01)


async def test_runs_nodes_levels_and_http_are_counted_without_ids(make_api: ApiFactory) -> None:
    api = await make_api(
        extra=[("broken-sink", BrokenSink())], CORTEXD_EXECUTION__MAX_CONCURRENT_RUNS="1"
    )
    await api.graph(linear("ok", "passthrough", "count"))
    await api.graph(linear("bad", "fail"))
    await api.graph(linear("slow", "gate"))

    completed = await api.start("ok")
    await api.idle()
    failed = await api.start("bad")
    await api.idle()
    running = await api.start("slow")
    await api.arrived()
    queued = await api.start("slow")
    async with api.client.ws_connect("/api/projects/acme/ws"):
        samples = await eventually(api, lambda s: value(s, "cortexd_websocket_clients") == 1)
        assert value(samples, "cortexd_runs_active") == 1
        assert value(samples, "cortexd_runs_queued") == 1
    await api.call("POST", f"{RUNS}/{queued}/cancel", status=200)
    await api.call("POST", f"{RUNS}/{running}/cancel", status=200)
    await api.idle()
    await api.call("GET", f"{RUNS}/{completed}", status=200)
    await api.call("GET", "/no/such/path", status=404)

    samples = await eventually(
        api, lambda s: value(s, "cortexd_runs_finished_total", status="cancelled") == 2
    )
    assert value(samples, "cortexd_runs_started_total") == 3  # the queued one never started
    # Created runs by trigger: a label of four values, each there from the start.
    assert value(samples, "cortexd_runs_created_total", trigger="api") == 4
    for trigger in ("schedule", "webhook", "subworkflow"):
        assert value(samples, "cortexd_runs_created_total", trigger=trigger) == 0
    assert value(samples, "cortexd_runs_finished_total", status="completed") == 1
    assert value(samples, "cortexd_runs_finished_total", status="failed") == 1
    # Only runs that started have a duration.
    for status, runs in {"completed": 1, "failed": 1, "cancelled": 1}.items():
        assert value(samples, "cortexd_run_duration_seconds_count", status=status) == runs
    # ok: two nodes completed; bad: its node failed; slow: its gate node cancelled.
    for status, nodes in {"completed": 2, "failed": 1, "cancelled": 1}.items():
        assert value(samples, "cortexd_node_duration_seconds_count", status=status) == nodes
    assert value(samples, "cortexd_runs_active") == 0
    assert value(samples, "cortexd_runs_queued") == 0
    assert value(samples, "cortexd_websocket_clients") == 0
    # Every write was committed, some of them sharing a transaction.
    commits = value(samples, "cortexd_store_commits_total")
    assert 0 < commits <= value(samples, "cortexd_store_writes_total")

    http = "cortexd_http_request_duration_seconds_count"
    route = "/api/projects/{project_id}/workflows/runs"
    assert value(samples, http, route=route, method="POST", status_class="2xx") == 4
    run_route = route + "/{run_id}"
    assert value(samples, http, route=run_route, method="GET", status_class="2xx") == 1
    assert value(samples, http, route="unmatched", method="GET", status_class="4xx") == 1
    labels = {v for _, pairs in samples for _, v in pairs}
    assert not labels & {completed, failed, running, queued, "n1", "acme"}
    assert not any("/no/such" in label for label in labels)

    def every_event_failed_in_the_broken_sink(s: Samples) -> bool:
        failures = value(s, "cortexd_sink_events_failed_total", sink="broken-sink")
        return failures == value(s, "cortexd_sink_events_delivered_total", sink="testkit") > 0

    samples = await eventually(api, every_event_failed_in_the_broken_sink)
    assert value(samples, "cortexd_sink_events_delivered_total", sink="broken-sink") == 0


async def test_each_app_has_its_own_registry(make_api: ApiFactory) -> None:
    first = await make_api()
    await first.graph(linear("ok", "passthrough"))
    await first.start("ok")
    await first.idle()
    second = await make_api()  # the default registry would refuse its duplicate metrics

    samples = await eventually(first, lambda s: value(s, "cortexd_runs_started_total") == 1)
    fresh = await scrape(second)
    assert value(fresh, "cortexd_runs_started_total") == 0
    assert value(samples, "cortexd_runs_finished_total", status="completed") == 1
    assert value(fresh, "cortexd_runs_finished_total", status="completed") == 0


async def test_metric_names_follow_prometheus_conventions(api: Api) -> None:
    await scrape(api)  # so that the HTTP histogram has a series
    samples = await scrape(api)
    names = {name for name, _ in samples}
    assert all(name.startswith("cortexd_") for name in names)
    assert {
        "cortexd_runs_started_total",
        "cortexd_runs_finished_total",
        "cortexd_sink_events_failed_total",
        "cortexd_sink_events_read_from_log_total",
        "cortexd_runs_active",
        "cortexd_runs_queued",
        "cortexd_websocket_clients",
        "cortexd_store_commits_total",
        "cortexd_store_writes_total",
        "cortexd_run_duration_seconds_bucket",
        "cortexd_node_duration_seconds_bucket",
        "cortexd_http_request_duration_seconds_bucket",
    } <= names


def run_event(
    kind: str, at: str, status: str, started_at: str, finished_at: str | None
) -> Published:
    run = {"id": "r1", "status": status, "started_at": started_at, "finished_at": finished_at}
    return Published({"seq": 1, "type": kind, "timestamp": at, "run": run}, "")


def test_a_run_executed_again_is_timed_from_its_new_start() -> None:
    metrics = Metrics()
    first = "2026-01-01T10:00:00Z"
    metrics.offer(run_event("workflow.run.updated", first, "running", first, None))
    metrics.offer(
        run_event(
            "workflow.run.failed", "2026-01-01T10:00:05Z", "failed", first, "2026-01-01T10:00:05Z"
        )
    )
    # An hour later it is executed again; the run keeps the `started_at` of its first start.
    again = "2026-01-01T11:00:00Z"
    metrics.offer(run_event("workflow.run.updated", again, "running", first, None))
    metrics.offer(
        run_event(
            "workflow.run.completed",
            "2026-01-01T11:00:03Z",
            "completed",
            first,
            "2026-01-01T11:00:03Z",
        )
    )

    sample = metrics.registry.get_sample_value
    assert sample("cortexd_run_duration_seconds_sum", {"status": "failed"}) == 5
    assert sample("cortexd_run_duration_seconds_sum", {"status": "completed"}) == 3
    assert sample("cortexd_runs_started_total") == 2


def test_an_unreadable_event_is_skipped_without_breaking_the_bus() -> None:
    metrics = Metrics()
    metrics.offer(Published({"seq": 7, "type": "workflow.run.completed", "run": {}}, ""))
    metrics.offer(
        Published({"seq": 8, "type": "workflow.node_state.updated", "nodeState": None}, "")
    )

    assert (
        metrics.registry.get_sample_value("cortexd_runs_finished_total", {"status": "completed"})
        == 0
    )
