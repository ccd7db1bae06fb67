"""Errors as RFC 9457 problem documents with the `detail` the original's clients read.

The one place domain errors become status codes. A client never sees a traceback: anything
unexpected is logged with the request id and answered with a plain 500.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic_core import to_json

from core.errors import (
    Conflict,
    CortexdError,
    InvalidCursor,
    InvalidTransition,
    LimitExceeded,
    NotFound,
    Problem,
    StoreFull,
    StoreUnavailable,
    ValidationFailed,
)

log = structlog.get_logger("cortexd.http")

_STATUS: list[tuple[type[CortexdError], int]] = [
    (NotFound, 404),
    (InvalidTransition, 400),
    (InvalidCursor, 400),
    (Conflict, 409),
    (ValidationFailed, 422),
    (LimitExceeded, 413),
    (StoreFull, 507),
    (StoreUnavailable, 503),
]
# How long a client is asked to wait before it tries a write the store could not take.
STORE_RETRY_AFTER_S = 1


class HttpProblem(CortexdError):
    """An error of the HTTP layer itself, carrying its status (and headers) with it."""

    status = 400

    def __init__(self, detail: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.headers = dict(headers or {})


class BadRequest(HttpProblem):
    """The request itself is malformed (not JSON, wrong query parameter)."""


class Unauthorized(HttpProblem):
    status = 401


class Forbidden(HttpProblem):
    status = 403


class UnsupportedMediaType(HttpProblem):
    status = 415


class TooManyRequests(HttpProblem):
    status = 429


def problem(
    status: int,
    detail: str,
    problems: list[Problem] | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if problems is not None:
        body["problems"] = [p.to_json() for p in problems]
    return web.Response(
        body=to_json(body),
        status=status,
        content_type="application/problem+json",
        headers=headers,
    )


def status_of(error: CortexdError) -> int:
    if isinstance(error, HttpProblem):
        return error.status
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
    except HttpProblem as exc:
        return problem(exc.status, str(exc), headers=exc.headers)
    except StoreUnavailable as exc:
        log.warning("store_unavailable", method=request.method, path=request.path, error=str(exc))
        retry = {"Retry-After": str(STORE_RETRY_AFTER_S)}
        return problem(status_of(exc), str(exc), headers=retry)
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
