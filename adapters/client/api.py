"""A blocking client of the daemon's HTTP API on `urllib.request` (quick to import).

Every failure becomes a `ClientError` carrying the one line a user should read and the exit
code the command ends with.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
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

    def list_graphs(self) -> list[JSON]:
        return self._list("GET", self._workflows("/graphs"))

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

    def start_run(self, graph_id: str, run_input: Any = None) -> JSON:
        body: JSON = {"workflow_id": graph_id}
        if run_input is not None:
            body["input"] = run_input
        return self._one("POST", self._workflows("/runs"), body)

    def list_runs(self, status: str | None = None, graph_id: str | None = None) -> list[JSON]:
        query = {"status": status, "workflow_id": graph_id}
        return self._list("GET", self._workflows("/runs"), query=query)

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
    ) -> Any:
        """One request; the decoded JSON answer (None for an empty one)."""
        request = self._request(method, path, body, query or {})
        try:
            opener = _opener(urllib.parse.urlsplit(self.url).hostname or "")
            with opener.open(request, timeout=self.timeout_s) as response:
                return _decode(response.status, response.read())
        except urllib.error.HTTPError as error:
            with error:
                body = _decode(error.code, error.read(), strict=False)
            raise ApiError(error.code, body) from None
        except urllib.error.URLError as error:
            raise self._unreachable(str(error.reason)) from None
        except TimeoutError:
            raise self._unreachable(f"no answer within {self.timeout_s:g} s") from None
        except (OSError, http.client.HTTPException) as error:
            raise self._unreachable(str(error) or type(error).__name__) from None

    def _request(
        self, method: str, path: str, body: Any, query: Mapping[str, str | None]
    ) -> urllib.request.Request:
        parsed = urllib.parse.urlsplit(self.url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise BadInput(f"--url must look like {DEFAULT_URL}, not {self.url!r}")
        params = {k: v for k, v in query.items() if v is not None}
        url = self.url.rstrip("/") + path + (f"?{urllib.parse.urlencode(params)}" if params else "")
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
