"""Built-in `http_request`: one HTTP call per node, only ever to hosts the operator allowed.

``[plugins.http_request]``: ``allow_hosts`` (host names or IP literals, exact, or
``"*.example.com"`` for its subdomains; empty: every request is refused),
``max_response_bytes`` (default 1 MiB) and ``max_redirects`` (default 5). Redirects are
followed here, not by aiohttp, so each hop's host is checked before it is reached.

The ``url`` is a template: ``{input.user.id}``, ``{outputs.fetch.json.items.0}`` or
``{data.token}`` is replaced by that value of the run state, percent-encoded (so a value can
never add a path, a query or a host of its own); ``{{`` and ``}}`` are literal braces.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import pluggy
from multidict import CIMultiDictProxy
from yarl import URL

from core.nodes import NodeContext, PluginContext

hookimpl = pluggy.HookimplMarker("cortexd")
JSON = dict[str, Any]

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
REDIRECTS = frozenset({301, 302, 303, 307, 308})
# Response headers copied into the output. Others (Set-Cookie, auth challenges, server details)
# are left out: outputs are stored and shown to everyone who can read the run.
SAFE_HEADERS = (
    "cache-control",
    "content-length",
    "content-type",
    "date",
    "etag",
    "last-modified",
    "location",
    "retry-after",
)
# Request headers not carried to another host when a redirect leaves the original one.
CREDENTIAL_HEADERS = ("authorization", "cookie", "proxy-authorization")
OPTIONS = {"allow_hosts", "max_response_bytes", "max_redirects"}


class HttpRequestError(Exception):
    """A request that did not produce a usable response. `retryable` tells node `retry`."""

    retryable = False


class HostNotAllowed(HttpRequestError):
    pass


class TemplateError(HttpRequestError):
    pass


class ResponseTooLarge(HttpRequestError):
    pass


class TooManyRedirects(HttpRequestError):
    pass


class HttpStatusError(HttpRequestError):
    retryable = True

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class HttpTimeout(HttpRequestError):
    retryable = True


class HttpConnectionError(HttpRequestError):
    retryable = True


# -- the url template ------------------------------------------------------------------------

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_PATH = re.compile(r"(input|outputs|data)(\.[^.\s]+)*")


def render_url(template: str, state: Mapping[str, Any]) -> str:
    """Fill each ``{path}`` with the percent-encoded value at that path of the run state."""

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        path = match.group(1)
        if path is None:
            raise TemplateError(f"unmatched {token!r} in the url template (write {token * 2})")
        return quote(_scalar(path.strip(), _lookup(path.strip(), state)), safe="")

    return _TOKEN.sub(replace, template)


def _lookup(path: str, state: Mapping[str, Any]) -> Any:
    if not _PATH.fullmatch(path):
        raise TemplateError(
            f"{{{path}}}: a placeholder is a dotted path starting with input, outputs or data"
        )
    value: Any = state
    for part in path.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise TemplateError(f"{{{path}}}: {part!r} is not in the run state")
    return value


def _scalar(path: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    kind = "null" if value is None else type(value).__name__
    raise TemplateError(f"{{{path}}} is {kind}: only strings, numbers and booleans fit a url")


# -- the host allow-list ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostPolicy:
    exact: frozenset[str]
    suffixes: tuple[str, ...]  # ".example.com" for "*.example.com"

    @classmethod
    def parse(cls, hosts: object) -> HostPolicy:
        if not isinstance(hosts, list) or not all(isinstance(h, str) and h for h in hosts):
            raise ValueError("[plugins.http_request] allow_hosts must be a list of host names")
        names = [_normal(h) for h in hosts]
        return cls(
            exact=frozenset(n for n in names if not n.startswith("*.")),
            suffixes=tuple(n[1:] for n in names if n.startswith("*.")),
        )

    def check(self, url: URL) -> None:
        if url.scheme not in ("http", "https"):
            raise HostNotAllowed(f"{_shown(url)}: only http and https urls can be requested")
        host = _normal(url.host or "")
        if host in self.exact or any(host.endswith(s) for s in self.suffixes):
            return
        raise HostNotAllowed(
            f"{_shown(url)}: host {host!r} is not in [plugins.http_request] allow_hosts"
        )


def _normal(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def _shown(url: URL) -> str:
    """The url for messages and logs: no credentials, query or fragment (they may be secret)."""
    return str(url.with_user(None).with_query(None).with_fragment(None))


# -- the node type ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Client:
    owner: PluginContext
    session: aiohttp.ClientSession
    policy: HostPolicy
    max_bytes: int
    max_redirects: int


# One client per started daemon (the plugin is this module, so its state lives here). Were two
# daemons started in one process (tests), the newest one's client serves requests.
_clients: list[_Client] = []


class HttpRequest:
    name = "http_request"
    title = "HTTP request"
    description = (
        "Sends one HTTP request (url template filled from the run state) to a host allowed by "
        "[plugins.http_request] allow_hosts; outputs status, headers and json or text. "
        "A non-2xx status fails the node, so `retry` can retry it."
    )
    config_schema: JSON = {
        "type": "object",
        "properties": {
            "method": {"enum": list(METHODS), "default": "GET"},
            "url": {"type": "string", "pattern": "^https?://", "maxLength": 8192},
            "headers": {
                "type": "object",
                "propertyNames": {"pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"},
                "additionalProperties": {"type": "string", "pattern": "^[^\r\n]*$"},
                "maxProperties": 64,
            },
            "body": {"description": "JSON sent as the request body"},
            "timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600},
        },
        "required": ["url"],
        "additionalProperties": False,
    }

    async def execute(self, ctx: NodeContext, config: JSON, state: JSON) -> JSON:
        if not _clients:
            raise HttpRequestError("the http_request plugin is not started")
        client = _clients[-1]
        url = _parse(render_url(config["url"], state))
        method = str(config.get("method", "GET"))
        headers = dict(config.get("headers", {}))
        body: bytes | None = None
        if "body" in config:
            body = json.dumps(config["body"]).encode()
            headers.setdefault("Content-Type", "application/json")
        timeout = float(config.get("timeout_s", 30))
        ctx.log.debug("http_request", method=method, url=_shown(url))
        try:
            async with asyncio.timeout(timeout) as deadline:
                return await _send(client, method, url, headers, body)
        except TimeoutError:
            if deadline.expired():
                raise HttpTimeout(f"{method} {_shown(url)} timed out after {timeout:g}s") from None
            raise


async def _send(
    client: _Client, method: str, url: URL, headers: dict[str, str], body: bytes | None
) -> JSON:
    for _ in range(client.max_redirects + 1):
        client.policy.check(url)
        try:
            async with client.session.request(
                method, url, headers=headers, data=body, allow_redirects=False
            ) as response:
                location = response.headers.get("Location")
                if response.status not in REDIRECTS or location is None:
                    return await _output(response, method, url, client.max_bytes)
        except aiohttp.ClientError as exc:
            raise HttpConnectionError(f"{method} {_shown(url)} failed: {exc}") from exc
        target = url.join(_parse(location))
        if response.status == 303 or (response.status in (301, 302) and method == "POST"):
            method, body = ("HEAD" if method == "HEAD" else "GET"), None
            headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
        if (target.scheme, target.host, target.port) != (url.scheme, url.host, url.port):
            headers = {k: v for k, v in headers.items() if k.lower() not in CREDENTIAL_HEADERS}
        url = target
    raise TooManyRedirects(f"{_shown(url)}: more than {client.max_redirects} redirects")


def _parse(text: str) -> URL:
    try:
        return URL(text)
    except ValueError as exc:
        raise HttpRequestError(f"not a valid url: {exc}") from None


async def _output(response: aiohttp.ClientResponse, method: str, url: URL, max_bytes: int) -> JSON:
    if not 200 <= response.status < 300:
        raise HttpStatusError(
            f"{method} {_shown(url)} answered {response.status} {response.reason or ''}".rstrip(),
            response.status,
        )
    raw = b"" if method == "HEAD" else await _read(response, max_bytes)
    output: JSON = {"status": response.status, "headers": _safe_headers(response.headers)}
    if "json" in response.content_type and raw:
        try:
            output["json"] = json.loads(raw)
            return output
        except ValueError:
            pass
    output["text"] = raw.decode(response.charset or "utf-8", errors="replace")
    return output


async def _read(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    too_large = ResponseTooLarge(f"the response is larger than {max_bytes} bytes")
    if (response.content_length or 0) > max_bytes:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(65536):
        size += len(chunk)
        if size > max_bytes:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _safe_headers(headers: CIMultiDictProxy[str]) -> dict[str, str]:
    return {name: headers[name] for name in SAFE_HEADERS if name in headers}


def _positive_int(options: Mapping[str, Any], key: str, default: int) -> int:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"[plugins.http_request] {key} must be a non-negative integer")
    return value


@hookimpl
def cortexd_node_types() -> list[object]:
    return [HttpRequest()]


@hookimpl
async def cortexd_startup(ctx: PluginContext) -> None:
    options = ctx.options("http_request")
    unknown = set(options) - OPTIONS
    if unknown:
        raise ValueError(f"[plugins.http_request] has unknown keys: {', '.join(sorted(unknown))}")
    policy = HostPolicy.parse(options.get("allow_hosts", []))
    max_bytes = _positive_int(options, "max_response_bytes", 1_048_576)
    max_redirects = _positive_int(options, "max_redirects", 5)
    # No cookie jar: one session serves every run of every project, which must share nothing.
    # trust_env stays off: a proxy from the environment would be a host nobody allowed.
    session = aiohttp.ClientSession(
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None),
        trust_env=False,
    )
    _clients.append(_Client(ctx, session, policy, max_bytes, max_redirects))
    ctx.log.info(
        "http_request_ready",
        allow_hosts=sorted(policy.exact) + [f"*{s}" for s in policy.suffixes],
    )


@hookimpl
async def cortexd_shutdown(ctx: PluginContext) -> None:
    for client in [c for c in _clients if c.owner is ctx]:
        _clients.remove(client)
        await client.session.close()
