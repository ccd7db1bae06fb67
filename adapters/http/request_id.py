"""Request ids: the client's `X-Request-ID` when it is sane, else a new one; echoed in the
response and bound to every log line written while the request is handled."""

from __future__ import annotations

import re
import uuid

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

HEADER = "X-Request-ID"
# Bounded, and nothing that could forge a log field or a header: no spaces, quotes or controls.
_SANE = re.compile(r"[A-Za-z0-9._:@+=/-]{1,128}")


def accepted(value: str | None) -> str | None:
    """The client's id if it is safe to log and echo as it is."""
    return value if value is not None and _SANE.fullmatch(value) else None


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = accepted(request.headers.get(HEADER)) or uuid.uuid4().hex
    with structlog.contextvars.bound_contextvars(request_id=request_id):
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # answered by aiohttp itself (a redirect, say)
            exc.headers[HEADER] = request_id
            raise
    if not response.prepared:
        response.headers[HEADER] = request_id
    return response


async def echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: a response the handler sends itself (a WebSocket handshake) is
    prepared inside the request's context, before the middleware could add the header."""
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    if request_id is not None and HEADER not in response.headers:
        response.headers[HEADER] = request_id
