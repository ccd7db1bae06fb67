"""What the dashboard's browser tests share: Debian's Chromium driven by Playwright (found on
the machine, never downloaded), one browser for them all, a fresh context per test that fails
the test on any console error it did not expect, and a real daemon with the test node types.

Without Chromium or Playwright the tests skip and say why; with ``CORTEXD_REQUIRE_BROWSER=1``
(what ``.ci/run`` sets) they fail instead, so CI cannot pass without having run them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.support.process import DaemonProcess

ROOT = Path(__file__).resolve().parents[3]
REQUIRE = "CORTEXD_REQUIRE_BROWSER"
# Where the tests leave their screenshots (docs/dashboard.md's come from here); else tmp.
SCREENSHOTS = "CORTEXD_UI_SCREENSHOTS"
CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
# The machine's network is closed: without these, Chromium keeps trying to reach Google.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1400, "height": 900}
P = "/api/projects/acme/workflows"
NODES_PLUGIN = "tests.e2e.dashboard.nodes"
EXPECT_TIMEOUT_MS = 15_000


def chromium() -> str:
    """The Chromium executable, or a skip (a failure when the browser is required)."""
    found = os.environ.get("CORTEXD_CHROMIUM") or next(
        (path for path in CHROMIUM_PATHS if Path(path).exists()), None
    )
    if found is None or shutil.which(found) is None:
        unavailable(
            "no Chromium found at /usr/bin/chromium (Debian: apt-get install chromium); "
            "the dashboard's browser tests did not run"
        )
    return str(found)


def unavailable(reason: str) -> NoReturn:
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"{REQUIRE}=1 but {reason}")
    pytest.skip(reason, allow_module_level=True)


def playwright_api() -> Any:
    """playwright.sync_api, imported where a test module starts (a skip, or a failure when
    the browser is required, if it is not installed)."""
    try:
        import playwright.sync_api as api
    except ImportError:
        unavailable("playwright is not installed (pip install -e '.[test]')")
    return api


# One browser for every test of this package, closed when the package is done: while Playwright's
# sync API is open its event loop counts as running in this thread, which asyncio tests refuse.
@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    executable = chromium()
    api = playwright_api()
    api.expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    with api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@dataclass
class Tab:
    """A page in a context of its own, and every error its console showed."""

    page: Any
    errors: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def allow(self, pattern: str) -> None:
        """A console error the test provokes on purpose (a 401 the page answers with a form)."""
        self.allowed.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.allowed)]


@pytest.fixture
def tab(browser: Any) -> Iterator[Tab]:
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    opened = Tab(page)
    page.on("console", lambda m: opened.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: opened.errors.append(f"uncaught: {e}"))
    yield opened
    context.close()
    assert opened.unexpected() == [], "the page's console showed errors"


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """The folder screenshots go to."""
    folder = Path(os.environ.get(SCREENSHOTS) or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# -- the daemon --------------------------------------------------------------------------------


def ui_daemon(workdir: Path, **sections: dict[str, Any]) -> DaemonProcess:
    """A daemon with the test node types, not yet started."""
    settings: dict[str, dict[str, Any]] = {
        "plugins": {"modules": [NODES_PLUGIN]},
        "execution": {"shutdown_grace_s": 1},
        "logging": {"format": "json"},
        **sections,
    }
    daemon = DaemonProcess(workdir, **settings)
    daemon.env["PYTHONPATH"] = str(ROOT)
    return daemon


def call(
    daemon: DaemonProcess,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = None,
) -> tuple[int, Any]:
    """The API as a test calls it, with a bearer token when one is given."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(daemon.url + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        raw = error.read()
        return error.code, json.loads(raw) if raw else None


def ok(daemon: DaemonProcess, method: str, path: str, body: Any = None, **kw: Any) -> Any:
    status, answer = call(daemon, method, path, body, **kw)
    assert 200 <= status < 300, (method, path, status, answer)
    return answer


def wait_run(
    daemon: DaemonProcess,
    run_id: str,
    *statuses: str,
    timeout: float = 30.0,
    token: str | None = None,
) -> dict[str, Any]:
    """Polls the API (with a deadline) until the run is in one of `statuses`."""
    deadline = time.monotonic() + timeout
    while True:
        run: dict[str, Any] = ok(daemon, "GET", f"{P}/runs/{run_id}", token=token)
        if run["status"] in statuses:
            return run
        assert time.monotonic() < deadline, f"run {run_id} is {run['status']}, not {statuses}"
        time.sleep(0.02)


def node(node_id: str, x: float, y: float, type_: str = "passthrough", **config: Any) -> Any:
    return {"id": node_id, "label": node_id.title(), "x": x, "y": y, "type": type_} | (
        {"config": config} if config else {}
    )


def edge(source: str, target: str, condition: str | None = None) -> dict[str, Any]:
    return {"id": f"{source}-{target}", "source": source, "target": target} | (
        {"condition": condition} if condition else {}
    )
