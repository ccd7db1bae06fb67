"""Bearer tokens: who may call what.

A token is presented as ``Authorization: Bearer <token>`` (a WebSocket handshake may use
``?token=`` or ``?access_token=`` instead: browsers cannot set headers there). Only SHA-256
digests are configured; the digest of what is presented is compared with every one of them in
constant time. Roles are ordered: read (GET, WebSocket) < write (+ graph and run changes) < admin
(+ everything else: /api/plugins, /metrics). Health, the OpenAPI document and the dashboard's
files (``/``, ``/ui/...``: the page asks for a token, its API calls carry it) are always open.

The tokens live in an :class:`Access` held by the app, whose token list SIGHUP swaps.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from adapters.config import Settings, TokenSettings
from adapters.http.problems import Forbidden, Unauthorized

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/", "/ui"})
UI_PREFIX = "/ui/"
# A hook's runs need no token: the request's signature is the credential (DESIGN §10).
HOOK_ROUTE = "/api/hooks/{hook_id}"
METRICS_PATH = "/metrics"
# Routes any valid token may read, whatever its projects.
CATALOGUE_PATHS = frozenset({"/api/node-types"})
PROJECT_PREFIX = "/api/projects/{project_id}/"
# `token` is what the dashboard sends (DESIGN §9); `access_token` is the older spelling.
QUERY_TOKENS = ("token", "access_token")
CHALLENGE = "WWW-Authenticate"
ALL_PROJECTS = "*"
_SAFE_METHODS = frozenset({hdrs.METH_GET, hdrs.METH_HEAD})


class Role(IntEnum):
    READ = 1
    WRITE = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Token:
    """A configured token: its name (for logs and limits), scope and role. Never the secret."""

    name: str
    digest: bytes = field(repr=False)
    projects: frozenset[str]  # {"*"}: every project
    role: Role

    @classmethod
    def from_settings(cls, settings: TokenSettings) -> Token:
        return cls(
            name=settings.name,
            digest=bytes.fromhex(settings.sha256),
            projects=frozenset(settings.projects),
            role=Role[settings.role.upper()],
        )

    def covers(self, project_id: str) -> bool:
        return ALL_PROJECTS in self.projects or project_id in self.projects

    def allows(self, role: Role, project_id: str | None) -> bool:
        return self.role >= role and (project_id is None or self.covers(project_id))


PRINCIPAL = web.RequestKey("principal", Token)


class Access:
    """Whether auth is on, the policy's one setting, and the current tokens (swapped live)."""

    def __init__(
        self, *, enabled: bool, tokens: Sequence[Token] = (), metrics_public: bool = False
    ) -> None:
        self.enabled = enabled
        self.metrics_public = metrics_public
        self._tokens: tuple[Token, ...] = tuple(tokens)

    @classmethod
    def from_settings(cls, settings: Settings) -> Access:
        return cls(
            enabled=settings.auth.enabled,
            tokens=tokens_from(settings.auth.tokens),
            metrics_public=settings.metrics.public,
        )

    def replace_tokens(self, tokens: Sequence[Token]) -> None:
        self._tokens = tuple(tokens)

    def identify(self, presented: str) -> Token | None:
        """The token whose digest is that of ``presented``. Every digest is compared, in
        constant time, so the time taken tells nothing about which one came close."""
        digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        found = None
        for token in self._tokens:
            if hmac.compare_digest(digest, token.digest):
                found = token
        return found

    def still_allows(self, token: Token, role: Role, project_id: str | None) -> bool:
        """Whether ``token`` (as it was when a client connected) is still configured, with
        at least ``role`` on ``project_id``: a reload may have revoked or narrowed it."""
        current = next(
            (t for t in self._tokens if hmac.compare_digest(t.digest, token.digest)), None
        )
        return current is not None and current.allows(role, project_id)


def tokens_from(settings: Iterable[TokenSettings]) -> list[Token]:
    return [Token.from_settings(t) for t in settings]


def principal(request: web.Request) -> Token | None:
    """The token the request was authenticated with (None when auth is off or not needed)."""
    return request.get(PRINCIPAL)


def required_role(request: web.Request, metrics_public: bool) -> Role | None:
    """What a request needs: None for the open endpoints. A route without a rule of its own
    needs admin, so a route added later is closed until someone decides otherwise."""
    path = request.path
    ui = path.startswith(UI_PREFIX)
    if path in OPEN_PATHS or ui or (path == METRICS_PATH and metrics_public):
        return None
    if path == METRICS_PATH:
        return Role.ADMIN
    route = request.match_info.route.resource
    template = route.canonical if route is not None else None
    if template is None:  # no such endpoint: a token is needed to learn even that
        return Role.READ
    if template == HOOK_ROUTE:
        return None
    if template.startswith(PROJECT_PREFIX) or template in CATALOGUE_PATHS:
        return Role.READ if request.method in _SAFE_METHODS else Role.WRITE
    return Role.ADMIN


def _presented(request: web.Request) -> str | None:
    header = request.headers.get(hdrs.AUTHORIZATION)
    if header is not None:
        scheme, _, credentials = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise Unauthorized(
                "the Authorization header must be 'Bearer <token>'",
                {CHALLENGE: 'Bearer realm="cortexd", error="invalid_request"'},
            )
        return credentials.strip()
    is_websocket = request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"
    if is_websocket:
        for name in QUERY_TOKENS:
            if name in request.query:
                return request.query[name]
    return None


def auth_middleware(access: Access) -> Middleware:
    """Refuses, as problem documents, a request without a valid token (401) or whose token
    lacks the role or the project (403). It sits inside the problem middleware."""

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not access.enabled:
            return await handler(request)
        needed = required_role(request, access.metrics_public)
        if needed is None:
            return await handler(request)
        presented = _presented(request)
        if presented is None:
            raise Unauthorized(
                "this endpoint needs a token: send 'Authorization: Bearer <token>'",
                {CHALLENGE: 'Bearer realm="cortexd"'},
            )
        token = access.identify(presented)
        if token is None:
            raise Unauthorized(
                "the token is not valid (unknown, or revoked)",
                {CHALLENGE: 'Bearer realm="cortexd", error="invalid_token"'},
            )
        project_id = request.match_info.get("project_id")
        insufficient = {CHALLENGE: 'Bearer realm="cortexd", error="insufficient_scope"'}
        if token.role < needed:
            raise Forbidden(
                f"token {token.name!r} has the {token.role.label} role; "
                f"{request.method} {request.path} needs {needed.label}",
                insufficient,
            )
        if project_id is not None and not token.covers(project_id):
            raise Forbidden(
                f"token {token.name!r} is not valid for project {project_id!r}", insufficient
            )
        request[PRINCIPAL] = token
        return await handler(request)

    return authenticate
