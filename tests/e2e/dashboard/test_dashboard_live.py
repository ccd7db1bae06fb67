"""The dashboard across a daemon restart: the page says it is reconnecting, reconnects by
itself and catches up with `since`, missing no event and showing none twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.dashboard.conftest import P, Tab, edge, node, ok, playwright_api, ui_daemon, wait_run

pytestmark = pytest.mark.e2e
expect = playwright_api().expect


def test_the_run_view_reconnects_after_a_restart_and_catches_up(tab: Tab, tmp_path: Path) -> None:
    # While the daemon is down the browser logs its refused connections; nothing else is allowed.
    tab.allow(r"WebSocket connection to 'ws://127\.0\.0\.1:\d+/api/projects/acme/ws\?.*' failed")
    tab.allow("net::ERR_CONNECTION_REFUSED")
    (tmp_path / "daemon").mkdir()
    daemon = ui_daemon(tmp_path / "daemon")
    daemon.start()
    try:
        nodes = [
            node("one", 0, 0, "hold", file=str(tmp_path / "one")),
            node("two", 250, 0, "hold", file=str(tmp_path / "two")),
        ]
        graph = {"id": "steps", "name": "Steps", "nodes": nodes, "edges": [edge("one", "two")]}
        ok(daemon, "POST", f"{P}/graphs", graph)
        run_id = ok(daemon, "POST", f"{P}/runs", {"workflow_id": "steps"})["id"]
        page = tab.page
        page.goto(f"{daemon.url}/ui/projects/acme/runs/{run_id}")
        expect(page.locator('[data-node-id="one"]')).to_have_attribute("data-status", "running")
        expect(page.locator(".live")).to_have_attribute("data-live", "live")

        daemon.stop()  # node "one" is in flight: left to recovery after the grace period

        expect(page.locator(".live")).to_have_attribute("data-live", "reconnecting")
        (tmp_path / "one").touch()
        daemon.start()  # recovery runs "one" again, which now completes

        expect(page.locator(".live")).to_have_attribute("data-live", "live")
        expect(page.locator('[data-node-id="one"]')).to_have_attribute("data-status", "completed")
        expect(page.locator('[data-node-id="two"]')).to_have_attribute("data-status", "running")
        (tmp_path / "two").touch()
        expect(page.locator(".run-status")).to_have_attribute("data-status", "completed")
        wait_run(daemon, run_id, "completed")
        events = ok(daemon, "GET", f"{P}/runs/{run_id}/events?since=0")
        expect(page.locator(".vlist")).to_have_attribute("data-count", str(len(events)))
        page.locator(".vlist").focus()
        page.keyboard.press("End")
        expect(page.locator(".vlist-row.active .seq")).to_have_text(f"#{events[-1]['seq']}")
    finally:
        daemon.stop()
