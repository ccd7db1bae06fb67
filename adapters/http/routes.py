"""The HTTP API: the original service's ten routes, unchanged, and cortexd's additions."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from pydantic_core import to_json

from adapters.http.auth import HOOK_ROUTE
from adapters.http.inputs import (
    MAX_SEQ,
    PREFERENCE_APPLIED,
    RUN_ID_PATTERN,
    CreateRunBody,
    ExecuteBody,
    ResumeBody,
    canonical_json,
    idempotency_key,
    one_header,
    optional_query_int,
    parse_json,
    query_int,
    query_statuses,
    query_time,
    query_trigger,
    query_value,
    read_body,
    read_json,
    wait_preference,
)
from adapters.http.keys import (
    ENGINE,
    PLUGINS,
    READY_CHECK,
    RUN_POLICY,
    SCHEDULES,
    SERVICE,
    SOCKETS,
    WEBHOOKS,
)
from adapters.http.openapi import document
from adapters.http.problems import BadRequest, Unauthorized, UnsupportedMediaType, problem
from core.domain import ID_PATTERN
from core.errors import NotFound
from core.pages import MAX_PAGE, Page, RunFilter
from core.service import Started
from core.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER
from core.webhooks import BadSignature, Webhook

PROJECT = "/api/projects/{project_id}/workflows"
_ID = re.compile(ID_PATTERN)
_RUN_ID = re.compile(RUN_ID_PATTERN)


def reply(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        body=to_json(data), status=status, content_type="application/json", headers=headers
    )


def _query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    return query_int(request, name, default, low, high)


def _path_id(request: web.Request, name: str, kind: str, pattern: re.Pattern[str]) -> str:
    """An id from the path. One without the form of an id names nothing: a 404 like any other,
    before it reaches the service (or the database)."""
    value = request.match_info[name]
    if not pattern.match(value):
        raise NotFound(kind, value if len(value) <= 100 else value[:100] + "...")
    return value


def _project(request: web.Request) -> str:
    return _path_id(request, "project_id", "project", _ID)


def _graph_id(request: web.Request) -> str:
    return _path_id(request, "workflow_id", "graph", _ID)


def _run_id(request: web.Request) -> str:
    return _path_id(request, "run_id", "run", _RUN_ID)


def paged(request: web.Request, page: Page[Any]) -> web.Response:
    """A page as the JSON array it always was; `Link: rel="next"` (RFC 8288) when more exist:
    this request's URL, path and query, with the next cursor (a reference relative to it, so
    that it stays right behind a proxy that changes the host or the scheme)."""
    response = reply(page.items)
    if page.cursor is not None:
        following = request.rel_url.update_query(cursor=page.cursor)
        response.headers["Link"] = f'<{following}>; rel="next"'
    return response


def _query_run_id(request: web.Request, name: str) -> str | None:
    value = query_value(request, name)
    if value is not None and not _RUN_ID.match(value):
        raise BadRequest(f"query parameter {name!r} is not a run id (a UUID)")
    return value


def _page_params(request: web.Request) -> tuple[int, str | None]:
    return _query_int(request, "limit", MAX_PAGE, 1, MAX_PAGE), query_value(request, "cursor")


# -- graphs ------------------------------------------------------------------------------------


async def list_graphs(request: web.Request) -> web.Response:
    limit, cursor = _page_params(request)
    return paged(request, await request.app[SERVICE].list_graphs(_project(request), limit, cursor))


async def get_graph(request: web.Request) -> web.Response:
    graph_id = _graph_id(request)
    version = optional_query_int(request, "version", 1, 2**62)
    return reply(await request.app[SERVICE].get_graph(_project(request), graph_id, version))


async def create_graph(request: web.Request) -> web.Response:
    data = await read_json(request)
    return reply(await request.app[SERVICE].create_graph(_project(request), data), status=201)


async def replace_graph(request: web.Request) -> web.Response:
    data = await read_json(request)
    graph_id = _graph_id(request)
    return reply(await request.app[SERVICE].replace_graph(_project(request), graph_id, data))


async def delete_graph(request: web.Request) -> web.Response:
    graph_id = _graph_id(request)
    await request.app[SERVICE].delete_graph(_project(request), graph_id)
    return web.Response(status=204)


async def validate_graph(request: web.Request) -> web.Response:
    problems = request.app[SERVICE].validate_graph(await read_json(request))
    if problems:
        return problem(422, "the graph is not valid", problems)
    return reply({"valid": True, "problems": []})


# -- runs --------------------------------------------------------------------------------------


async def create_run(request: web.Request) -> web.Response:
    project_id = _project(request)
    body = await read_body(request, CreateRunBody, required=True)
    ttl_s = request.app[RUN_POLICY].idempotency_ttl_s
    target = f"graph:{body.workflow_id}"
    key = idempotency_key(request, target, canonical_json(body.input or {}), ttl_s)
    wait = wait_preference(request)
    started = await request.app[SERVICE].start_run(
        project_id, body.workflow_id, body.input, key=key
    )
    return await _started(request, project_id, started, wait)


async def _started(
    request: web.Request, project_id: str, started: Started, wait: int | None = None
) -> web.Response:
    """201 with a new run, 200 with the one an earlier request with the key made; with a
    `wait=N` preference, once the run settled or after N seconds (capped by the config)."""
    run, headers = started.run, {}
    if wait is not None:
        seconds = min(float(wait), request.app[RUN_POLICY].max_wait_s)
        run = await request.app[SERVICE].wait_for(project_id, run.id, seconds)
        headers[PREFERENCE_APPLIED] = f"wait={seconds:g}"
    return reply(run, status=201 if started.created else 200, headers=headers)


async def list_runs(request: web.Request) -> web.Response:
    workflow_id = query_value(request, "workflow_id")
    if workflow_id is not None and not _ID.match(workflow_id):
        shown = workflow_id if len(workflow_id) <= 100 else workflow_id[:100] + "..."
        raise BadRequest(f"query parameter 'workflow_id' is not a valid graph id: {shown!r}")
    filters = RunFilter(
        workflow_id=workflow_id,
        statuses=query_statuses(request),
        trigger=query_trigger(request),
        parent_run_id=_query_run_id(request, "parent_run_id"),
        created_after=query_time(request, "created_after"),
        created_before=query_time(request, "created_before"),
    )
    limit, cursor = _page_params(request)
    page = await request.app[SERVICE].list_runs(_project(request), filters, limit, cursor)
    return paged(request, page)


async def get_run(request: web.Request) -> web.Response:
    run_id = _run_id(request)
    return reply(await request.app[SERVICE].get_run(_project(request), run_id))


async def execute_run(request: web.Request) -> web.Response:
    body = await read_body(request, ExecuteBody, required=False)
    run = await request.app[SERVICE].execute(
        _project(request), _run_id(request), body.input, body.from_start
    )
    return reply(run)


async def cancel_run(request: web.Request) -> web.Response:
    run_id = _run_id(request)
    return reply(await request.app[SERVICE].cancel(_project(request), run_id))


async def pause_run(request: web.Request) -> web.Response:
    run_id = _run_id(request)
    return reply(await request.app[SERVICE].pause(_project(request), run_id))


async def resume_run(request: web.Request) -> web.Response:
    body = await read_body(request, ResumeBody, required=False)
    value = (body.value,) if "value" in body.model_fields_set else ()
    run_id = _run_id(request)
    return reply(await request.app[SERVICE].resume(_project(request), run_id, *value))


async def run_status(request: web.Request) -> web.Response:
    run_id = _run_id(request)
    return reply(await request.app[SERVICE].status(_project(request), run_id))


async def run_events(request: web.Request) -> web.Response:
    since = _query_int(request, "since", 0, 0, MAX_SEQ)
    limit = _query_int(request, "limit", 1000, 1, 10_000)
    events = await request.app[SERVICE].events(_project(request), since, _run_id(request), limit)
    return reply(events)


# -- schedules ---------------------------------------------------------------------------------


def _schedule_id(request: web.Request) -> str:
    return _path_id(request, "schedule_id", "schedule", _ID)


async def list_schedules(request: web.Request) -> web.Response:
    return reply(await request.app[SCHEDULES].list(_project(request)))


async def create_schedule(request: web.Request) -> web.Response:
    data = await read_json(request)
    return reply(await request.app[SCHEDULES].create(_project(request), data), status=201)


async def get_schedule(request: web.Request) -> web.Response:
    schedule_id = _schedule_id(request)
    return reply(await request.app[SCHEDULES].get(_project(request), schedule_id))


async def replace_schedule(request: web.Request) -> web.Response:
    data = await read_json(request)
    schedule_id = _schedule_id(request)
    return reply(await request.app[SCHEDULES].replace(_project(request), schedule_id, data))


async def delete_schedule(request: web.Request) -> web.Response:
    schedule_id = _schedule_id(request)
    await request.app[SCHEDULES].delete(_project(request), schedule_id)
    return web.Response(status=204)


# -- webhooks ----------------------------------------------------------------------------------


def _hook_id(request: web.Request) -> str:
    return _path_id(request, "hook_id", "webhook", _ID)


def _hook(request: web.Request, hook: Webhook) -> dict[str, Any]:
    """A hook as the API shows it: with the URL its callers POST to (from the Host this request
    came to), and the secret only when the hook was just made."""
    shown = hook.model_dump(mode="json", exclude={"project_id"})
    if hook.secret is None:
        del shown["secret"]
    shown["url"] = str(request.url.origin().with_path(f"/api/hooks/{hook.id}"))
    return shown


async def list_webhooks(request: web.Request) -> web.Response:
    hooks = await request.app[WEBHOOKS].list(_project(request))
    return reply([_hook(request, hook) for hook in hooks])


async def create_webhook(request: web.Request) -> web.Response:
    data = await read_json(request)
    hook = await request.app[WEBHOOKS].create(_project(request), data)
    return reply(_hook(request, hook), status=201)


async def get_webhook(request: web.Request) -> web.Response:
    hook_id = _hook_id(request)
    return reply(_hook(request, await request.app[WEBHOOKS].get(_project(request), hook_id)))


async def delete_webhook(request: web.Request) -> web.Response:
    hook_id = _hook_id(request)
    await request.app[WEBHOOKS].delete(_project(request), hook_id)
    return web.Response(status=204)


async def call_webhook(request: web.Request) -> web.Response:
    """A signed request starts a run (no bearer token: the signature is the credential).
    The order of the checks: the hook (404), the signature (401), the body (415)."""
    hooks = request.app[WEBHOOKS]
    hook = await hooks.find(_hook_id(request))
    body = await request.read()
    try:
        hooks.authenticate(
            hook,
            body,
            one_header(request, SIGNATURE_HEADER),
            one_header(request, TIMESTAMP_HEADER),
        )
    except BadSignature as exc:
        raise Unauthorized(
            str(exc), {"WWW-Authenticate": 'Signature realm="cortexd-hooks"'}
        ) from None
    if request.content_type not in ("application/json", "application/octet-stream") and not (
        request.content_type.endswith("+json")
    ):
        raise UnsupportedMediaType(
            f"a hook's body is JSON (Content-Type: application/json), not {request.content_type}"
        )
    try:
        data = parse_json(body, required=False)
    except BadRequest as exc:
        raise UnsupportedMediaType(f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UnsupportedMediaType("a hook's body is a JSON object (it becomes the run's input)")
    ttl_s = request.app[RUN_POLICY].idempotency_ttl_s
    key = idempotency_key(request, f"hook:{hook.id}", body, ttl_s)
    return await _started(request, hook.project_id, await hooks.start(hook, data, key))


# -- catalogue and health ----------------------------------------------------------------------


async def node_types(request: web.Request) -> web.Response:
    catalogue = request.app[PLUGINS].node_types.values()
    return reply(
        [
            {
                "name": t.name,
                "title": t.title,
                "description": t.description,
                "config_schema": t.config_schema,
            }
            for t in sorted(catalogue, key=lambda t: t.name)
        ]
    )


async def plugins(request: web.Request) -> web.Response:
    return reply(request.app[PLUGINS].info())


async def healthz(request: web.Request) -> web.Response:
    return reply({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    readiness = await request.app[READY_CHECK]()
    checks = readiness.checks
    engine = request.app[ENGINE]
    runs: dict[str, Any] = {"running": engine.running, "queued": engine.queued}
    if checks.get("store"):
        store = await engine.counts()
        runs["queued"] = store.claimable
        runs["store"] = {"pending": store.pending, "running": store.running, "paused": store.paused}
    ready = all(checks.values())
    body: dict[str, Any] = {
        "status": "ready" if ready else "not ready",
        "instance": engine.instance,
        "checks": checks,
        "runs": runs,
    }
    if not ready and readiness.detail:
        body["detail"] = readiness.detail
    return reply(body, status=200 if ready else 503)


async def event_socket(request: web.Request) -> web.StreamResponse:
    _project(request)
    return await request.app[SOCKETS].handle(request)


async def openapi(request: web.Request) -> web.Response:
    routes = frozenset(
        (route.method, route.resource.canonical)
        for route in request.app.router.routes()
        if route.resource is not None
    )
    return reply(document(routes))


async def close_sockets(app: web.Application) -> None:
    if SOCKETS in app:
        await app[SOCKETS].close_all(app)


def add_routes(app: web.Application) -> None:
    app.router.add_get(f"{PROJECT}/graphs", list_graphs)
    app.router.add_post(f"{PROJECT}/graphs", create_graph)
    app.router.add_post(f"{PROJECT}/graphs/validate", validate_graph)
    app.router.add_get(f"{PROJECT}/graphs/{{workflow_id}}", get_graph)
    app.router.add_put(f"{PROJECT}/graphs/{{workflow_id}}", replace_graph)
    app.router.add_delete(f"{PROJECT}/graphs/{{workflow_id}}", delete_graph)
    app.router.add_post(f"{PROJECT}/runs", create_run)
    app.router.add_get(f"{PROJECT}/runs", list_runs)
    app.router.add_get(f"{PROJECT}/runs/{{run_id}}", get_run)
    app.router.add_post(f"{PROJECT}/runs/{{run_id}}/execute", execute_run)
    app.router.add_post(f"{PROJECT}/runs/{{run_id}}/cancel", cancel_run)
    app.router.add_post(f"{PROJECT}/runs/{{run_id}}/pause", pause_run)
    app.router.add_post(f"{PROJECT}/runs/{{run_id}}/resume", resume_run)
    app.router.add_get(f"{PROJECT}/runs/{{run_id}}/status", run_status)
    app.router.add_get(f"{PROJECT}/runs/{{run_id}}/events", run_events)
    app.router.add_get(f"{PROJECT}/schedules", list_schedules)
    app.router.add_post(f"{PROJECT}/schedules", create_schedule)
    app.router.add_get(f"{PROJECT}/schedules/{{schedule_id}}", get_schedule)
    app.router.add_put(f"{PROJECT}/schedules/{{schedule_id}}", replace_schedule)
    app.router.add_delete(f"{PROJECT}/schedules/{{schedule_id}}", delete_schedule)
    app.router.add_get(f"{PROJECT}/webhooks", list_webhooks)
    app.router.add_post(f"{PROJECT}/webhooks", create_webhook)
    app.router.add_get(f"{PROJECT}/webhooks/{{hook_id}}", get_webhook)
    app.router.add_delete(f"{PROJECT}/webhooks/{{hook_id}}", delete_webhook)
    app.router.add_post(HOOK_ROUTE, call_webhook)
    app.router.add_get("/api/projects/{project_id}/ws", event_socket)
    app.router.add_get("/api/node-types", node_types)
    app.router.add_get("/api/plugins", plugins)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/openapi.json", openapi)
