"""Prometheus metrics, one registry per app (never the process-wide default).

Runs and nodes are counted from the event bus, so the core knows nothing of metrics: every
transition is an event carrying the run or node state with its timestamps. What is a level
rather than a count (runs active and queued, WebSocket clients, sink counters) is read from its
owner when Prometheus scrapes. No label ever holds a run or node id: each would be a new series.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from adapters.ws import EventSockets
from core.domain import TRIGGER_TYPES
from core.engine import Engine
from core.events import Published
from core.feed import EventFeed
from core.sinks import Sinks

log = structlog.get_logger("cortexd.metrics")

RUN_ENDS = {"workflow.run.completed", "workflow.run.failed", "workflow.run.cancelled"}
FINAL = ("completed", "failed", "cancelled")  # of runs and of nodes alike
# Workflows run from seconds to hours; nodes from milliseconds to minutes.
RUN_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)
NODE_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"  # 404 and 405: the raw path would let any client make new series


class WriteCounters(Protocol):
    """What the store's writer counts (`adapters.sqlite.writer.Writer`)."""

    commits: int
    ops: int


class Metrics:
    """The app's registry and what feeds it. An event-bus subscriber: `offer` never blocks."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._export: Handler = make_aiohttp_handler(self.registry)
        self._engine: Engine | None = None
        r = self.registry
        self.runs_created = Counter(
            "cortexd_runs_created",
            "Runs created, by what started them (api, schedule, webhook, subworkflow).",
            ["trigger"],
            registry=r,
        )
        self.runs_started = Counter(
            "cortexd_runs_started", "Runs that began executing (pending to running).", registry=r
        )
        self.runs_finished = Counter(
            "cortexd_runs_finished", "Runs that reached a final status.", ["status"], registry=r
        )
        self.run_duration = Histogram(
            "cortexd_run_duration_seconds",
            "Wall-clock time from a run's start to its final status, pauses included.",
            ["status"],
            buckets=RUN_BUCKETS,
            registry=r,
        )
        self.node_duration = Histogram(
            "cortexd_node_duration_seconds",
            "Time of a node's last attempt, by the status it ended with.",
            ["status"],
            buckets=NODE_BUCKETS,
            registry=r,
        )
        self.http_duration = Histogram(
            "cortexd_http_request_duration_seconds",
            "HTTP request handling time by route template (WebSocket sessions excluded).",
            ["route", "method", "status_class"],
            registry=r,
        )
        # Present from the first scrape, so rate() sees the first one; and looked up once, not
        # per event (labels() takes a lock and builds a key each time).
        self._runs_created = {kind: self.runs_created.labels(kind) for kind in TRIGGER_TYPES}
        self._runs_finished = {status: self.runs_finished.labels(status) for status in FINAL}
        self._run_duration = {status: self.run_duration.labels(status) for status in FINAL}
        self._node_duration = {status: self.node_duration.labels(status) for status in FINAL}
        # When each run began its current execution: an executed-again run keeps the
        # `started_at` of its first execution, which is not the start of this one.
        self._starts: dict[str, str] = {}

    def watch(
        self,
        feed: EventFeed,
        engine: Engine,
        sockets: EventSockets,
        sinks: Sinks,
        writer: WriteCounters,
    ) -> None:
        """Count the events this daemon commits from now on (so the counters of several
        daemons on one store add up to the store's), and read the live levels at each scrape."""
        feed.subscribe_local(self)
        self._engine = engine
        self.registry.register(_Levels(engine, sockets, sinks, writer))

    async def handler(self, request: web.Request) -> web.StreamResponse:
        if self._engine is not None:
            with contextlib.suppress(Exception):  # a store that cannot be read: the last look
                await self._engine.counts()
        return await self._export(request)

    def offer(self, item: Published) -> None:
        try:
            self._count(item.event)
        except (KeyError, TypeError, ValueError):
            # Metrics are never worth breaking the bus for (it fans out to sinks and clients).
            log.warning("metrics_event_unreadable", seq=item.seq, type=item.event.get("type"))

    def _count(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "workflow.node_state.updated":
            node = event["nodeState"]
            histogram = self._node_duration.get(node["status"])
            if histogram is not None and node["started_at"] and node["completed_at"]:
                histogram.observe(_seconds(node["started_at"], node["completed_at"]))
            return
        run = event.get("run")
        if run is None:
            return
        if kind == "workflow.run.created":
            created = self._runs_created.get(str(run.get("trigger", {}).get("type", "api")))
            if created is not None:
                created.inc()
        elif kind == "workflow.run.updated" and run["status"] == "running":
            self.runs_started.inc()
            self._starts[run["id"]] = event["timestamp"]
        elif kind in RUN_ENDS:
            self._runs_finished[run["status"]].inc()
            started = self._starts.pop(run["id"], None) or run["started_at"]
            if started and run["finished_at"]:
                seconds = _seconds(started, run["finished_at"])
                self._run_duration[run["status"]].observe(seconds)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Times each request, labelled by its route template, never by its path."""
        start = time.perf_counter()
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            self._observe(request, exc.status, start)
            raise
        except Exception:
            self._observe(request, 500, start)
            raise
        if response.status != 101:  # a WebSocket's duration is the session's, not a request's
            self._observe(request, response.status, start)
        return response

    def _observe(self, request: web.Request, status: int, start: float) -> None:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else UNMATCHED
        method = request.method if request.method in METHODS else "other"
        self.http_duration.labels(route, method, f"{status // 100}xx").observe(
            time.perf_counter() - start
        )


class _Levels:
    """A collector of what is read, not counted, at scrape time."""

    def __init__(
        self, engine: Engine, sockets: EventSockets, sinks: Sinks, writer: WriteCounters
    ) -> None:
        self._engine = engine
        self._sockets = sockets
        self._sinks = sinks
        self._writer = writer

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "cortexd_runs_active", "Runs this daemon executes now.", value=self._engine.running
        )
        yield GaugeMetricFamily(
            "cortexd_runs_queued",
            "Runs of the store waiting for a free slot of any daemon (as of the last look).",
            value=self._engine.queued,
        )
        # The store's truth, the same on every daemon on it: sum cortexd_runs_active across
        # daemons, not this one.
        counts = self._engine.scheduler.counts
        store = GaugeMetricFamily(
            "cortexd_store_runs",
            "Unfinished runs in the store, every daemon's (as of the last look).",
            labels=["status"],
        )
        for status in ("pending", "running", "paused"):
            store.add_metric([status], getattr(counts, status))
        yield store
        yield GaugeMetricFamily(
            "cortexd_websocket_clients", "Connected WebSocket clients.", value=self._sockets.clients
        )
        # Group commit at work: writes per commit is the batching the load allows.
        yield CounterMetricFamily(
            "cortexd_store_commits",
            "Transactions the store's writer committed.",
            value=self._writer.commits,
        )
        yield CounterMetricFamily(
            "cortexd_store_writes",
            "Write operations committed (several share a transaction).",
            value=self._writer.ops,
        )
        counters = {
            "delivered": "Events a sink took without error.",
            "failed": "Events whose delivery raised in the sink.",
            "read_from_log": "Events a sink read back from the stored log (after a start, a "
            "takeover, or when it fell behind the bus); sinks never drop one.",
        }
        for outcome, text in counters.items():
            family = CounterMetricFamily(f"cortexd_sink_events_{outcome}", text, labels=["sink"])
            for worker in self._sinks.workers:
                family.add_metric([worker.name], getattr(worker, outcome))
            yield family


def _seconds(start: str, end: str) -> float:
    return max(0.0, (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds())
