"""The dashboard with `[auth] enabled`: the page asks for a token, keeps it in sessionStorage
(this tab only), sends it as `Authorization: Bearer` and to the WebSocket as `?token=`, and a
token's refusal (its role) is shown as the server's detail."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.dashboard.conftest import P, Tab, node, ok, playwright_api, ui_daemon, wait_run
from tests.support.process import DaemonProcess

pytestmark = pytest.mark.e2e
expect = playwright_api().expect
WRITER = "dashboard-writer-token-0123"
READER = "dashboard-reader-token-4567"
RUNS = "/ui/projects/acme/runs"


def tokens(*entries: tuple[str, str, str]) -> str:
    return "".join(
        "[[auth.tokens]]\n"
        f'name = "{name}"\n'
        f'sha256 = "{hashlib.sha256(secret.encode()).hexdigest()}"\n'
        'projects = ["acme"]\n'
        f'role = "{role}"\n'
        for name, secret, role in entries
    )


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    process = ui_daemon(tmp_path_factory.mktemp("dashboard-auth"), auth={"enabled": True})
    process.config.write_text(
        process.config.read_text() + tokens(("writer", WRITER, "write"), ("reader", READER, "read"))
    )
    process.start()
    yield process
    process.stop()


def sign_in(tab: Tab, secret: str) -> None:
    form = tab.page.get_by_role("region", name="Sign in")
    form.get_by_label("Token").fill(secret)
    form.get_by_role("button", name="Sign in").click()


def test_the_page_asks_for_a_token_and_sends_it_as_bearer_and_as_the_token_parameter(
    daemon: DaemonProcess, tab: Tab, tmp_path: Path, shots: Path
) -> None:
    tab.allow("status of 401")
    page = tab.page
    api_calls: list[tuple[str, str | None]] = []
    sockets: list[str] = []
    page.on(
        "request",
        lambda r: (
            api_calls.append((r.url, r.headers.get("authorization"))) if "/api/" in r.url else None
        ),
    )
    page.on("websocket", lambda ws: sockets.append(ws.url))
    graph = {"id": "g", "name": "G", "nodes": [node("a", 0, 0)], "edges": []}
    ok(daemon, "POST", f"{P}/graphs", graph, token=WRITER)

    page.goto(f"{daemon.url}{RUNS}")

    form = page.get_by_role("region", name="Sign in")
    expect(form).to_contain_text("this endpoint needs a token")
    page.screenshot(path=shots / "sign-in.png")
    sign_in(tab, "not-a-token")
    expect(form).to_contain_text("the token is not valid")
    api_calls.clear()
    sign_in(tab, WRITER)

    expect(page.get_by_role("heading", name="Runs")).to_be_visible()
    expect(page.locator(".live")).to_have_attribute("data-live", "live")
    assert page.evaluate("sessionStorage.getItem('cortexd.token')") == WRITER
    assert page.evaluate("localStorage.getItem('cortexd.token')") is None
    run = ok(daemon, "POST", f"{P}/runs", {"workflow_id": "g"}, token=WRITER)
    row = page.locator(f'tr[data-run-id="{run["id"]}"]')
    expect(row).to_have_attribute("data-status", "completed")  # live, through the socket
    sent = [auth for url, auth in api_calls if not url.startswith("ws")]
    assert sent
    assert set(sent) == {f"Bearer {WRITER}"}  # every API call after signing in
    assert f"token={WRITER}" in sockets[-1]

    page.reload()
    expect(row).to_have_attribute("data-status", "completed")  # the tab kept its token

    other = page.context.new_page()  # sessionStorage is per tab: a new one asks again
    other.goto(f"{daemon.url}{RUNS}")
    expect(other.get_by_role("heading", name="Sign in")).to_be_visible()
    other.close()

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('cortexd.token')") is None
    assert WRITER not in daemon.log()  # not even from the WebSocket's URL


def test_a_control_the_token_may_not_use_says_why(
    daemon: DaemonProcess, tab: Tab, tmp_path: Path
) -> None:
    tab.allow("status of 40[13]")
    held = node("wait", 0, 0, "hold", file=str(tmp_path / "go"))
    graph = {"id": "held", "name": "Held", "nodes": [held], "edges": []}
    ok(daemon, "POST", f"{P}/graphs", graph, token=WRITER)
    run: dict[str, Any] = ok(daemon, "POST", f"{P}/runs", {"workflow_id": "held"}, token=WRITER)
    wait_run(daemon, run["id"], "running", token=WRITER)
    page = tab.page
    page.goto(f"{daemon.url}/ui/projects/acme/runs/{run['id']}")
    sign_in(tab, READER)
    expect(page.locator('[data-node-id="wait"]')).to_have_attribute("data-status", "running")

    page.get_by_role("button", name="Pause", exact=True).click()

    expect(page.locator(".action-error")).to_have_text(
        f"token 'reader' has the read role; POST {P}/runs/{run['id']}/pause needs write"
    )
    assert wait_run(daemon, run["id"], "running", token=WRITER)["status"] == "running"
    (tmp_path / "go").touch()
    expect(page.locator(".run-status")).to_have_attribute("data-status", "completed")
