"""The HTTP API: the original service's ten routes, unchanged, and cortexd's additions."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from pydantic_core import to_json

from adapters.http.inputs import (
    MAX_SEQ,
    RUN_ID_PATTERN,
    CreateRunBody,
    ExecuteBody,
    ResumeBody,
    optional_query_int,
    query_int,
    query_statuses,
    query_time,
    query_value,
    read_body,
    read_json,
)
from adapters.http.keys import ENGINE, PLUGINS, READY_CHECK, SCHEDULES, SERVICE, SOCKETS
from adapters.http.openapi import document
from adapters.http.problems import BadRequest, problem
from core.domain import ID_PATTERN
from core.errors import NotFound
from core.pages import MAX_PAGE, Page, RunFilter

PROJECT = "/api/projects/{project_id}/workflows"
_ID = re.compile(ID_PATTERN)
_RUN_ID = re.compile(RUN_ID_PATTERN)


def reply(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=to_json(data), status=status, content_type="application/json")


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
    body = await read_body(request, CreateRunBody, required=True)
    run = await request.app[SERVICE].create_run(_project(request), body.workflow_id, body.input)
    return reply(run, status=201)


async def list_runs(request: web.Request) -> web.Response:
    workflow_id = query_value(request, "workflow_id")
    if workflow_id is not None and not _ID.match(workflow_id):
        shown = workflow_id if len(workflow_id) <= 100 else workflow_id[:100] + "..."
        raise BadRequest(f"query parameter 'workflow_id' is not a valid graph id: {shown!r}")
    filters = RunFilter(
        workflow_id=workflow_id,
        statuses=query_statuses(request),
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
    app.router.add_get("/api/projects/{project_id}/ws", event_socket)
    app.router.add_get("/api/node-types", node_types)
    app.router.add_get("/api/plugins", plugins)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/openapi.json", openapi)
