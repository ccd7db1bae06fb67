"""The OpenAPI 3.1 document served at ``GET /openapi.json``.

Schemas come from the pydantic models (the domain's, the request bodies', and a few written
here for answers that are plain dicts); the paths are written out below, one entry per route.
The document served lists the routes the app has (``/metrics`` is there only when mounted).
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

from adapters.http.auth import HOOK_ROUTE
from adapters.http.inputs import (
    IDEMPOTENCY_KEY,
    PREFER,
    PREFERENCE_APPLIED,
    RUN_ID_PATTERN,
    CreateRunBody,
    ExecuteBody,
    ResumeBody,
)
from core.domain import (
    ID_PATTERN,
    TRIGGER_TYPES,
    Event,
    Graph,
    GraphSpec,
    NodeState,
    Run,
    RunStatus,
)
from core.idempotency import MAX_KEY_CHARS
from core.pages import MAX_CURSOR_CHARS, MAX_PAGE
from core.schedules import Schedule, ScheduleSpec
from core.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER
from core.webhooks import WebhookSpec

JSON = dict[str, Any]
PROBLEM_TYPE = "application/problem+json"
REF = "#/components/schemas/{model}"


# -- answers that are plain dicts in the routes ------------------------------------------------


class RunStatusReport(BaseModel):
    run_id: str
    status: RunStatus
    progress: float
    current_node: str | None
    started_at: datetime | None
    waiting_for: JSON | None = Field(
        None,
        description='What the run waits for without a slot: {"type": "timer", "until": ...}, '
        '{"type": "subworkflow", "run_id": ...}, or {"type": "input"}; else null.',
    )
    node_states: list[NodeState]


class NodeTypeInfo(BaseModel):
    name: str
    title: str
    description: str
    config_schema: JSON


class PluginInfo(BaseModel):
    name: str
    version: str | None
    source: str
    node_types: list[str]
    sinks: bool


class WebhookView(BaseModel):
    id: str
    workflow_id: str
    tolerance_s: int | None = Field(
        None, description="Replay safety: a signed X-Cortexd-Timestamp within this many seconds."
    )
    created_at: datetime
    url: str = Field(description="Where callers POST: this server's /api/hooks/{id}.")
    secret: str | None = Field(
        None, description="The HMAC-SHA256 key: only in the answer that creates the hook."
    )


class ProblemItem(BaseModel):
    path: str
    message: str


class ProblemDocument(BaseModel):
    """RFC 9457; `problems` lists each thing wrong with the body, with its JSON pointer."""

    type: str
    title: str
    status: int
    detail: str
    problems: list[ProblemItem] | None = None


class ValidGraph(BaseModel):
    valid: Literal[True]
    problems: list[ProblemItem]


class Health(BaseModel):
    status: Literal["ok"]


class RunCounts(BaseModel):
    running: int
    queued: int


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    instance: str
    checks: dict[str, bool]
    runs: RunCounts
    detail: str | None = Field(None, description="Why not ready, when known (a store fault).")


_INPUTS: list[type[BaseModel]] = [
    GraphSpec,
    CreateRunBody,
    ExecuteBody,
    ResumeBody,
    ScheduleSpec,
    WebhookSpec,
]
_OUTPUTS: list[type[BaseModel]] = [
    Graph,
    Run,
    Schedule,
    WebhookView,
    Event,
    RunStatusReport,
    NodeTypeInfo,
    PluginInfo,
    ProblemDocument,
    ValidGraph,
    Health,
    Readiness,
]


@lru_cache(maxsize=1)
def _schemas() -> tuple[dict[str, JSON], JSON]:
    """(a $ref per model and mode, every schema by name)."""
    pairs: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
        *((m, "validation") for m in _INPUTS),
        *((m, "serialization") for m in _OUTPUTS),
    ]
    refs, top = models_json_schema(pairs, ref_template=REF)
    by_model = {model.__name__: ref for (model, _), ref in refs.items()}
    return by_model, top.get("$defs", {})


def _ref(model: type[BaseModel]) -> JSON:
    return _schemas()[0][model.__name__]


# -- building blocks of the paths --------------------------------------------------------------


def _path_param(name: str, pattern: str, description: str) -> JSON:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "pattern": pattern},
    }


PROJECT_ID = _path_param("project_id", ID_PATTERN, "Project id.")
GRAPH_ID = _path_param("workflow_id", ID_PATTERN, "Graph (workflow) id.")
RUN_ID = _path_param("run_id", RUN_ID_PATTERN, "Run id (a UUID).")
SCHEDULE_ID = _path_param("schedule_id", ID_PATTERN, "Schedule id.")
HOOK_ID = _path_param("hook_id", ID_PATTERN, "Webhook id.")


def _header(name: str, schema: JSON, description: str, required: bool = False) -> JSON:
    return {
        "name": name,
        "in": "header",
        "required": required,
        "description": description,
        "schema": schema,
    }


IDEMPOTENCY = _header(
    IDEMPOTENCY_KEY,
    {"type": "string", "minLength": 1, "maxLength": MAX_KEY_CHARS},
    "Makes the start idempotent: the same key in the project within [runs] idempotency_ttl_s "
    "answers 200 with the run the first request made; with another body, 422.",
)
WAIT = _header(
    PREFER,
    {"type": "string", "examples": ["wait=30"]},
    "RFC 7240. `wait=N`: answer when the run is completed, failed, cancelled or paused, or "
    "after N seconds (at most [runs] max_wait_s) with the run as it stands.",
)
SIGNATURE = _header(
    SIGNATURE_HEADER,
    {"type": "string", "pattern": "^sha256=[0-9a-fA-F]{64}$"},
    "sha256= and the hex HMAC-SHA256 of the raw body (with the hook's `tolerance_s`: of "
    "`<X-Cortexd-Timestamp>.<raw body>`) keyed by the hook's secret.",
    required=True,
)
TIMESTAMP = _header(
    TIMESTAMP_HEADER,
    {"type": "string", "pattern": "^[0-9]{1,12}$"},
    "Unix seconds; required by a hook made with `tolerance_s`, and signed with the body.",
)
PREFERENCE_APPLIED_HEADER = {
    PREFERENCE_APPLIED: {
        "description": "`wait=N` when the request's wait preference was applied (N as capped).",
        "schema": {"type": "string"},
    }
}


def _query(name: str, schema: JSON, description: str) -> JSON:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


_STATUS_NAME = "|".join(s.value for s in RunStatus)
PAGE_PARAMS = (
    _query(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": MAX_PAGE},
        "The most items in one answer.",
    ),
    _query(
        "cursor",
        {"type": "string", "maxLength": MAX_CURSOR_CHARS},
        'Where the page starts: opaque, from the `Link: rel="next"` of the previous answer.',
    ),
)
RUN_FILTERS = (
    _query("workflow_id", {"type": "string", "pattern": ID_PATTERN}, "Only runs of this graph."),
    _query(
        "status",
        {"type": "string", "pattern": f"^({_STATUS_NAME})(,({_STATUS_NAME}))*$"},
        "Only runs in this status, or in any of a comma-separated list of them.",
    ),
    _query(
        "parent_run_id",
        {"type": "string", "pattern": RUN_ID_PATTERN},
        "Only the sub-workflow runs this run started.",
    ),
    _query(
        "trigger",
        {"enum": list(TRIGGER_TYPES)},
        "Only runs started this way (their `trigger.type`).",
    ),
    _query(
        "created_after",
        {"type": "string", "format": "date-time"},
        "Only runs created after this time (RFC 3339, with an offset; exclusive).",
    ),
    _query(
        "created_before",
        {"type": "string", "format": "date-time"},
        "Only runs created before this time (RFC 3339, with an offset; exclusive).",
    ),
)
NEXT_LINK = {
    "Link": {
        "description": 'When more exist: `<URL>; rel="next"` (RFC 8288), the URL (relative '
        "to the request's) of the next page: the same query with the next `cursor`.",
        "schema": {"type": "string"},
    }
}

VERSION = _query("version", {"type": "integer", "minimum": 1, "maximum": 2**62}, "A graph version.")
SINCE = _query("since", {"type": "integer", "minimum": 0, "maximum": 2**62}, "Events after seq.")

_ERRORS = {
    400: "Malformed request: not JSON, not UTF-8, nested too deeply, or a bad query parameter.",
    401: "No token, or one that is not valid (with `WWW-Authenticate: Bearer`).",
    403: "The token lacks the role or the project.",
    404: "No such graph, run or schedule in this project, or an id that cannot be one.",
    409: "The request contradicts the current state.",
    413: "Larger than a configured limit.",
    415: "A hook's body that is not a JSON object.",
    422: "Not valid: `problems` lists each problem with its JSON pointer.",
    429: "Too many WebSocket clients.",
}


def _json(schema: JSON, description: str) -> JSON:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _array(model: type[BaseModel]) -> JSON:
    return {"type": "array", "items": _ref(model)}


def _page(model: type[BaseModel], description: str) -> JSON:
    return _json(_array(model), description) | {"headers": NEXT_LINK}


def _started(description: str) -> JSON:
    return _json(_ref(Run), description) | {"headers": PREFERENCE_APPLIED_HEADER}


def _with_repeat(operation: JSON) -> JSON:
    """An idempotent start also answers 200: the run an earlier request with the key made."""
    repeat = _started("The run an earlier request with this Idempotency-Key made.")
    operation["responses"]["200"] = repeat
    return operation


def _operation(
    summary: str,
    ok: tuple[int, JSON],
    errors: tuple[int, ...] = (),
    *,
    params: tuple[JSON, ...] = (),
    body: type[BaseModel] | None = None,
    body_required: bool = True,
    secured: bool = True,
) -> JSON:
    status, response = ok
    responses: JSON = {str(status): response}
    codes = set(errors)
    if secured:
        codes |= {401, 403}
    if body is not None:
        codes |= {400, 413, 422}
    for code in sorted(codes):
        content = {PROBLEM_TYPE: {"schema": _ref(ProblemDocument)}}
        responses[str(code)] = {"description": _ERRORS[code], "content": content}
    if 401 in codes:
        challenge = {"description": "Bearer, with the error", "schema": {"type": "string"}}
        responses["401"]["headers"] = {"WWW-Authenticate": challenge}
    operation: JSON = {"summary": summary, "responses": responses}
    if params:
        operation["parameters"] = list(params)
    if body is not None:
        operation["requestBody"] = {
            "required": body_required,
            "content": {"application/json": {"schema": _ref(body)}},
        }
    if not secured:
        operation["security"] = []
    return operation


def _paths() -> dict[str, dict[str, JSON]]:
    project = "/api/projects/{project_id}/workflows"
    graph = (PROJECT_ID, GRAPH_ID)
    run = (PROJECT_ID, RUN_ID)
    schedule = (PROJECT_ID, SCHEDULE_ID)
    run_ok = (200, _json(_ref(Run), "The run."))
    return {
        f"{project}/graphs": {
            "get": _operation(
                "List the project's graphs by id, a page at a time",
                (200, _page(Graph, "A page of graphs.")),
                (400, 404),
                params=(PROJECT_ID, *PAGE_PARAMS),
            ),
            "post": _operation(
                "Create a graph (version 1)",
                (201, _json(_ref(Graph), "The graph as stored.")),
                (404, 409),
                params=(PROJECT_ID,),
                body=GraphSpec,
            ),
        },
        f"{project}/graphs/validate": {
            "post": _operation(
                "Validate a graph without storing it",
                (200, _json(_ref(ValidGraph), "The graph is valid.")),
                (404,),
                params=(PROJECT_ID,),
                body=GraphSpec,
            ),
        },
        f"{project}/graphs/{{workflow_id}}": {
            "get": _operation(
                "Get a graph (its current version, or `version` N: every version is kept)",
                (200, _json(_ref(Graph), "The graph.")),
                (400, 404),
                params=(*graph, VERSION),
            ),
            "put": _operation(
                "Replace a graph (a new version)",
                (200, _json(_ref(Graph), "The new version.")),
                (404, 409),
                params=graph,
                body=GraphSpec,
            ),
            "delete": _operation(
                "Delete a graph (its versions stay readable by its runs)",
                (204, {"description": "Deleted."}),
                (404, 409),
                params=graph,
            ),
        },
        f"{project}/runs": {
            "get": _operation(
                "List runs, newest first, a page at a time; the filters given all hold",
                (200, _page(Run, "A page of runs.")),
                (400, 404),
                params=(PROJECT_ID, *RUN_FILTERS, *PAGE_PARAMS),
            ),
            "post": _with_repeat(
                _operation(
                    "Start a run (queued at once; with `Prefer: wait=N`, answered once it settles)",
                    (201, _started("The new run (pending, or as it stands after the wait).")),
                    (404,),
                    params=(PROJECT_ID, IDEMPOTENCY, WAIT),
                    body=CreateRunBody,
                )
            ),
        },
        f"{project}/runs/{{run_id}}": {
            "get": _operation("Get a run", run_ok, (404,), params=run),
        },
        f"{project}/runs/{{run_id}}/execute": {
            "post": _operation(
                "Execute a run again (from its last checkpoint, or from the start)",
                run_ok,
                (400, 404, 409),
                params=run,
                body=ExecuteBody,
                body_required=False,
            ),
        },
        f"{project}/runs/{{run_id}}/cancel": {
            "post": _operation("Cancel a run", run_ok, (400, 404), params=run),
        },
        f"{project}/runs/{{run_id}}/pause": {
            "post": _operation("Pause a run", run_ok, (400, 404), params=run),
        },
        f"{project}/runs/{{run_id}}/resume": {
            "post": _operation(
                "Resume a paused run (`value` answers one waiting for input)",
                run_ok,
                (400, 404),
                params=run,
                body=ResumeBody,
                body_required=False,
            ),
        },
        f"{project}/runs/{{run_id}}/status": {
            "get": _operation(
                "A run's status and its nodes' states",
                (200, _json(_ref(RunStatusReport), "The status.")),
                (404,),
                params=run,
            ),
        },
        f"{project}/runs/{{run_id}}/events": {
            "get": _operation(
                "A run's events after `since`, in seq order",
                (200, _json(_array(Event), "The events.")),
                (400, 404),
                params=(
                    *run,
                    SINCE,
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 10_000}, "Most."),
                ),
            ),
        },
        f"{project}/schedules": {
            "get": _operation(
                "List the project's schedules",
                (200, _json(_array(Schedule), "The schedules.")),
                (404,),
                params=(PROJECT_ID,),
            ),
            "post": _operation(
                "Create a schedule (a five-field cron in a timezone; 422 for a bad cron, "
                "timezone, catchup or an unknown graph)",
                (201, _json(_ref(Schedule), "The schedule, with its `next_run_at`.")),
                (404, 409),
                params=(PROJECT_ID,),
                body=ScheduleSpec,
            ),
        },
        f"{project}/schedules/{{schedule_id}}": {
            "get": _operation(
                "Get a schedule",
                (200, _json(_ref(Schedule), "The schedule.")),
                (404,),
                params=schedule,
            ),
            "put": _operation(
                "Replace a schedule (its next time is computed again; `last_run_at` stays)",
                (200, _json(_ref(Schedule), "The schedule.")),
                (404,),
                params=schedule,
                body=ScheduleSpec,
            ),
            "delete": _operation(
                "Delete a schedule (its runs stay)",
                (204, {"description": "Deleted."}),
                (404,),
                params=schedule,
            ),
        },
        f"{project}/webhooks": {
            "get": _operation(
                "List the project's webhooks (without their secrets)",
                (200, _json(_array(WebhookView), "The webhooks.")),
                (404,),
                params=(PROJECT_ID,),
            ),
            "post": _operation(
                "Create a webhook: the answer is the only one that shows its secret",
                (201, _json(_ref(WebhookView), "The webhook, with its `url` and `secret`.")),
                (404, 409),
                params=(PROJECT_ID,),
                body=WebhookSpec,
            ),
        },
        f"{project}/webhooks/{{hook_id}}": {
            "get": _operation(
                "Get a webhook (without its secret)",
                (200, _json(_ref(WebhookView), "The webhook.")),
                (404,),
                params=(PROJECT_ID, HOOK_ID),
            ),
            "delete": _operation(
                "Delete a webhook (its runs stay)",
                (204, {"description": "Deleted."}),
                (404,),
                params=(PROJECT_ID, HOOK_ID),
            ),
        },
        HOOK_ROUTE: {
            "post": _with_repeat(
                _operation(
                    "Start a run of the hook's graph with the JSON body as input (no token: "
                    "the signature is the credential)",
                    (201, _started("The new run.")),
                    (400, 401, 404, 413, 415, 422),
                    params=(HOOK_ID, SIGNATURE, TIMESTAMP, IDEMPOTENCY),
                    secured=False,
                )
                | {
                    "requestBody": {
                        "required": False,
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                }
            ),
        },
        "/api/projects/{project_id}/ws": {
            "get": _operation(
                "WebSocket: the project's events, one per text frame (`since` replays first)",
                (101, {"description": "Switching to the WebSocket protocol."}),
                (400, 404, 429),
                params=(
                    PROJECT_ID,
                    SINCE,
                    _query("run_id", {"type": "string"}, "Only this run's events."),
                    _query("token", {"type": "string"}, "A token, for browsers."),
                    _query("access_token", {"type": "string"}, "The same, older spelling."),
                ),
            )
            | {"security": [{"bearer": []}, {"token": []}, {"access_token": []}]},
        },
        "/api/node-types": {
            "get": _operation(
                "The node types plugins provide",
                (200, _json(_array(NodeTypeInfo), "The node types.")),
            ),
        },
        "/api/plugins": {
            "get": _operation(
                "The plugins loaded (admin)",
                (200, _json(_array(PluginInfo), "The plugins.")),
            ),
        },
        "/healthz": {
            "get": _operation(
                "Whether the process serves",
                (200, _json(_ref(Health), "It does.")),
                secured=False,
            ),
        },
        "/readyz": {
            "get": _operation(
                "Whether the store answers and takes writes, and the engine takes runs",
                (200, _json(_ref(Readiness), "Ready.")),
                secured=False,
            )
            | {"responses": _readiness_responses()},
        },
        "/": {"get": _to_dashboard("The dashboard: redirects to /ui/")},
        "/ui": {"get": _to_dashboard("The dashboard: redirects to /ui/")},
        "/ui/{path}": {
            "get": _operation(
                "The dashboard: the page for any /ui/... path, its files under /ui/assets/",
                (200, _dashboard_file()),
                (404,),
                params=(
                    {
                        "name": "path",
                        "in": "path",
                        "required": True,
                        "description": "A view's path, or assets/<build>/<file>.",
                        "schema": {"type": "string"},
                    },
                ),
                secured=False,
            )
            | {"responses": _dashboard_responses()},
        },
        "/openapi.json": {
            "get": _operation(
                "This document",
                (200, _json({"type": "object"}, "The OpenAPI 3.1 document.")),
                secured=False,
            ),
        },
        "/metrics": {
            "get": _operation(
                "Prometheus metrics (admin, unless [metrics] public = true)",
                (
                    200,
                    {
                        "description": "The text exposition format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                ),
            ),
        },
    }


def _dashboard_file() -> JSON:
    text = {"schema": {"type": "string"}}
    types = ("text/html", "text/javascript", "text/css", "image/svg+xml")
    return {"description": "The page, or one of its files.", "content": dict.fromkeys(types, text)}


def _dashboard_responses() -> JSON:
    not_found = {PROBLEM_TYPE: {"schema": _ref(ProblemDocument)}}
    return {
        "200": _dashboard_file(),
        "304": {"description": "Not modified: the ETag sent in If-None-Match still holds."},
        "404": {"description": "No such dashboard file.", "content": not_found},
    }


def _to_dashboard(summary: str) -> JSON:
    location = {"description": "/ui/", "schema": {"type": "string"}}
    moved = {"description": "To the dashboard.", "headers": {"Location": location}}
    return {"summary": summary, "security": [], "responses": {"302": moved}}


def _readiness_responses() -> JSON:
    readiness = _ref(Readiness)
    return {
        "200": _json(readiness, "Ready."),
        "503": _json(readiness, "Not ready: `checks` says what is not."),
    }


@lru_cache(maxsize=4)
def document(routes: frozenset[tuple[str, str]] | None = None) -> JSON:
    """The document; with ``routes`` ((METHOD, path template) pairs), only those operations."""
    paths: dict[str, dict[str, JSON]] = {}
    for path, operations in _paths().items():
        kept = {
            method: operation
            for method, operation in operations.items()
            if routes is None or (method.upper(), path) in routes
        }
        if kept:
            paths[path] = kept
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "cortexd",
            "version": _version(),
            "description": "A workflow daemon: stores workflow graphs and runs them durably.",
        },
        "paths": paths,
        "components": {
            "schemas": _schemas()[1],
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "token": {"type": "apiKey", "in": "query", "name": "token"},
                "access_token": {"type": "apiKey", "in": "query", "name": "access_token"},
            },
        },
        "security": [{"bearer": []}],
    }


def _version() -> str:
    try:
        return version("cortexd")
    except PackageNotFoundError:
        return "0"
