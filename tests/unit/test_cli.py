"""The client commands through click's CliRunner, against a real daemon subprocess.

One daemon serves the module; each test works in a project of its own. CliRunner's stdout is
not a terminal, so `--watch` prints one plain line per event.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from adapters.cli import main
from adapters.client import api as api_module
from tests.support.process import DaemonProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
Cli = Callable[..., Result]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    process = DaemonProcess(tmp_path_factory.mktemp("daemon"))
    process.start()
    yield process
    process.stop()


@pytest.fixture
def project() -> str:
    return f"p-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def cli(daemon: DaemonProcess, project: str) -> Cli:
    """`cortexd ARGS...` in-process, pointed at the daemon and the test's project by env."""

    def invoke(*args: str, stdin: str | None = None, **env: str) -> Result:
        environ = {"CORTEXD_URL": daemon.url, "CORTEXD_PROJECT": project, "CORTEXD_TOKEN": ""}
        result = CliRunner().invoke(main, list(args), input=stdin, env={**environ, **env})
        assert "Traceback" not in result.output + result.stderr
        if result.exception is not None:
            assert isinstance(result.exception, SystemExit), result.exception
        return result

    return invoke


def write(tmp_path: Path, name: str, data: Any) -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def graph(graph_id: str, *nodes: dict[str, Any], **extra: Any) -> dict[str, Any]:
    ids = [n["id"] for n in nodes]
    edges = [{"source": a, "target": b} for a, b in itertools.pairwise(ids)]
    return {"id": graph_id, "name": graph_id.title(), "nodes": list(nodes), "edges": edges, **extra}


def delay(node_id: str, seconds: float) -> dict[str, Any]:
    return {"id": node_id, "type": "delay", "config": {"seconds": seconds}}


def run_id_of(result: Result) -> str:
    run: dict[str, Any] = json.loads(result.stdout)
    return str(run["id"])


# -- graphs ------------------------------------------------------------------------------------


def test_apply_creates_then_replaces_and_list_shows_the_version(cli: Cli) -> None:
    hello = str(EXAMPLES / "hello.json")

    first = cli("graph", "apply", hello)
    second = cli("graph", "apply", hello)
    listed = cli("graph", "list")

    assert first.exit_code == 0
    assert first.stdout == "created graph hello (version 1, 2 nodes)\n"
    assert second.stdout == "updated graph hello (version 2, 2 nodes)\n"
    header, row = listed.stdout.splitlines()
    assert header.split() == ["GRAPH", "NAME", "VERSION", "NODES", "UPDATED"]
    assert row.split()[:4] == ["hello", "Hello", "2", "2"]


def test_apply_reads_standard_input_and_json_prints_the_stored_graph(cli: Cli) -> None:
    spec = json.dumps(graph("piped", {"id": "a"}))

    result = cli("graph", "apply", "-", "--json", stdin=spec)

    stored = json.loads(result.stdout)
    assert (stored["id"], stored["version"], stored["nodes"][0]["type"]) == (
        "piped",
        1,
        "passthrough",
    )


def test_show_lists_nodes_and_conditional_edges(cli: Cli) -> None:
    cli("graph", "apply", str(EXAMPLES / "branching.json"))

    shown = cli("graph", "show", "branching")

    rows = [line.split() for line in shown.stdout.splitlines()]
    assert shown.exit_code == 0
    assert rows[0][:4] == ["branching", "Branching", "version", "1"]
    assert ["review", "delay", "Manual", "review", '{"seconds":', "0.5}"] in rows
    assert ["receive", "review", "input.amount", ">", "`100`"] in rows
    assert json.loads(cli("graph", "show", "branching", "--json").stdout)["version"] == 1


def test_validate_prints_every_problem_with_its_json_path(cli: Cli, tmp_path: Path) -> None:
    bad = graph("bad", {"id": "a", "type": "nope"}, {"id": "b", "type": "delay", "config": {}})
    bad["edges"].append({"source": "a", "target": "ghost"})
    path = write(tmp_path, "bad.json", bad)

    invalid = cli("graph", "validate", path)
    valid = cli("graph", "validate", str(EXAMPLES / "fan-out-join.json"))

    assert invalid.exit_code == 1
    lines = invalid.stdout.splitlines()
    assert lines[0] == f"{path}: the graph is not valid (3 problems)"
    assert any(line.startswith("  /nodes/0/type: unknown node type 'nope'") for line in lines)
    assert any(line.startswith("  /nodes/1/config") for line in lines)
    assert "  /edges/1/target: no node 'ghost'" in lines
    assert valid.exit_code == 0
    assert valid.stdout.endswith("fan-out-join.json: valid\n")
    assert json.loads(cli("graph", "validate", path, "--json").stdout)["valid"] is False


def test_apply_of_an_invalid_graph_is_the_servers_detail_and_problems(
    cli: Cli, tmp_path: Path
) -> None:
    path = write(tmp_path, "bad.json", graph("bad", {"id": "a", "type": "nope"}))

    result = cli("graph", "apply", path)

    assert result.exit_code == 4
    assert result.stdout == ""
    first, *problems = result.stderr.splitlines()
    assert first == "cortexd: the graph is not valid (HTTP 422)"
    assert problems[0].startswith("  /nodes/0/type: unknown node type 'nope'")


def test_delete_then_show_is_a_404_on_one_line(cli: Cli) -> None:
    cli("graph", "apply", str(EXAMPLES / "hello.json"))

    deleted = cli("graph", "delete", "hello")
    shown = cli("graph", "show", "hello")

    assert deleted.stdout == "deleted graph hello\n"
    assert shown.exit_code == 4
    assert shown.stderr == "cortexd: graph 'hello' not found (HTTP 404)\n"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{nope", "is not valid JSON: Expecting property name enclosed in double quotes (line 1"),
        ("[1, 2]", "must hold a JSON object (a graph), not list"),
        (None, "cannot read"),
    ],
)
def test_a_bad_graph_file_is_one_line_and_exit_2(
    cli: Cli, tmp_path: Path, content: str | None, message: str
) -> None:
    path = write(tmp_path, "g.json", content) if content is not None else str(tmp_path / "no.json")

    result = cli("graph", "apply", path)

    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1
    assert message in result.stderr


# -- runs --------------------------------------------------------------------------------------


def test_start_watch_prints_each_event_and_exits_0_when_completed(cli: Cli, tmp_path: Path) -> None:
    cli("graph", "apply", str(EXAMPLES / "hello.json"))
    run_input = write(tmp_path, "input.json", {"name": "Ada"})

    result = cli("run", "start", "hello", "--input", f"@{run_input}", "--watch")

    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].startswith("started run ")
    assert lines[0].endswith(" of graph hello v1")
    subjects = [line.split()[2:5] for line in lines[1:-1]]
    assert ["run", "pending", "queued"] in subjects
    assert ["node", "greet", "completed"] in subjects
    assert ["node", "wait", "completed"] in subjects
    assert lines[-2].split()[2:4] == ["run", "completed"]
    assert lines[-1].startswith("run ")
    assert " completed in " in lines[-1]


def test_status_list_and_events_of_a_finished_run(cli: Cli) -> None:
    cli("graph", "apply", str(EXAMPLES / "branching.json"))
    started = cli("run", "start", "branching", "--input", '{"amount": 250}', "--json")
    run_id = run_id_of(started)
    cli("run", "watch", run_id)

    status = cli("run", "status", run_id)
    listed = cli("run", "list", "--status", "completed", "--graph", "branching")
    none_failed = cli("run", "list", "--status", "failed")
    events = cli("run", "events", run_id).stdout.splitlines()
    since = int(events[-3].split()[0])
    later = cli("run", "events", run_id, "--since", str(since)).stdout.splitlines()

    rows = {line.split()[0]: line.split()[1:] for line in status.stdout.splitlines()[2:]}
    assert status.stdout.splitlines()[0] == f"run {run_id}  completed  100%  started by api"
    assert rows["review"][:2] == ["completed", "━━━━━━━━━━━━━━━━━━━━"]
    assert rows["auto_accept"][0] == "skipped"
    assert rows["auto_accept"][-3:] == ["branch", "not", "taken"]
    assert listed.stdout.splitlines()[1].split()[:4] == [run_id, "branching", "v1", "completed"]
    assert none_failed.stdout == "no runs\n"
    assert later == events[-2:]


def test_run_list_pages_through_the_links_up_to_its_limit_and_filters(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli("graph", "apply", write(tmp_path, "quick.json", graph("quick", {"id": "a"})))
    made = [run_id_of(cli("run", "start", "quick", "--json")) for _ in range(7)]
    newest_first = list(reversed(made))
    monkeypatch.setattr(api_module, "PAGE_MAX", 2)  # so that 7 runs are 4 pages

    every = cli("run", "list", "--all", "--json")
    five = cli("run", "list", "--limit", "5", "--json")
    table = cli("run", "list", "--limit", "3")
    default = cli("run", "list", "--json")
    done = cli("run", "list", "--status", "pending,running,completed", "--all", "--json")
    later = cli("run", "list", "--created-after", "2999-01-01", "--json")
    since_2000 = cli("run", "list", "--created-after", "2000-01-01T00:00:00", "--json")
    bad_time = cli("run", "list", "--created-before", "last tuesday")
    bad_status = cli("run", "list", "--status", "completed,sleeping")

    assert [r["id"] for r in json.loads(every.stdout)] == newest_first
    assert [r["id"] for r in json.loads(five.stdout)] == newest_first[:5]
    assert [line.split()[0] for line in table.stdout.splitlines()[1:]] == newest_first[:3]
    assert table.stderr == "showing the first 3 runs; more with --limit N or --all\n"
    assert [r["id"] for r in json.loads(default.stdout)] == newest_first  # 50 by default
    assert sorted(r["id"] for r in json.loads(done.stdout)) == sorted(made)
    assert json.loads(later.stdout) == []
    assert len(json.loads(since_2000.stdout)) == 7
    assert bad_time.exit_code == 2
    assert "--created-before must be a date" in bad_time.stderr
    assert bad_status.exit_code == 4
    assert bad_status.stderr.startswith("cortexd: unknown status 'sleeping'")


def test_graph_list_pages_and_says_when_there_are_more(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for graph_id in ("c", "a", "b"):
        cli("graph", "apply", write(tmp_path, f"{graph_id}.json", graph(graph_id, {"id": "n"})))
    monkeypatch.setattr(api_module, "PAGE_MAX", 2)

    every = cli("graph", "list", "--all", "--json")
    two = cli("graph", "list", "--limit", "2")

    assert [g["id"] for g in json.loads(every.stdout)] == ["a", "b", "c"]
    assert [line.split()[0] for line in two.stdout.splitlines()[1:]] == ["a", "b"]
    assert two.stderr == "showing the first 2 graphs; more with --limit N or --all\n"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ('</x?cursor=2>; rel="next"', "http://127.0.0.1:1/x?cursor=2"),
        ("<?cursor=2>; rel=next", "http://127.0.0.1:1/api/runs?cursor=2"),
        ('</first>; rel="first", </n>; rel="next"', "http://127.0.0.1:1/n"),
        ('</prev>; rel="prev"', None),
    ],
)
def test_a_next_link_is_resolved_against_the_request(header: str | None, expected: str) -> None:
    current = "http://127.0.0.1:1/api/runs?limit=2"

    assert api_module.next_link(current, header, "http://127.0.0.1:1") == expected


def test_a_next_link_to_another_origin_is_not_followed() -> None:
    with pytest.raises(api_module.ClientError, match="another origin"):
        api_module.next_link(
            "http://127.0.0.1:1/r", '<http://evil/r>; rel="next"', "http://127.0.0.1:1"
        )


def test_a_failed_run_exits_1_with_the_error_and_the_retry_command(
    cli: Cli, project: str, tmp_path: Path
) -> None:
    boom = {"id": "boom", "type": "transform", "config": {"output": {"x": "abs(input.word)"}}}
    cli("graph", "apply", write(tmp_path, "g.json", graph("failing", boom)))

    result = cli("run", "start", "failing", "--input", '{"word": "w"}', "--watch")

    assert result.exit_code == 1
    *_, failed, retry = result.stdout.splitlines()
    assert "failed: JMESPathTypeError in boom: In function abs()" in failed
    run_id = failed.split()[1]
    assert retry.startswith("retry it from the failed node with: cortexd run execute ")
    assert f"{run_id} --project {project} --url http://127.0.0.1:" in retry
    again = cli("run", "execute", run_id, "--from-start", "--watch")
    assert again.exit_code == 1
    assert again.stdout.splitlines()[0] == f"run {run_id} is pending"
    assert "queued" in again.stdout.splitlines()[1], "the watch starts at the new attempt"


def test_cancel_and_watch_a_cancelled_run_exits_2(cli: Cli, tmp_path: Path) -> None:
    cli("graph", "apply", write(tmp_path, "g.json", graph("slow", delay("wait", 60))))
    run_id = run_id_of(cli("run", "start", "slow", "--json"))

    cancelled = cli("run", "cancel", run_id)
    watched = cli("run", "watch", run_id)
    again = cli("run", "cancel", run_id)

    assert cancelled.stdout == f"run {run_id} is cancelled\n"
    assert watched.exit_code == 2
    assert watched.stdout.splitlines()[-1] == f"run {run_id} cancelled"
    assert again.exit_code == 4
    assert again.stderr == f"cortexd: cannot cancel: run '{run_id}' is 'cancelled' (HTTP 400)\n"


def test_pause_then_resume_with_watch_completes(cli: Cli, tmp_path: Path) -> None:
    spec = graph("two", delay("first", 1), {"id": "second"})
    cli("graph", "apply", write(tmp_path, "g.json", spec))
    run_id = run_id_of(cli("run", "start", "two", "--json"))

    paused = cli("run", "pause", run_id)
    resumed = cli("run", "resume", run_id, "--watch", "--timeout", "20")

    assert paused.stdout == f"run {run_id} is paused\n"
    assert resumed.exit_code == 0
    assert resumed.stdout.splitlines()[0] == f"run {run_id} is running"
    assert resumed.stdout.splitlines()[-1].startswith(f"run {run_id} completed in ")


def test_a_run_waiting_for_input_shows_the_prompt_and_the_resume_command(
    cli: Cli, project: str
) -> None:
    cli("graph", "apply", str(EXAMPLES / "approval.json"))

    waiting = cli("run", "start", "approval", "--watch")

    assert waiting.exit_code == 3
    lines = waiting.stdout.splitlines()
    run_id = lines[0].split()[2]
    assert lines[-3] == f"run {run_id} is waiting for input: Ship the release?"
    assert lines[-2] == 'choices: "yes", "no"'
    assert lines[-1].startswith(
        f"answer with: cortexd run resume {run_id} --value '\"yes\"' --project {project}"
    )
    status = cli("run", "status", run_id)
    assert f"run {run_id} is waiting for input: Ship the release?" in status.stdout
    answered = cli("run", "resume", run_id, "--value", '"yes"', "--watch", "--json")
    assert answered.exit_code == 0
    events = [json.loads(line) for line in answered.stdout.splitlines()]
    assert events[0]["type"] == "workflow.run.resumed"
    assert events[-1]["type"] == "workflow.run.completed"
    rows = {
        line.split()[0]: line.split()[1]
        for line in cli("run", "status", run_id).stdout.splitlines()[2:]
    }
    assert (rows["ship"], rows["shelve"]) == ("completed", "skipped")


def test_a_value_that_is_not_json_says_how_to_quote_it(cli: Cli) -> None:
    result = cli("run", "resume", "any-run", "--value", "yes")

    assert result.exit_code == 2
    assert result.stderr == (
        "cortexd: --value is not valid JSON: Expecting value (line 1, column 1)"
        " (a string needs JSON quotes, e.g. '\"yes\"')\n"
    )


def test_watch_timeout_exits_124_and_leaves_the_run_running(cli: Cli, tmp_path: Path) -> None:
    cli("graph", "apply", write(tmp_path, "g.json", graph("slow", delay("wait", 60))))
    run_id = run_id_of(cli("run", "start", "slow", "--json"))

    watched = cli("run", "watch", run_id, "--timeout", "0.3")

    assert watched.exit_code == 124
    assert watched.stderr.startswith("stopped watching after 0.3 s; the run goes on")
    status = json.loads(cli("run", "status", run_id, "--json").stdout)
    assert status["status"] in ("pending", "running")
    cli("run", "cancel", run_id)


def test_json_watch_prints_one_event_per_line(cli: Cli) -> None:
    cli("graph", "apply", str(EXAMPLES / "hello.json"))

    result = cli("run", "start", "hello", "--watch", "--json")

    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.exit_code == 0
    assert events[0]["type"] == "workflow.run.created"
    assert events[-1]["type"] == "workflow.run.completed"
    assert [e["seq"] for e in events] == sorted({e["seq"] for e in events})
    assert " completed in " in result.stderr


def http_requests(daemon: DaemonProcess, route_end: str) -> float:
    """How many requests the daemon has answered on the run route ending `route_end`."""
    with urllib.request.urlopen(f"{daemon.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    prefix = "cortexd_http_request_duration_seconds_count{"
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(prefix) and f'/runs/{{run_id}}{route_end}"' in line
    )


def test_watch_follows_the_websocket_without_polling(cli: Cli, daemon: DaemonProcess) -> None:
    spec = graph("ticking", delay("wait", 2.5), {"id": "after"})
    cli("graph", "apply", "-", stdin=json.dumps(spec))
    before = (http_requests(daemon, "/status"), http_requests(daemon, "/events"))

    result = cli("run", "start", "ticking", "--watch")

    after = (http_requests(daemon, "/status"), http_requests(daemon, "/events"))
    assert result.exit_code == 0, result.output
    assert after[0] - before[0] == 1, "one status to start from, then no polling"
    assert after[1] == before[1], "the events came over the WebSocket"
    lines = [line.split()[2:] for line in result.stdout.splitlines()[1:-1]]
    ticks = [
        int(word[:-1])
        for words in lines
        if words[:3] == ["node", "wait", "running"]
        for word in words
        if word.endswith("%")
    ]
    assert len(ticks) >= 2, f"each progress report is a line of its own:\n{result.stdout}"
    assert ticks == sorted(ticks)
    assert result.stdout.splitlines()[-1].startswith("run ")


def test_unknown_run_and_unknown_status_are_the_servers_detail(cli: Cli) -> None:
    missing = cli("run", "status", "no-such-run")
    bad_status = cli("run", "list", "--status", "sleeping")

    assert missing.exit_code == 4
    assert missing.stderr == "cortexd: run 'no-such-run' not found (HTTP 404)\n"
    assert bad_status.stderr.startswith("cortexd: unknown status 'sleeping'; one of: pending")


# -- catalogue, options, transport -------------------------------------------------------------


def test_node_types_and_plugins(cli: Cli) -> None:
    types = cli("node-types").stdout.splitlines()
    plugins = cli("plugins", "--json")

    assert types[0].split() == ["TYPE", "TITLE", "DESCRIPTION"]
    assert {"passthrough", "delay"} <= {line.split()[0] for line in types[1:]}
    basic = next(p for p in json.loads(plugins.stdout) if p["name"] == "plugins.basic")
    assert basic["node_types"] == ["passthrough", "delay"]


def test_options_override_the_environment(cli: Cli, daemon: DaemonProcess, project: str) -> None:
    other = f"{project}-other"
    cli("graph", "apply", str(EXAMPLES / "hello.json"), "--project", other)
    unreachable = "http://127.0.0.1:1"

    here = cli("graph", "list", "--json")
    there = cli(
        "graph", "list", "--json", "--project", other, "--url", daemon.url, CORTEXD_URL=unreachable
    )

    assert json.loads(here.stdout) == []
    assert [g["id"] for g in json.loads(there.stdout)] == ["hello"]


def test_an_unreachable_daemon_names_the_url_and_how_to_start_it(cli: Cli) -> None:
    url = f"http://127.0.0.1:{free_port()}"

    result = cli("run", "list", "--url", url)

    assert result.exit_code == 5
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(f"cortexd: cannot reach the cortexd daemon at {url} (")
    assert "`make run` or `cortexd serve`" in result.stderr


class _Recorder(BaseHTTPRequestHandler):
    """Answers every GET with the status and body the test set, recording the headers."""

    answer: tuple[int, bytes] = (200, b"[]")
    seen: list[dict[str, str]] = []

    def do_GET(self) -> None:
        self.seen.append(dict(self.headers))
        status, body = self.answer
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def fake_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Recorder.seen = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_the_token_is_sent_as_a_bearer_header(cli: Cli, fake_server: str) -> None:
    _Recorder.answer = (200, b"[]")

    result = cli("graph", "list", "--url", fake_server, CORTEXD_TOKEN="s3cret")

    assert result.stdout == "no graphs\n"
    assert _Recorder.seen[0]["Authorization"] == "Bearer s3cret"


def test_a_refused_token_says_how_to_give_one(cli: Cli, fake_server: str) -> None:
    _Recorder.answer = (401, b'{"detail": "a bearer token is required"}')

    result = cli("plugins", "--url", fake_server)

    assert result.exit_code == 4
    assert result.stderr == (
        "cortexd: a bearer token is required (give a token with --token or CORTEXD_TOKEN)"
        " (HTTP 401)\n"
    )


def test_an_answer_that_is_not_json_is_one_line(cli: Cli, fake_server: str) -> None:
    _Recorder.answer = (200, b"<html>hello</html>")

    result = cli("node-types", "--url", fake_server)

    assert result.exit_code == 1
    assert result.stderr == (
        "cortexd: the answer (HTTP 200) is not JSON: is --url pointing at cortexd?\n"
    )


def test_client_modules_do_not_import_the_engine_or_langgraph() -> None:
    code = (
        "import sys, adapters.cli, adapters.client.runs, adapters.client.graphs\n"
        "import adapters.client.hooks, adapters.client.schedules\n"
        "heavy = ('langgraph', 'aiohttp', 'aiosqlite', 'core.engine', 'core.compiler',"
        " 'adapters.daemon', 'adapters.serve', 'adapters.http')\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )

    assert loaded.stdout.strip() == "[]"
