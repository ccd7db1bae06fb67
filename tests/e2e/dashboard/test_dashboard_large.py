"""The dashboard at its limits: a 500-node graph drawn and panned and zoomed, a run's 10,000
events in a timeline that stays virtualised, 100 runs updating at once on the runs page.

What must hold is asserted (every node drawn, every event counted, every run shown completed,
the DOM staying small); how long it took is measured in the browser and written to
`measurements.json` beside the screenshots, for docs/dashboard.md, not compared with a margin.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.dashboard.conftest import (
    SCREENSHOTS,
    P,
    Tab,
    edge,
    node,
    ok,
    playwright_api,
    ui_daemon,
    wait_run,
)
from tests.support.process import DaemonProcess

pytestmark = pytest.mark.e2e
expect = playwright_api().expect
UI = "/ui/projects/acme"
COLUMNS, ROWS = 25, 20  # 500 nodes, the limit
EVENTS = 10_000
RUNS = 100
# Frame gaps recorded by the page itself from the moment this is evaluated.
FRAME_RECORDER = """() => {
  const f = (window.__frames = { gaps: [], last: performance.now(), stop: false });
  const loop = (t) => {
    f.gaps.push(t - f.last);
    f.last = t;
    if (!f.stop) requestAnimationFrame(loop);
  };
  requestAnimationFrame(loop);
}"""
FRAME_REPORT = """() => {
  const f = window.__frames; f.stop = true;
  const gaps = f.gaps.slice(1).sort((a, b) => a - b);
  const at = (q) => gaps[Math.min(gaps.length - 1, Math.floor(q * gaps.length))] ?? 0;
  return { frames: gaps.length, median_ms: at(0.5), p95_ms: at(0.95), max_ms: gaps.at(-1) ?? 0 };
}"""
# Each zoom step: a wheel event, then the frame after the one that applied it.
ZOOM_STEPS = """async () => {
  const svg = document.querySelector("svg.graph");
  const box = svg.getBoundingClientRect();
  const times = [];
  for (let i = 0; i < 20; i++) {
    const t = performance.now();
    const deltaY = i < 10 ? -120 : 120;
    const at = { clientX: box.x + 300, clientY: box.y + 200 };
    svg.dispatchEvent(new WheelEvent("wheel", { deltaY, ...at, bubbles: true, cancelable: true }));
    await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
    times.push(performance.now() - t);
  }
  times.sort((a, b) => a - b);
  return { steps: times.length, median_ms: times[10], max_ms: times.at(-1) };
}"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    process = ui_daemon(
        tmp_path_factory.mktemp("dashboard-large"),
        execution={"shutdown_grace_s": 1, "max_concurrent_runs": RUNS},
    )
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    results: dict[str, Any] = {}
    yield results
    folder = Path(os.environ.get(SCREENSHOTS) or tmp_path_factory.mktemp("measured"))
    (folder / "measurements.json").write_text(json.dumps(results, indent=2) + "\n")


def big_graph() -> dict[str, Any]:
    """500 nodes on a grid, each column feeding the next (straight, and one row down
    under a condition): 956 edges, 25 steps deep."""
    nodes = [node(f"n{c}_{r}", c * 230, r * 90) for c in range(COLUMNS) for r in range(ROWS)]
    edges = [edge("__start__", f"n0_{r}") for r in range(ROWS)]
    for c in range(COLUMNS - 1):
        for r in range(ROWS):
            edges.append(edge(f"n{c}_{r}", f"n{c + 1}_{r}"))
            if r + 1 < ROWS:
                edges.append(edge(f"n{c}_{r}", f"n{c + 1}_{r + 1}", "input.wide"))
    return {"id": "big", "name": "Five hundred", "nodes": nodes, "edges": edges}


def test_a_500_node_graph_draws_and_pans_and_zooms(
    daemon: DaemonProcess, tab: Tab, shots: Path, measured: dict[str, Any]
) -> None:
    graph = big_graph()
    ok(daemon, "POST", f"{P}/graphs", graph)
    page = tab.page

    started = time.monotonic()
    page.goto(f"{daemon.url}{UI}/graphs/big")
    expect(page.locator("svg.graph [data-node-id]")).to_have_count(500)
    drawn_s = time.monotonic() - started
    expect(page.locator("svg.graph [data-edge-id]")).to_have_count(len(graph["edges"]))
    expect(page.locator('[data-node-id="n24_19"]')).to_have_attribute(
        "transform", "translate(5520 1710)"
    )
    svg = page.locator("svg.graph")
    scale = float(svg.get_attribute("data-scale") or 0)  # fitted: the whole graph shows
    assert 0 < scale < 0.5
    page.screenshot(path=shots / "graph-500.png")

    zoom = page.evaluate(ZOOM_STEPS)
    box = svg.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + 400, box["y"] + 300)
    page.mouse.wheel(0, -400)  # a real wheel: zoomed in around the pointer
    expect(svg).not_to_have_attribute("data-scale", f"{scale:.4f}")
    page.get_by_role("button", name="Fit").click()
    expect(svg).to_have_attribute("data-scale", f"{scale:.4f}")
    fitted = page.locator("g.viewport").get_attribute("transform")
    page.mouse.move(box["x"] + 6, box["y"] + 6)  # the fitted drawing's margin: no node there
    page.mouse.down()
    page.mouse.move(box["x"] + 206, box["y"] + 106, steps=5)
    page.mouse.up()
    expect(page.locator("g.viewport")).not_to_have_attribute("transform", fitted or "")

    run_id = ok(daemon, "POST", f"{P}/runs", {"workflow_id": "big", "input": {"wide": False}})["id"]
    page.goto(f"{daemon.url}{UI}/runs/{run_id}")
    page.evaluate(FRAME_RECORDER)
    started = time.monotonic()
    expect(page.locator('svg.graph [data-status="completed"]')).to_have_count(500, timeout=60_000)
    live_s = time.monotonic() - started
    frames = page.evaluate(FRAME_REPORT)
    wait_run(daemon, run_id, "completed", timeout=60)
    expect(page.locator('[data-edge-id="n0_1-n1_1"]')).to_have_attribute("data-state", "taken")
    # its condition did not hold, but n1_1 ran (through n0_1): not known to have been taken
    expect(page.locator('[data-edge-id="n0_0-n1_1"]')).to_have_attribute("data-state", "unknown")
    measured["graph_500"] = {
        "drawn_s": round(drawn_s, 3),
        "zoom_step": zoom,
        "run_view_all_completed_s": round(live_s, 3),
        "run_view_frames": frames,
    }


def test_a_run_with_10000_events_keeps_a_small_responsive_timeline(
    daemon: DaemonProcess, tab: Tab, shots: Path, measured: dict[str, Any]
) -> None:
    talk = node("talk", 0, 0, "chatty", count=EVENTS)
    ok(daemon, "POST", f"{P}/graphs", {"id": "chatty", "name": "Chatty", "nodes": [talk]})
    run_id = ok(daemon, "POST", f"{P}/runs", {"workflow_id": "chatty"})["id"]
    wait_run(daemon, run_id, "completed", timeout=60)
    stored = events_of(daemon, run_id)
    assert len(stored) > EVENTS
    page = tab.page

    page.goto(f"{daemon.url}{UI}/runs/{run_id}")
    page.evaluate(FRAME_RECORDER)
    started = time.monotonic()
    timeline = page.locator(".vlist")
    expect(timeline).to_have_attribute("data-count", str(len(stored)), timeout=60_000)
    loaded_s = time.monotonic() - started
    frames = page.evaluate(FRAME_REPORT)

    rows = page.locator(".vlist-row:not([hidden])")
    assert rows.count() < 60  # virtualised: a screenful, not 10,000
    timeline.focus()
    started = time.monotonic()
    page.keyboard.press("Home")
    expect(page.locator(".vlist-row.active .seq")).to_have_text(f"#{stored[0]['seq']}")
    page.keyboard.press("End")
    expect(page.locator(".vlist-row.active .seq")).to_have_text(f"#{stored[-1]['seq']}")
    keys_s = time.monotonic() - started
    started = time.monotonic()
    page.get_by_label("Filter events").fill("run.")
    runs_only = [e for e in stored if e["type"].startswith("workflow.run.")]
    expect(timeline).to_have_attribute("data-count", str(len(runs_only)))
    filtered_s = time.monotonic() - started
    expect(page.locator(".vlist-row:not([hidden])")).to_have_count(len(runs_only))
    page.get_by_label("Filter events").fill("")
    expect(timeline).to_have_attribute("data-count", str(len(stored)))
    page.screenshot(path=shots / "run-10000-events.png")
    measured["events_10000"] = {
        "events": len(stored),
        "all_in_timeline_s": round(loaded_s, 3),
        "frames_while_loading": frames,
        "home_then_end_s": round(keys_s, 3),
        "filter_s": round(filtered_s, 3),
        "rows_in_dom": rows.count(),
    }


def events_of(daemon: DaemonProcess, run_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    since = 0
    for _ in range(100):  # at most 100 pages: bounded
        page = ok(daemon, "GET", f"{P}/runs/{run_id}/events?since={since}&limit=1000")
        found += page
        if len(page) < 1000:
            return found
        since = page[-1]["seq"]
    raise AssertionError("more than 100 pages of events")


def test_100_runs_updating_at_once_do_not_leave_the_runs_page_behind(
    daemon: DaemonProcess, tab: Tab, shots: Path, measured: dict[str, Any]
) -> None:
    nodes = [node("wait", 0, 0, "delay", seconds=0.3), node("done", 250, 0)]
    graph = {"id": "many", "name": "Many", "nodes": nodes, "edges": [edge("wait", "done")]}
    ok(daemon, "POST", f"{P}/graphs", graph)
    page = tab.page
    page.goto(f"{daemon.url}{UI}/runs?graph=many")
    expect(page.locator(".live")).to_have_attribute("data-live", "live")
    page.evaluate(FRAME_RECORDER)

    run_ids = [ok(daemon, "POST", f"{P}/runs", {"workflow_id": "many"})["id"] for _ in range(RUNS)]
    for run_id in run_ids:
        wait_run(daemon, run_id, "completed", timeout=60)
    all_done = time.monotonic()
    shown = page.locator('table.runs tbody tr[data-status="completed"]')
    expect(shown).to_have_count(RUNS, timeout=30_000)
    lag_s = max(0.0, time.monotonic() - all_done)
    frames = page.evaluate(FRAME_REPORT)

    assert page.locator("table.runs tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.runId)"
    ) == list(reversed(run_ids))  # newest first, every one of them
    page.screenshot(path=shots / "runs-100.png")

    page.reload()  # a page at a time: 50, then the next 50
    rows = page.locator("table.runs tbody tr")
    expect(rows).to_have_count(50)
    page.get_by_role("button", name="Load more").click()
    expect(rows).to_have_count(RUNS)
    expect(page.get_by_role("button", name="Load more")).to_be_hidden()
    measured["runs_100"] = {
        "runs": RUNS,
        "page_behind_api_s": round(lag_s, 3),
        "frames_during_the_burst": frames,
    }
