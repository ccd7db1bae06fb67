"""The aiohttp application factory: middlewares and routes. State is put in by the daemon."""

from __future__ import annotations

from aiohttp import web

from adapters.http.problems import problem_middleware
from adapters.http.routes import add_routes, close_sockets


def create_app(*, max_request_bytes: int = 1_048_576) -> web.Application:
    app = web.Application(middlewares=[problem_middleware], client_max_size=max_request_bytes)
    add_routes(app)
    app.on_shutdown.append(close_sockets)
    return app
