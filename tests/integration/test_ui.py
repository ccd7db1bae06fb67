"""The dashboard as the daemon serves it: every /ui/ path is the page, its files come from
package data with a strict CSP and cache headers that make a reload cheap, and it loads
without a token while the API it calls does not."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import tomllib
from fnmatch import fnmatch
from html.parser import HTMLParser
from pathlib import Path

import aiohttp
import pytest

from adapters.http.ui import IMMUTABLE, UiFiles
from tests.integration.conftest import Api, ApiFactory, linear

ROOT = Path(__file__).resolve().parents[2]
UI = ROOT / "adapters" / "ui"
DEEP_LINKS = [
    "/ui/",
    "/ui/projects/acme/runs",
    "/ui/projects/acme/runs/3f2c9f4e-0000-4000-8000-000000000000",
    "/ui/projects/acme/graphs",
    "/ui/projects/acme/graphs/orders",
    "/ui/node-types",
    "/ui/no/such/view",  # the page says so itself
]
# The only absolute URL the files may hold: the SVG namespace, which is a name, not a fetch.
ALLOWED_URLS = {"http://www.w3.org/2000/svg"}
READER = "ui-reader-secret"
ADMIN = "ui-admin-secret"
TOKENS = [
    {
        "name": name,
        "sha256": hashlib.sha256(secret.encode()).hexdigest(),
        "projects": ["acme"],
        "role": role,
    }
    for name, secret, role in (("reader", READER, "read"), ("admin", ADMIN, "admin"))
]
AUTH_ENV = {"CORTEXD_AUTH__ENABLED": "true", "CORTEXD_AUTH__TOKENS": json.dumps(TOKENS)}
IMPORT = re.compile(r"""^\s*import\s[^"']*["'](\.{1,2}/[^"']+)["']""", re.MULTILINE)


class Tags(HTMLParser):
    """Every start tag with its attributes, and the text inside <script> and <style>."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in = tag if tag in ("script", "style") else None

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in and data.strip():
            self.inline.append(f"<{self._in}>{data.strip()[:60]}")


async def fetch(api: Api, path: str, **headers: str) -> tuple[aiohttp.ClientResponse, bytes]:
    response = await api.client.get(path, headers=headers, allow_redirects=False)
    return response, await response.read()


def shell_assets(html: str) -> list[str]:
    parser = Tags()
    parser.feed(html)
    return [
        attrs.get("src") or attrs.get("href") or ""
        for tag, attrs in parser.tags
        if tag in ("script", "link")
    ]


def ui_files() -> list[Path]:
    return sorted(
        p
        for p in UI.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".py", ".pyc")
    )


# -- the page at every path ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/ui"])
async def test_the_root_redirects_to_the_dashboard(api: Api, path: str) -> None:
    response, _ = await fetch(api, path)

    assert response.status == 302
    assert response.headers["Location"] == "/ui/"


@pytest.mark.parametrize("path", DEEP_LINKS)
async def test_every_ui_path_answers_with_the_page(api: Api, path: str) -> None:
    response, body = await fetch(api, path)

    assert response.status == 200
    assert response.content_type == "text/html"
    html = body.decode()
    assert '<main id="main"' in html
    assert f"/ui/assets/{UiFiles.from_package().build}/js/main.js" in html


async def test_the_page_has_a_strict_content_security_policy(api: Api) -> None:
    response, _ = await fetch(api, "/ui/projects/acme/runs")

    policy = response.headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in policy  # no 'unsafe-inline', no 'unsafe-eval'
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_the_page_has_no_inline_script_or_style_and_loads_only_its_own_files(
    api: Api,
) -> None:
    _, body = await fetch(api, "/ui/")
    parser = Tags()
    parser.feed(body.decode())

    assert parser.inline == []
    for tag, attrs in parser.tags:
        assert "style" not in attrs, tag
        assert not [name for name in attrs if name.startswith("on")], (tag, attrs)
        if tag == "script":
            assert attrs.get("type") == "module"
            assert (attrs.get("src") or "").startswith("/ui/assets/")
    assert not [tag for tag, _ in parser.tags if tag == "style"]


def test_no_file_of_the_dashboard_points_outside_the_daemon() -> None:
    found = {
        (path.name, url)
        for path in ui_files()
        for url in re.findall(r"https?://[^\s\"'`)<>]+", path.read_text())
        if url not in ALLOWED_URLS
    }

    assert found == set()


def test_no_script_writes_markup_or_style_attributes() -> None:
    """What CSP would refuse at run time (inline style) or what could inject markup."""
    banned = ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(")
    banned += ('setAttribute("style"', "new Function", "cssText")
    for path in ui_files():
        if path.suffix == ".js":
            text = path.read_text()
            assert [word for word in banned if word in text] == [], path.name


async def test_every_module_the_page_imports_is_served(api: Api) -> None:
    """The module graph from the shell, followed through every relative import."""
    _, body = await fetch(api, "/ui/")
    pending = [url for url in shell_assets(body.decode()) if url.endswith(".js")]
    seen: set[str] = set()
    while pending:
        url = pending.pop()
        if url in seen:
            continue
        seen.add(url)
        response, source = await fetch(api, url)
        assert response.status == 200, url
        assert response.content_type == "text/javascript", url
        base = url.rsplit("/", 1)[0]
        for relative in IMPORT.findall(source.decode()):
            parts = f"{base}/{relative}".split("/")
            resolved: list[str] = []
            for part in parts:
                if part == "..":
                    resolved.pop()
                elif part != ".":
                    resolved.append(part)
            pending.append("/".join(resolved))

    served = {url.rsplit("/js/", 1)[1] for url in seen}
    on_disk = {str(p.relative_to(UI / "js")) for p in ui_files() if p.suffix == ".js"}
    assert served == on_disk  # no module left out of the graph, none missing from it


# -- caching ----------------------------------------------------------------------------------


async def test_assets_are_immutable_under_their_build_and_the_page_revalidates(api: Api) -> None:
    page, body = await fetch(api, "/ui/projects/acme/runs")
    assets = shell_assets(body.decode())

    assert page.headers["Cache-Control"] == "no-cache"
    assert page.headers["ETag"]
    assert len(assets) == 3  # icon, stylesheet, main module
    for url in assets:
        response, _ = await fetch(api, url)
        assert response.status == 200, url
        assert response.headers["Cache-Control"] == IMMUTABLE
        assert response.headers["ETag"]
        assert "default-src 'self'" in response.headers["Content-Security-Policy"]


async def test_a_reload_is_answered_304_for_the_page_and_its_files(api: Api) -> None:
    page, body = await fetch(api, "/ui/projects/acme/runs/abc")
    assets = shell_assets(body.decode())

    again, empty = await fetch(
        api, "/ui/projects/acme/graphs", **{"If-None-Match": page.headers["ETag"]}
    )

    assert again.status == 304
    assert empty == b""
    assert again.headers["ETag"] == page.headers["ETag"]
    for url in assets:
        first, _ = await fetch(api, url)
        revalidated, _ = await fetch(api, url, **{"If-None-Match": f"W/{first.headers['ETag']}"})
        assert revalidated.status == 304, url


async def test_an_asset_of_an_older_build_is_served_but_not_kept(api: Api) -> None:
    response, body = await fetch(api, "/ui/assets/000000000000/app.css")

    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-cache"
    assert body == (UI / "app.css").read_bytes()


async def test_a_missing_file_is_a_404_problem(api: Api) -> None:
    build = UiFiles.from_package().build
    for path in (f"/ui/assets/{build}/js/nope.js", f"/ui/assets/{build}/../auth.py"):
        response, body = await fetch(api, path)
        assert response.status == 404, path
        assert "detail" in json.loads(body)


def test_the_build_changes_with_any_file_and_names_the_shell_s_assets() -> None:
    shell = b'<script src="/ui/assets/{{build}}/js/main.js"></script>'
    one = UiFiles({"index.html": shell, "js/main.js": b"1"})
    two = UiFiles({"index.html": shell, "js/main.js": b"2"})

    assert one.build != two.build
    assert f"/ui/assets/{one.build}/js/main.js".encode() in one.shell.body
    assert b"{{build}}" not in one.shell.body


def test_every_dashboard_file_is_package_data() -> None:
    """What pyproject.toml ships is what the daemon serves from an installed package."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["adapters.ui"]
    files = [str(p.relative_to(UI)) for p in ui_files()]

    assert "index.html" in files
    assert [f for f in files if not any(fnmatch(f, pattern) for pattern in patterns)] == []
    assert [f for f in files if "/" in f and not f.startswith("js/")] == []


# -- with [auth] enabled ------------------------------------------------------------------------


@pytest.fixture
async def secured(make_api: ApiFactory) -> Api:
    return await make_api(**AUTH_ENV)


@pytest.mark.parametrize("path", ["/", "/ui/projects/acme/runs", "/ui/node-types"])
async def test_the_page_loads_without_a_token_while_the_api_needs_one(
    secured: Api, path: str
) -> None:
    page, _ = await fetch(secured, path)
    _, body = await fetch(secured, "/ui/")
    asset = shell_assets(body.decode())[-1]
    asset_response, _ = await fetch(secured, asset)
    api, _ = await fetch(secured, "/api/projects/acme/workflows/runs")

    assert page.status in (200, 302)
    assert asset_response.status == 200
    assert api.status == 401


async def test_the_websocket_takes_the_token_as_the_token_query_parameter(secured: Api) -> None:
    ws = "/api/projects/acme/ws"
    auth = {"Authorization": f"Bearer {ADMIN}"}
    async with secured.client.ws_connect(f"{ws}?token={READER}&since=0") as socket:
        graphs = "/api/projects/acme/workflows/graphs"
        await secured.client.post(graphs, json=linear("g", "count"), headers=auth)
        message = await asyncio.wait_for(socket.receive(), 10)
        assert json.loads(message.data)["type"] == "workflow.graph.created"

    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await secured.client.ws_connect(f"{ws}?token=wrong")
    assert refused.value.status == 401


async def test_the_token_query_parameter_is_not_taken_by_plain_http(secured: Api) -> None:
    response, _ = await fetch(secured, f"/api/projects/acme/workflows/runs?token={READER}")

    assert response.status == 401


@pytest.mark.parametrize(
    "path",
    [
        "/ui/../api/projects/acme/workflows/runs",
        "/ui/%2e%2e/api/projects/acme/workflows/runs",
        "/ui//../api/projects/acme/workflows/runs",
    ],
)
async def test_a_path_under_ui_never_reaches_the_api_without_a_token(
    secured: Api, path: str
) -> None:
    response = await secured.client.get(path, allow_redirects=False)
    body = await response.read()

    assert response.status in (200, 401, 404), response.status
    assert not body.startswith(b"["), body[:80]  # never the runs list
