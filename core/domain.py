"""The domain: graphs, runs, node states and events, spelled as the original service's JSON.

Field names are the wire contract (DESIGN §2): the original's fields keep their spelling and
every added field is optional on input, so graphs written for the original service load as-is.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

START = "__start__"
END = "__end__"
RESERVED_IDS = frozenset({START, END})
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"

JSON = dict[str, Any]


class RunStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PAUSED = "paused"


class NodeStatus(StrEnum):
    IDLE = "idle"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


class PauseReason(StrEnum):
    REQUESTED = "requested"
    INPUT_REQUIRED = "input_required"


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False)


class RetrySpec(Model):
    max_attempts: int = Field(default=1, ge=1, le=100)
    backoff_s: float = Field(default=1.0, ge=0, le=3600)
    backoff_factor: float = Field(default=2.0, ge=1, le=10)


class Node(Model):
    id: str
    label: str = ""
    x: float = 0.0
    y: float = 0.0
    type: str = "passthrough"
    config: JSON = Field(default_factory=dict)
    retry: RetrySpec | None = None
    timeout_s: float | None = Field(default=None, gt=0)


class Edge(Model):
    id: str = ""
    source: str
    target: str
    condition: str | None = None

    @model_validator(mode="after")
    def _default_id(self) -> Edge:
        # The original required an id; a script writing edges by hand should not have to.
        if not self.id:
            self.id = f"{self.source}->{self.target}"
        return self


class Concurrency(Model):
    """At most `limit` runs of the graph execute at once; with `key` (a JMESPath expression on
    the run's input), at most `limit` per value of it (DESIGN §11)."""

    limit: int = Field(ge=1, le=10_000)
    key: str | None = Field(default=None, max_length=1000)


class GraphSpec(Model):
    """What a client sends to create or replace a graph."""

    id: str | None = None
    name: str
    description: str | None = None
    nodes: list[Node] = Field(default_factory=list)
    edges: list[Edge] = Field(default_factory=list)
    concurrency: Concurrency | None = None


class Graph(Model):
    id: str
    name: str
    description: str | None = None
    nodes: list[Node]
    edges: list[Edge]
    concurrency: Concurrency | None = None
    project_id: str
    version: int
    created_at: datetime
    updated_at: datetime

    def node(self, node_id: str) -> Node:
        return next(n for n in self.nodes if n.id == node_id)


# What can start a run (`Run.trigger["type"]`, DESIGN §10 and §11).
TRIGGER_TYPES = ("api", "schedule", "webhook", "subworkflow")


class Run(Model):
    id: str
    workflow_id: str
    status: RunStatus
    started_at: datetime | None = None
    finished_at: datetime | None = None
    last_message: str | None = None
    task_id: str | None = None
    paused_at: datetime | None = None
    cancelled_at: datetime | None = None
    project_id: str
    graph_version: int
    input: JSON = Field(default_factory=dict)
    output: JSON | None = None
    error: JSON | None = None
    created_at: datetime
    pause_reason: PauseReason | None = None
    prompt: Any = None
    # Wave 2 (DESIGN §8): the instance id of the daemon executing the run (else None), and how
    # many times it was taken back from a daemon that died or stalled while executing it.
    owner: str | None = None
    recoveries: int = 0
    # Wave 2 (DESIGN §10): what started the run: {"type": "api"}, {"type": "schedule", "id":
    # the schedule, "scheduled_for": the time it fired for}, {"type": "webhook", "id": the
    # hook}; runs stored before have "api".
    trigger: JSON = Field(
        default_factory=lambda: {"type": "api"},
        description='What started the run: {"type": "api"} (a POST), {"type": "schedule", '
        '"id": <schedule id>, "scheduled_for": <the UTC time it fired for>}, or {"type": '
        '"webhook", "id": <hook id>}.',
        examples=[
            {"type": "api"},
            {"type": "schedule", "id": "nightly", "scheduled_for": "2026-01-01T02:00:00Z"},
            {"type": "webhook", "id": "github-push"},
        ],
    )
    # Wave 2 (DESIGN §11): the run and node that started this one (a `subworkflow` node).
    parent_run_id: str | None = None
    parent_node_id: str | None = None
    # What a `running` run waits for without holding a slot: {"type": "timer", "until": ...}
    # or {"type": "subworkflow", "run_id": ...}; None while it executes (or is not running).
    waiting_for: JSON | None = None


class NodeState(Model):
    node_id: str
    status: NodeStatus = NodeStatus.IDLE
    progress: float = Field(default=0.0, ge=0.0, le=1.0)
    message: str | None = None
    messages: list[str] = Field(default_factory=list)
    error: JSON | None = None
    attempts: int = 0
    started_at: datetime | None = None
    completed_at: datetime | None = None


class EventType(StrEnum):
    RUN_CREATED = "workflow.run.created"
    RUN_UPDATED = "workflow.run.updated"
    RUN_PAUSED = "workflow.run.paused"
    RUN_RESUMED = "workflow.run.resumed"
    RUN_CANCELLED = "workflow.run.cancelled"
    RUN_COMPLETED = "workflow.run.completed"
    RUN_FAILED = "workflow.run.failed"
    NODE_STATE_UPDATED = "workflow.node_state.updated"
    GRAPH_CREATED = "workflow.graph.created"
    GRAPH_UPDATED = "workflow.graph.updated"
    GRAPH_DELETED = "workflow.graph.deleted"


class Event(Model):
    """One recorded change. `seq` is given by the store when the event is committed."""

    seq: int = 0
    type: EventType
    project_id: str
    run_id: str | None = None
    timestamp: datetime
    run: Run | None = None
    nodeState: NodeState | None = None
    graph: Graph | None = None

    def to_json(self) -> JSON:
        """The dict WebSocket clients and event sinks receive (payload keys only when set)."""
        data = self.model_dump(mode="json")
        for key in ("run_id", "run", "nodeState", "graph"):
            if data[key] is None:
                del data[key]
        return data
