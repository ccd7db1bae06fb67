"""Errors as RFC 9457 problem documents with the `detail` the original's clients read.

The one place domain errors become status codes. A client never sees a traceback: anything
unexpected is logged with the request id and answered with a plain 500.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic_core import to_json

from core.errors import (
    Conflict,
    CortexdError,
    InvalidTransition,
    LimitExceeded,
    NotFound,
    Problem,
    ValidationFailed,
)

log = structlog.get_logger("cortexd.http")

_STATUS: list[tuple[type[CortexdError], int]] = [
    (NotFound, 404),
    (InvalidTransition, 400),
    (Conflict, 409),
    (ValidationFailed, 422),
    (LimitExceeded, 413),
]


class BadRequest(CortexdError):
    """The request itself is malformed (not JSON, wrong query parameter)."""


def problem(status: int, detail: str, problems: list[Problem] | None = None) -> web.Response:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if problems is not None:
        body["problems"] = [p.to_json() for p in problems]
    return web.Response(body=to_json(body), status=status, content_type="application/problem+json")


def status_of(error: CortexdError) -> int:
    for kind, status in _STATUS:
        if isinstance(error, kind):
            return status
    return 400


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ValidationFailed as exc:
        return problem(422, str(exc), exc.problems)
    except CortexdError as exc:
        return problem(status_of(exc), str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return problem(exc.status, _detail(request, exc))
    except Exception:
        log.exception("request_failed", method=request.method, path=request.path)
        return problem(500, "internal error; the daemon's log has the details")


def _detail(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return f"no such endpoint: {request.method} {request.path}"
    if exc.status == 405:
        return f"method {request.method} is not allowed on {request.path}"
    if exc.text and not exc.text.startswith(f"{exc.status}:"):
        return exc.text
    return exc.reason
