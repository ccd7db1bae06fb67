"""A blocking client of the daemon's HTTP API on `urllib.request` (quick to import).

Every failure becomes a `ClientError` carrying the one line a user should read and the exit
code the command ends with.
"""

from __future__ import annotations

import http.client
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8765"
DEFAULT_PROJECT = "default"
EVENTS_PAGE = 1000
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})

JSON = dict[str, Any]


class ClientError(Exception):
    """What went wrong, as one line, with the details (problem list) that follow it."""

    exit_code = 1

    def __init__(self, message: str, details: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.details = details


class BadInput(ClientError):
    """Something given on the command line (a file, `--input`, `--url`) is not usable."""

    exit_code = 2


class ApiError(ClientError):
    """The daemon answered with an error status."""

    exit_code = 4

    def __init__(self, status: int, body: Any) -> None:
        body = body if isinstance(body, dict) else {}
        self.status = status
        self.body: JSON = body
        self.problems: list[JSON] = [p for p in body.get("problems") or [] if isinstance(p, dict)]
        detail = body.get("detail") or body.get("title") or f"HTTP {status}"
        if status in (401, 403):
            detail = f"{detail} (give a token with --token or CORTEXD_TOKEN)"
        lines = tuple(f"{p.get('path') or '/'}: {p.get('message')}" for p in self.problems)
        super().__init__(f"{detail} (HTTP {status})", lines)


class Unreachable(ClientError):
    """No daemon answered at the URL."""

    exit_code = 5


@dataclass(frozen=True)
class Api:
    url: str = DEFAULT_URL
    project: str = DEFAULT_PROJECT
    token: str | None = None
    timeout_s: float = 10.0

    # -- graphs --------------------------------------------------------------------------------

    def list_graphs(self, limit: int | None = None) -> Listing:
        """The project's graphs by id: `limit` of them at most (None: every one)."""
        return collect(self, self._workflows("/graphs"), {}, limit)

    def get_graph(self, graph_id: str) -> JSON:
        return self._one("GET", self._workflows("/graphs", graph_id))

    def create_graph(self, spec: Any) -> JSON:
        return self._one("POST", self._workflows("/graphs"), spec)

    def replace_graph(self, graph_id: str, spec: Any) -> JSON:
        return self._one("PUT", self._workflows("/graphs", graph_id), spec)

    def delete_graph(self, graph_id: str) -> None:
        self.call("DELETE", self._workflows("/graphs", graph_id))

    def validate_graph(self, spec: Any) -> JSON:
        """`{"valid": true, "problems": []}`, or the problem document of an invalid graph."""
        try:
            return self._one("POST", self._workflows("/graphs/validate"), spec)
        except ApiError as exc:
            if exc.status != 422:
                raise
            return {"valid": False, **exc.body}

    # -- runs ----------------------------------------------------------------------------------

    def start_run(
        self,
        graph_id: str,
        run_input: Any = None,
        *,
        wait_s: int | None = None,
        key: str | None = None,
    ) -> JSON:
        """The new run; with `wait_s`, as it stands once it settled or after that long (the
        daemon caps it); with `key`, the run an earlier start with that key made."""
        body: JSON = {"workflow_id": graph_id}
        if run_input is not None:
            body["input"] = run_input
        headers, timeout_s = {}, self.timeout_s
        if wait_s is not None:
            headers["Prefer"] = f"wait={wait_s}"
            timeout_s += wait_s  # the answer comes that much later
        if key is not None:
            headers["Idempotency-Key"] = key
        path = self._workflows("/runs")
        answer = self.call("POST", path, body, headers=headers, timeout_s=timeout_s)
        if not isinstance(answer, dict):
            raise ClientError(f"unexpected answer from {self.url}: not a JSON object")
        return answer

    def list_runs(self, filters: Mapping[str, str | None], limit: int | None = None) -> Listing:
        """The project's runs newest first, filtered by the API's own query parameters
        (`status`, `workflow_id`, `created_after`, `created_before`): `limit` at most (None:
        every one)."""
        return collect(self, self._workflows("/runs"), filters, limit)

    def get_run(self, run_id: str) -> JSON:
        return self._one("GET", self._workflows("/runs", run_id))

    def run_status(self, run_id: str) -> JSON:
        return self._one("GET", self._workflows("/runs", run_id, "status"))

    def control(self, run_id: str, action: str, body: JSON | None = None) -> JSON:
        """`execute`, `cancel`, `pause` or `resume`; the run as it is afterwards."""
        return self._one("POST", self._workflows("/runs", run_id, action), body or {})

    def events(self, run_id: str, since: int = 0, limit: int = EVENTS_PAGE) -> list[JSON]:
        query = {"since": str(since), "limit": str(limit)}
        return self._list("GET", self._workflows("/runs", run_id, "events"), query=query)

    def events_after(self, run_id: str, since: int, max_pages: int = 1000) -> list[JSON]:
        """Every event of the run after `since`, page by page (at most `max_pages` pages)."""
        collected: list[JSON] = []
        for _ in range(max_pages):
            page = self.events(run_id, since)
            collected.extend(page)
            if len(page) < EVENTS_PAGE:
                break
            since = int(page[-1]["seq"])
        return collected

    # -- webhooks ------------------------------------------------------------------------------

    def list_webhooks(self) -> list[JSON]:
        return self._list("GET", self._workflows("/webhooks"))

    def create_webhook(self, spec: JSON) -> JSON:
        return self._one("POST", self._workflows("/webhooks"), spec)

    def delete_webhook(self, hook_id: str) -> None:
        self.call("DELETE", self._workflows("/webhooks", hook_id))

    # -- catalogue -----------------------------------------------------------------------------

    def node_types(self) -> list[JSON]:
        return self._list("GET", "/api/node-types")

    def plugins(self) -> list[JSON]:
        return self._list("GET", "/api/plugins")

    # -- transport -----------------------------------------------------------------------------

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: Mapping[str, str | None] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        """One request; the decoded JSON answer (None for an empty one)."""
        request = self._request(method, path, body, query or {})
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        return self.exchange(request, timeout_s)[0]

    def url_of(self, path: str, query: Mapping[str, str | None] | None = None) -> str:
        """The full URL of a GET of `path` with `query` (what `get_url` takes)."""
        return self._request("GET", path, None, query or {}).full_url

    def get_url(self, url: str) -> tuple[Any, Message]:
        """GET a full URL of this daemon (a page's `Link`): the answer and its headers."""
        return self.exchange(self._request("GET", "", None, {}, url=url))

    def exchange(
        self, request: urllib.request.Request, timeout_s: float | None = None
    ) -> tuple[Any, Message]:
        timeout_s = timeout_s or self.timeout_s
        try:
            opener = _opener(urllib.parse.urlsplit(self.url).hostname or "")
            with opener.open(request, timeout=timeout_s) as response:
                return _decode(response.status, response.read()), response.headers
        except urllib.error.HTTPError as error:
            with error:
                body = _decode(error.code, error.read(), strict=False)
            raise ApiError(error.code, body) from None
        except urllib.error.URLError as error:
            raise self._unreachable(str(error.reason)) from None
        except TimeoutError:
            raise self._unreachable(f"no answer within {timeout_s:g} s") from None
        except (OSError, http.client.HTTPException) as error:
            raise self._unreachable(str(error) or type(error).__name__) from None

    def _request(
        self,
        method: str,
        path: str,
        body: Any,
        query: Mapping[str, str | None],
        url: str | None = None,
    ) -> urllib.request.Request:
        parsed = urllib.parse.urlsplit(self.url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise BadInput(f"--url must look like {DEFAULT_URL}, not {self.url!r}")
        if url is None:
            params = {k: v for k, v in query.items() if v is not None}
            encoded = f"?{urllib.parse.urlencode(params)}" if params else ""
            url = self.url.rstrip("/") + path + encoded
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        return request

    def _unreachable(self, reason: str) -> Unreachable:
        return Unreachable(
            f"cannot reach the cortexd daemon at {self.url} ({reason}); "
            "start it with `make run` or `cortexd serve`, or point --url / CORTEXD_URL at it"
        )

    def workflows_path(self, collection: str, *parts: str) -> str:
        """The path of `collection` (`/runs`, `/schedules`...) of the project, with `parts`."""
        return self._workflows(collection, *parts)

    def _workflows(self, collection: str, *parts: str) -> str:
        project = urllib.parse.quote(self.project, safe="")
        quoted = "".join(f"/{urllib.parse.quote(p, safe='')}" for p in parts)
        return f"/api/projects/{project}/workflows{collection}{quoted}"

    def _one(self, method: str, path: str, body: Any = None) -> JSON:
        answer = self.call(method, path, body)
        if not isinstance(answer, dict):
            raise ClientError(f"unexpected answer from {self.url}{path}: not a JSON object")
        return answer

    def _list(
        self, method: str, path: str, query: Mapping[str, str | None] | None = None
    ) -> list[JSON]:
        answer = self.call(method, path, query=query)
        if not isinstance(answer, list):
            raise ClientError(f"unexpected answer from {self.url}{path}: not a JSON array")
        return answer


# A list is read a page of at most this many at a time (the API's largest `limit`), and a
# listing stops after this many pages whatever the daemon says (every loop is bounded).
PAGE_MAX = 1000
MAX_PAGES = 100_000
_NEXT = re.compile(r'<([^>]*)>\s*;[^,]*?\brel="?next"?', re.IGNORECASE)


@dataclass(frozen=True)
class Listing:
    """What a list command got: its items, and whether the daemon holds more than it asked for."""

    items: list[JSON]
    more: bool


def collect(api: Api, path: str, query: Mapping[str, str | None], limit: int | None) -> Listing:
    """Up to `limit` items of a list (None: all), page after page through `Link: rel="next"`,
    asking each time for no more than are still wanted."""
    items: list[JSON] = []
    url = api.url_of(path, {**query, "limit": str(_page_size(limit, 0))})
    for _ in range(MAX_PAGES):
        answer, headers = api.get_url(url)
        if not isinstance(answer, list):
            raise ClientError(f"unexpected answer from {url}: not a JSON array")
        items.extend(answer)
        following = next_link(url, headers.get("Link"), api.url)
        if following is None or (limit is not None and len(items) >= limit):
            more = following is not None or (limit is not None and len(items) > limit)
            return Listing(items[:limit], more)
        url = _with_limit(following, _page_size(limit, len(items)))
    raise ClientError(f"more than {MAX_PAGES} pages from {api.url}{path}; stopped")


def next_link(current: str, header: str | None, base: str) -> str | None:
    """The rel="next" URL of a Link header (RFC 8288), resolved against the request's URL.
    Only one on the daemon's own origin is followed: the token goes with the request."""
    found = _NEXT.search(header or "")
    if found is None:
        return None
    following: str = urllib.parse.urljoin(current, str(found.group(1)))
    ours, theirs = urllib.parse.urlsplit(base), urllib.parse.urlsplit(following)
    if (theirs.scheme, theirs.netloc) != (ours.scheme, ours.netloc):
        raise ClientError(f"the daemon's next page is on another origin ({following}); stopped")
    return following


def _page_size(limit: int | None, have: int) -> int:
    return PAGE_MAX if limit is None else max(1, min(PAGE_MAX, limit - have))


def _with_limit(url: str, limit: int) -> str:
    parts = urllib.parse.urlsplit(url)
    pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query = [(k, v) for k, v in pairs if k != "limit"]
    encoded = urllib.parse.urlencode([*query, ("limit", str(limit))])
    return urllib.parse.urlunsplit(parts._replace(query=encoded))


def _opener(hostname: str) -> urllib.request.OpenerDirector:
    # A proxy from the environment must not capture requests to the local daemon.
    if hostname in _LOOPBACK:
        return urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener()


def _decode(status: int, raw: bytes, strict: bool = True) -> Any:
    if not raw.strip():
        return None
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        if not strict:
            return {"detail": raw.decode("utf-8", "replace").strip()[:200] or f"HTTP {status}"}
        raise ClientError(
            f"the answer (HTTP {status}) is not JSON: is --url pointing at cortexd?"
        ) from None
