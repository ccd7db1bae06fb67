"""The aiohttp application factory: middlewares and routes. State is put in by the daemon."""

from __future__ import annotations

from aiohttp import web

from adapters.http.auth import Access, auth_middleware
from adapters.http.keys import ACCESS, METRICS
from adapters.http.problems import problem_middleware
from adapters.http.request_id import echo_request_id, request_id_middleware
from adapters.http.routes import add_routes, close_sockets
from adapters.http.ui import add_ui_routes
from adapters.metrics import Metrics


def create_app(
    *, metrics: Metrics, max_request_bytes: int = 1_048_576, access: Access | None = None
) -> web.Application:
    access = access or Access(enabled=False)
    # Outermost first: the request id is bound before anything logs; the timing includes the
    # problem documents the inner middlewares make of errors.
    # Auth sits inside the problem middleware, so its refusals are problem documents too.
    middlewares = [
        request_id_middleware,
        metrics.middleware,
        problem_middleware,
        auth_middleware(access),
    ]
    app = web.Application(middlewares=middlewares, client_max_size=max_request_bytes)
    app[METRICS] = metrics
    app[ACCESS] = access
    add_routes(app)
    add_ui_routes(app)
    app.router.add_get("/metrics", metrics.handler)
    app.on_response_prepare.append(echo_request_id)
    app.on_shutdown.append(close_sockets)
    return app
