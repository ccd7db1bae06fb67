"""The dashboard (DESIGN §9): its static files, read once from package data, served at /ui/.

Every ``/ui/...`` path that is not an asset answers with the app shell, so a deep link
(``/ui/projects/acme/runs/ID``) loads the page and the page routes itself. Assets live under
``/ui/assets/<build>/``, where ``<build>`` is a digest of every file: an asset's URL changes when
any file does, so assets are cached as immutable and the shell (``no-cache`` with an ETag) is the
one request a reload makes, answered 304 while nothing changed. The page needs no token to load;
the API calls it makes carry one (``adapters/http/auth.py``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from adapters.http.problems import problem

UI_PACKAGE = "adapters.ui"
SHELL = "index.html"
ASSETS = "assets/"
BUILD_MARK = "{{build}}"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
}
# No inline script or style anywhere, nothing from another origin; 'self' also covers the
# WebSocket to the same host (CSP Level 3).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str  # quoted, as sent

    @classmethod
    def of(cls, name: str, body: bytes) -> StaticFile:
        suffix = name[name.rfind(".") :] if "." in name else ""
        content_type = CONTENT_TYPES.get(suffix, "application/octet-stream")
        return cls(body, content_type, f'"{hashlib.sha256(body).hexdigest()[:20]}"')


class UiFiles:
    """The dashboard's files, in memory (about 100 kB): the shell and the assets by path."""

    def __init__(self, assets: dict[str, bytes]) -> None:
        digest = hashlib.sha256()
        for name in sorted(assets):
            digest.update(name.encode() + b"\0" + assets[name] + b"\0")
        self.build = digest.hexdigest()[:12]
        shell = assets.pop(SHELL).replace(BUILD_MARK.encode(), self.build.encode())
        self.shell = StaticFile.of(SHELL, shell)
        self.assets = {name: StaticFile.of(name, body) for name, body in assets.items()}

    @classmethod
    def from_package(cls, package: str = UI_PACKAGE) -> UiFiles:
        found: dict[str, bytes] = {}
        _collect(files(package), "", found)
        return cls(found)


def _collect(folder: Traversable, prefix: str, found: dict[str, bytes]) -> None:
    for entry in folder.iterdir():
        name = prefix + entry.name
        if entry.is_dir():
            if entry.name != "__pycache__":
                _collect(entry, name + "/", found)
        elif not entry.name.endswith((".py", ".pyc")):
            found[name] = entry.read_bytes()


def _answer(request: web.Request, file: StaticFile, cache_control: str) -> web.Response:
    headers = {**SECURITY_HEADERS, hdrs.CACHE_CONTROL: cache_control, hdrs.ETAG: file.etag}
    if file.etag in _etags(request.headers.get(hdrs.IF_NONE_MATCH, "")):
        return web.Response(status=304, headers=headers)
    return web.Response(body=file.body, headers={**headers, hdrs.CONTENT_TYPE: file.content_type})


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


def ui_handler(ui: UiFiles) -> Handler:
    async def serve(request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        if not path.startswith(ASSETS):
            return _answer(request, ui.shell, REVALIDATE)
        build, _, name = path.removeprefix(ASSETS).partition("/")
        file = ui.assets.get(name)
        if file is None:
            return problem(404, f"no such dashboard file: {name!r}", headers=SECURITY_HEADERS)
        # An asset asked for under an older build (a page loaded before an upgrade) is today's
        # file: served, but not to be kept as that build's.
        return _answer(request, file, IMMUTABLE if build == ui.build else REVALIDATE)

    return serve


async def to_dashboard(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/ui/")


def add_ui_routes(app: web.Application, ui: UiFiles | None = None) -> None:
    """``GET /`` and ``GET /ui`` redirect to ``/ui/``; ``/ui/...`` is the dashboard."""
    app.router.add_get("/", to_dashboard)
    app.router.add_get("/ui", to_dashboard)
    app.router.add_get("/ui/{path:.*}", ui_handler(ui or UiFiles.from_package()))
