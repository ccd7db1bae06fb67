"""The dashboard in headless Chromium against a real `cortexd serve`: each view, node states
changing live, every control doing what it says (the API confirms it), the input prompt
answered from the page, errors shown as the server's detail, paging through `Link: rel="next"`.
Waits are Playwright's `expect` (a condition with a deadline), never a sleep."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.dashboard.conftest import P, Tab, edge, node, ok, playwright_api, ui_daemon, wait_run
from tests.support.process import DaemonProcess

pytestmark = pytest.mark.e2e
expect = playwright_api().expect
ROOT = Path(__file__).resolve().parents[3]
UI = "/ui/projects/acme"
RUNS_PAGE = 50  # what the runs page asks for (adapters/ui/js/views/runs.js)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    process = ui_daemon(tmp_path_factory.mktemp("dashboard"))
    process.start()
    yield process
    process.stop()


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """Where the test's hold/fail_unless nodes look for the files that release them."""
    return tmp_path


def graph(daemon: DaemonProcess, graph_id: str, nodes: list[Any], edges: list[Any]) -> None:
    body = {"id": graph_id, "name": graph_id.replace("-", " ").title(), "nodes": nodes}
    ok(daemon, "POST", f"{P}/graphs", body | {"edges": edges})


def start(daemon: DaemonProcess, graph_id: str, run_input: Any = None) -> str:
    run: dict[str, Any] = ok(
        daemon, "POST", f"{P}/runs", {"workflow_id": graph_id, "input": run_input or {}}
    )
    return str(run["id"])


def at_node(tab: Tab, node_id: str) -> Any:
    return tab.page.locator(f'svg.graph [data-node-id="{node_id}"]')


def button(tab: Tab, name: str) -> Any:
    return tab.page.get_by_role("group", name="Run controls").get_by_role(
        "button", name=name, exact=True
    )


# -- runs --------------------------------------------------------------------------------------


def test_the_runs_page_lists_newest_first_filters_and_follows_new_runs(
    daemon: DaemonProcess, tab: Tab, files: Path, shots: Path
) -> None:
    graph(daemon, "quick", [node("a", 0, 0), node("b", 250, 0)], [edge("a", "b")])
    hold = node("wait", 0, 0, "hold", file=str(files / "go"))
    graph(daemon, "held", [hold], [])
    done = start(daemon, "quick")
    wait_run(daemon, done, "completed")
    held = start(daemon, "held")
    wait_run(daemon, held, "running")
    page = tab.page

    page.goto(f"{daemon.url}{UI}/runs")

    rows = page.locator("table.runs tbody tr")
    expect(rows.first).to_be_visible()
    listed = ok(daemon, "GET", f"{P}/runs")
    assert rows.evaluate_all("rows => rows.map(r => r.dataset.runId)") == [r["id"] for r in listed]
    expect(page.locator(f'tr[data-run-id="{held}"]')).to_have_attribute("data-status", "running")
    last_message = ok(daemon, "GET", f"{P}/runs/{held}")["last_message"]
    expect(page.locator(f'tr[data-run-id="{held}"] td.message')).to_have_text(last_message)
    expect(page.locator(f'tr[data-run-id="{done}"]')).to_contain_text("Quick")
    assert ok(daemon, "GET", f"{P}/runs/{done}")["trigger"] == {"type": "api"}
    expect(page.locator(f'tr[data-run-id="{done}"] td.trigger')).to_have_text("api")
    page.screenshot(path=shots / "runs.png")

    page.get_by_label("Status").select_option("running")
    expect(page).to_have_url(re.compile(r"status=running"))
    expect(page.locator('tbody tr[data-status="running"]').first).to_be_visible()
    expect(page.locator('tbody tr:not([data-status="running"])')).to_have_count(0)

    (files / "go").touch()  # the held run completes: it no longer matches "running"
    expect(page.locator(f'tr[data-run-id="{held}"]')).to_have_count(0)

    page.get_by_label("Status").select_option("")
    page.get_by_label("Graph").select_option("quick")
    expect(page.locator(f'tr[data-run-id="{held}"]')).to_have_count(0)
    fresh = start(daemon, "quick")  # live: appears at the top, then completes
    expect(rows.first).to_have_attribute("data-run-id", fresh)
    expect(rows.first).to_have_attribute("data-status", "completed")


# -- one run -----------------------------------------------------------------------------------


def branching(daemon: DaemonProcess, files: Path) -> None:
    nodes = [
        node("first", 0, 100, "hold", file=str(files / "first")),
        node("big", 250, 0),
        node("small", 250, 200),
        node("last", 500, 100, "hold", file=str(files / "last")),
    ]
    edges = [
        edge("__start__", "first"),
        edge("first", "big", "input.amount > `100`"),
        edge("first", "small", "input.amount <= `100`"),
        edge("big", "last"),
        edge("small", "last"),
    ]
    graph(daemon, "branching", nodes, edges)


def test_the_run_view_draws_the_graph_and_node_states_change_live(
    daemon: DaemonProcess, tab: Tab, files: Path, shots: Path
) -> None:
    branching(daemon, files)
    run_id = start(daemon, "branching", {"amount": 250})
    page = tab.page

    page.goto(f"{daemon.url}{UI}/runs/{run_id}")

    expect(page.locator("svg.graph")).to_have_count(1)
    expect(page.locator("svg.graph [data-node-id]")).to_have_count(4)
    expect(at_node(tab, "big")).to_have_attribute("transform", "translate(250 0)")
    expect(at_node(tab, "small")).to_have_attribute("transform", "translate(250 200)")
    expect(at_node(tab, "first")).to_have_attribute("data-status", "running")
    expect(at_node(tab, "first")).to_contain_text("hold · running 50 %")
    expect(at_node(tab, "last")).to_have_attribute("data-status", "idle")
    expect(page.locator(".condition")).to_have_count(2)
    expect(page.locator(".run-status")).to_have_attribute("data-status", "running")

    (files / "first").touch()

    expect(at_node(tab, "first")).to_have_attribute("data-status", "completed")
    expect(at_node(tab, "big")).to_have_attribute("data-status", "completed")
    expect(at_node(tab, "last")).to_have_attribute("data-status", "running")
    expect(page.locator('[data-edge-id="first-big"]')).to_have_attribute("data-state", "taken")
    expect(page.locator('[data-edge-id="first-small"]')).to_have_attribute("data-state", "pending")

    at_node(tab, "big").focus()
    page.keyboard.press("Enter")  # nodes are reachable by keyboard
    panel = page.get_by_role("complementary", name="Node")
    expect(panel.get_by_role("heading", name="Big")).to_be_visible()
    at_node(tab, "first").click()
    expect(panel).to_contain_text("Attempts1")
    expect(panel).to_contain_text("held until the test lets go")
    expect(panel.locator(".badge")).to_have_text(re.compile("completed"))
    page.screenshot(path=shots / "run.png")

    (files / "last").touch()

    expect(page.locator(".run-status")).to_have_attribute("data-status", "completed")
    expect(at_node(tab, "last")).to_have_attribute("data-status", "completed")
    expect(at_node(tab, "small")).to_have_attribute("data-status", "skipped")
    expect(page.locator('[data-edge-id="first-small"]')).to_have_attribute("data-state", "skipped")
    expect(page.locator('[data-edge-id="small-last"]')).to_have_attribute("data-state", "skipped")
    expect(page.locator('[data-edge-id="big-last"]')).to_have_attribute("data-state", "taken")
    expect(panel).to_contain_text('"released": true')  # the node's output, once completed
    events = ok(daemon, "GET", f"{P}/runs/{run_id}/events?since=0")
    expect(page.locator(".vlist")).to_have_attribute("data-count", str(len(events)))
    controls = page.get_by_role("button", name=re.compile("Pause|Resume|Cancel|Retry"))
    expect(controls).to_have_count(0)


def test_each_control_does_what_it_says(daemon: DaemonProcess, tab: Tab, files: Path) -> None:
    nodes = [
        node("one", 0, 0, "hold", file=str(files / "one")),
        node("two", 250, 0, "hold", file=str(files / "two")),
    ]
    graph(daemon, "steps", nodes, [edge("one", "two")])
    run_id = start(daemon, "steps")
    wait_run(daemon, run_id, "running")
    page = tab.page
    page.goto(f"{daemon.url}{UI}/runs/{run_id}")
    expect(at_node(tab, "one")).to_have_attribute("data-status", "running")

    button(tab, "Pause").click()
    expect(page.locator(".run-status")).to_have_attribute("data-status", "paused")
    assert wait_run(daemon, run_id, "paused")["pause_reason"] == "requested"
    (files / "one").touch()  # the node in flight finishes; nothing new starts
    expect(at_node(tab, "one")).to_have_attribute("data-status", "completed")
    expect(at_node(tab, "two")).to_have_attribute("data-status", "idle")

    button(tab, "Resume").click()
    expect(at_node(tab, "two")).to_have_attribute("data-status", "running")
    wait_run(daemon, run_id, "running")

    button(tab, "Cancel").click()
    expect(page.locator(".run-status")).to_have_attribute("data-status", "cancelled")
    wait_run(daemon, run_id, "cancelled")
    expect(at_node(tab, "two")).to_have_attribute("data-status", "cancelled")
    expect(button(tab, "Retry")).to_have_count(0)

    button(tab, "Start over").click()
    expect(at_node(tab, "two")).to_have_attribute("data-status", "running")
    assert wait_run(daemon, run_id, "running")["status"] == "running"
    (files / "two").touch()
    expect(page.locator(".run-status")).to_have_attribute("data-status", "completed")
    expect(page.get_by_role("group", name="Run controls").get_by_role("button")).to_have_count(0)


def test_retry_runs_the_failed_node_again(daemon: DaemonProcess, tab: Tab, files: Path) -> None:
    nodes = [node("prepare", 0, 0), node("flaky", 250, 0, "fail_unless", file=str(files / "ok"))]
    graph(daemon, "flaky", nodes, [edge("prepare", "flaky")])
    run_id = start(daemon, "flaky")
    wait_run(daemon, run_id, "failed")
    page = tab.page
    page.goto(f"{daemon.url}{UI}/runs/{run_id}")
    expect(at_node(tab, "flaky")).to_have_attribute("data-status", "failed")
    run_region = page.get_by_role("region", name="Run", exact=True)
    expect(run_region).to_contain_text("the file is not there yet")

    (files / "ok").touch()
    button(tab, "Retry").click()

    expect(page.locator(".run-status")).to_have_attribute("data-status", "completed")
    run = wait_run(daemon, run_id, "completed")
    assert run["output"]["outputs"]["flaky"] == {"found": True}
    expect(at_node(tab, "flaky")).to_have_attribute("data-status", "completed")


# -- input prompts -----------------------------------------------------------------------------


def test_an_approval_is_answered_by_its_choice_button(
    daemon: DaemonProcess, tab: Tab, shots: Path
) -> None:
    ok(daemon, "POST", f"{P}/graphs", json.loads((ROOT / "examples/approval.json").read_text()))
    run_id = start(daemon, "approval")
    wait_run(daemon, run_id, "paused")
    page = tab.page

    page.goto(f"{daemon.url}{UI}/runs/{run_id}")

    prompt = page.get_by_role("region", name="Input requested")
    expect(prompt).to_contain_text("Ship the release?")
    expect(prompt.get_by_role("button")).to_have_count(2)
    expect(button(tab, "Resume")).to_have_count(0)  # the answer is what resumes it
    page.screenshot(path=shots / "approval.png")
    prompt.get_by_role("button", name="yes", exact=True).click()

    run = wait_run(daemon, run_id, "completed")
    expect(page.locator(".run-status")).to_have_attribute("data-status", "completed")
    assert run["output"]["outputs"]["approve"] == {"value": "yes"}
    expect(at_node(tab, "ship")).to_have_attribute("data-status", "completed")
    expect(at_node(tab, "shelve")).to_have_attribute("data-status", "skipped")
    expect(prompt).to_be_hidden()


def test_a_free_form_prompt_is_answered_in_its_text_field(daemon: DaemonProcess, tab: Tab) -> None:
    asking = node("ask", 0, 0, "approval", prompt="Why ship it?")
    graph(daemon, "why", [asking], [])
    run_id = start(daemon, "why")
    wait_run(daemon, run_id, "paused")
    page = tab.page
    page.goto(f"{daemon.url}{UI}/runs/{run_id}")

    prompt = page.get_by_role("region", name="Input requested")
    expect(prompt).to_contain_text("Why ship it?")
    prompt.get_by_label("Answer").fill("because it is ready")
    prompt.get_by_role("button", name="Send").click()

    expect(page.locator(".run-status")).to_have_attribute("data-status", "completed")
    run = wait_run(daemon, run_id, "completed")
    assert run["output"]["outputs"]["ask"] == {"value": "because it is ready"}


# -- errors ------------------------------------------------------------------------------------


def test_an_api_error_is_shown_as_the_detail_the_server_sent(
    daemon: DaemonProcess, tab: Tab
) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    tab.allow("status of 404")
    page = tab.page

    page.goto(f"{daemon.url}{UI}/runs/{missing}")

    expect(page.get_by_role("alert")).to_have_text(re.compile(f"run '{missing}' not found"))


def test_a_run_input_is_checked_before_it_is_sent_and_refusals_say_why(
    daemon: DaemonProcess, tab: Tab
) -> None:
    graph(daemon, "plain", [node("only", 0, 0)], [])
    tab.allow("status of 413")
    page = tab.page
    page.goto(f"{daemon.url}{UI}/graphs/plain")
    before = len(ok(daemon, "GET", f"{P}/runs?workflow_id=plain"))
    form = page.get_by_role("region", name="Start a run")

    form.get_by_label("Input (a JSON object)").fill("{not json")
    form.get_by_role("button", name="Start run").click()
    expect(form.get_by_role("alert")).to_contain_text("Input is not valid JSON")
    form.get_by_label("Input (a JSON object)").fill("[1, 2]")
    form.get_by_role("button", name="Start run").click()
    expect(form.get_by_role("alert")).to_contain_text("must be a JSON object")
    assert len(ok(daemon, "GET", f"{P}/runs?workflow_id=plain")) == before  # nothing was sent

    form.get_by_label("Input (a JSON object)").fill(json.dumps({"blob": "x" * 300_000}))
    form.get_by_role("button", name="Start run").click()
    expect(form.get_by_role("alert")).to_contain_text("bytes; the limit is")

    form.get_by_label("Input (a JSON object)").fill('{"amount": 7}')
    form.get_by_role("button", name="Start run").click()
    expect(page).to_have_url(re.compile(r"/ui/projects/acme/runs/[0-9a-f-]{36}$"))
    expect(page.locator(".run-status")).to_have_attribute("data-status", "completed")
    assert len(ok(daemon, "GET", f"{P}/runs?workflow_id=plain")) == before + 1


# -- graphs and node types ---------------------------------------------------------------------


def test_a_graph_is_drawn_and_validation_problems_point_at_their_node_and_edge(
    daemon: DaemonProcess, tab: Tab, shots: Path
) -> None:
    ok(daemon, "POST", f"{P}/graphs", json.loads((ROOT / "examples/fan-out-join.json").read_text()))
    tab.allow("status of 422")
    page = tab.page
    page.goto(f"{daemon.url}{UI}/graphs")
    page.get_by_role("link", name="Fan-out and join").click()

    expect(page).to_have_url(re.compile("/ui/projects/acme/graphs/fan-out-join$"))
    expect(page.locator("svg.graph [data-node-id]")).to_have_count(5)
    slow = page.locator('[data-node-id="slow"]')
    expect(slow).to_have_attribute("transform", "translate(250 200)")
    expect(page.locator(".version")).to_have_text("version 1")
    page.screenshot(path=shots / "graph.png")

    text = page.get_by_label("Graph JSON")
    spec = json.loads(text.input_value())
    spec["nodes"][2]["config"] = {"seconds": "soon"}  # "medium": a delay needs a number
    spec["edges"][1]["target"] = "nowhere"
    text.fill(json.dumps(spec))
    page.get_by_role("button", name="Validate").click()

    expect(page.locator('[data-node-id="medium"]')).to_have_attribute("data-problem", "true")
    expect(page.locator(f'[data-edge-id="{spec["edges"][1]["id"]}"]')).to_have_count(0)
    problems = page.locator(".problem-list li")
    expect(problems).to_have_count(2)
    expect(problems.first).to_contain_text("/nodes/2/config/seconds")
    expect(page.locator("[data-problem]")).to_have_count(1)  # the edge to nowhere is not drawn
    page.get_by_role("button", name="Show node medium").click()
    expect(page.locator('[data-node-id="medium"]')).to_be_focused()

    spec["edges"][1]["target"] = "fast"
    spec["nodes"][2]["config"] = {"seconds": 0.1}
    text.fill(json.dumps(spec))
    page.get_by_role("button", name="Validate").click()
    expect(page.get_by_role("status")).to_have_text("✓ The graph is valid.")
    expect(page.locator("[data-problem]")).to_have_count(0)


def test_the_node_types_page_shows_each_config_schema(
    daemon: DaemonProcess, tab: Tab, shots: Path
) -> None:
    page = tab.page
    page.goto(f"{daemon.url}/ui/node-types")

    delay = page.locator('[data-node-type="delay"]')
    expect(delay).to_contain_text("Waits `seconds`")
    expect(delay.locator("table.schema tbody tr")).to_have_count(1)
    expect(delay.locator("table.schema")).to_contain_text("minimum 0, maximum 86400")
    listed = ok(daemon, "GET", "/api/node-types")
    expect(page.locator("[data-node-type]")).to_have_count(len(listed))
    page.screenshot(path=shots / "node-types.png", full_page=True)


def test_the_root_opens_the_last_project(daemon: DaemonProcess, tab: Tab) -> None:
    page = tab.page
    page.goto(f"{daemon.url}/")
    page.get_by_label("Project", exact=True).last.fill("acme")
    page.get_by_role("button", name="Open").click()
    expect(page).to_have_url(f"{daemon.url}{UI}/runs")

    page.goto(f"{daemon.url}/")

    expect(page).to_have_url(f"{daemon.url}{UI}/runs")
    page.get_by_role("link", name="Node types").click()
    expect(page).to_have_url(f"{daemon.url}/ui/node-types")
    page.go_back()
    expect(page).to_have_url(f"{daemon.url}{UI}/runs")
    expect(page.get_by_role("heading", name="Runs")).to_be_visible()


def test_the_runs_page_pages_through_the_servers_link_rel_next(
    daemon: DaemonProcess, tab: Tab
) -> None:
    """More runs than one page (the page asks for 50): the second page comes from the cursor
    the server's Link names, and a run created in between neither shifts nor repeats a row."""
    graph(daemon, "paged", [node("only", 0, 0)], [])
    made = [start(daemon, "paged") for _ in range(RUNS_PAGE + 10)]
    listed = f"{P}/runs?workflow_id=paged&status=completed"
    deadline = time.monotonic() + 60
    while len(ok(daemon, "GET", listed)) < len(made):
        assert time.monotonic() < deadline, "the runs did not complete in time"
        time.sleep(0.05)
    asked: list[str] = []
    page = tab.page
    page.on(
        "request",
        lambda r: asked.append(r.url) if "/workflows/runs?" in r.url else None,
    )
    page.goto(f"{daemon.url}{UI}/runs?graph=paged")

    rows = page.locator("table.runs tbody tr")
    expect(rows).to_have_count(RUNS_PAGE)
    expect(page.locator("[data-loaded=true]")).to_have_count(1)
    link = next_link_of(daemon, asked[0].removeprefix(daemon.url))
    fresh = start(daemon, "paged")  # live: at the top; the next page is not moved by it
    expect(rows.first).to_have_attribute("data-run-id", fresh)
    page.get_by_role("button", name="Load more").click()

    expect(rows).to_have_count(len(made) + 1)
    expect(page.get_by_role("button", name="Load more")).to_be_hidden()
    shown = rows.evaluate_all("rows => rows.map(r => r.dataset.runId)")
    assert shown == [fresh, *reversed(made)]
    first, second = asked
    assert "limit=50" in first
    assert "cursor=" not in first
    assert second == daemon.url + link


def next_link_of(daemon: DaemonProcess, path: str) -> str:
    """The target of the Link rel="next" the daemon answers `path` with."""
    with urllib.request.urlopen(daemon.url + path, timeout=10) as response:
        header = response.headers["Link"]
    found = re.fullmatch(r'<([^>]*)>; rel="next"', header)
    assert found, header
    return found.group(1)
