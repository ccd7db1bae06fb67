"""`cortexd run start | list | status | watch | events | cancel | pause | resume | execute`."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

import click

from adapters.client.output import (
    console,
    duration,
    event_line,
    print_json,
    run_message,
    runs_table,
    status_view,
)
from adapters.client.session import (
    ALL,
    LIMIT,
    ClientGroup,
    Session,
    api_time,
    client_options,
    parse_json,
    say_more,
    session,
)
from adapters.client.watch import (
    EXIT_FOR_STATUS,
    EXIT_INPUT_REQUIRED,
    EXIT_INTERRUPTED,
    EXIT_PAUSED,
    EXIT_TIMED_OUT,
    Ending,
    JsonLinesView,
    LineView,
    LiveView,
    View,
    watch_run,
)

JSON = dict[str, Any]

RUN_ID = click.argument("run_id", metavar="ID")
WATCH = click.option(
    "--watch",
    is_flag=True,
    help="Follow the run until it ends: exit 0 completed, 1 failed, 2 cancelled, "
    "3 waiting for input.",
)
TIMEOUT = click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Stop watching after this long (exit 124); the run goes on.",
)
INPUT = click.option(
    "--input", "run_input", metavar="JSON|@FILE", help="The run's input: a JSON object."
)


@click.group(cls=ClientGroup)
def run() -> None:
    """Start, follow and control runs."""


@run.command()
@click.argument("graph_id", metavar="GRAPH_ID")
@INPUT
@WATCH
@TIMEOUT
@click.option(
    "--wait",
    "wait_s",
    type=click.IntRange(min=0, max=3600),
    is_flag=False,
    flag_value=60,
    default=None,
    metavar="[SECONDS]",
    help="One request that answers when the run ends or waits (Prefer: wait=N; 60 s when no "
    "SECONDS, at most the daemon's [runs] max_wait_s): exit 0 completed, 1 failed, "
    "2 cancelled, 3 waiting for input, 4 paused, 124 still running.",
)
@click.option(
    "--key",
    metavar="KEY",
    help="An Idempotency-Key: started again with the same key, the first run is the answer.",
)
@client_options
def start(
    graph_id: str,
    run_input: str | None,
    watch: bool,
    timeout_s: float | None,
    wait_s: int | None,
    key: str | None,
) -> None:
    """Start a run of a graph (queued at once)."""
    s = session()
    if watch and wait_s is not None:
        raise click.UsageError("--watch and --wait are two ways to wait: give one")
    body = None if run_input is None else parse_json(run_input, "--input")
    created = s.api.start_run(graph_id, body, wait_s=wait_s, key=key)
    if wait_s is not None:
        _say_waited(s, created)
    if s.as_json and not watch:
        print_json(created)
        return
    if not s.as_json:
        version = f"v{created.get('graph_version')}"
        click.echo(f"started run {created['id']} of graph {graph_id} {version}")
    if watch:
        follow(s, str(created["id"]), timeout_s)


def _say_waited(s: Session, run: JSON) -> None:
    """What `start --wait` answers: the run as it settled (or not), and its exit code."""
    ctx = click.get_current_context()
    state, run_id = str(run.get("status")), str(run.get("id"))
    if run.get("pause_reason") == "input_required":
        state = "input_required"
    code = {**EXIT_FOR_STATUS, "input_required": EXIT_INPUT_REQUIRED, "paused": EXIT_PAUSED}
    if s.as_json:
        print_json(run)
        ctx.exit(code.get(state, EXIT_TIMED_OUT))
    if state == "completed":
        took = duration(run.get("started_at"), run.get("finished_at"))
        click.echo(f"run {run_id} of graph {run.get('workflow_id')} completed in {took}")
        click.echo(json.dumps(run.get("output"), indent=2))
    elif state == "failed":
        click.echo(f"run {run_id} failed: {run_message(run)}")
    elif state == "input_required":
        _say_input_required(s, run, sys.stdout)
    elif state in ("cancelled", "paused"):
        click.echo(f"run {run_id} is {state}")
    else:
        again = s.command("run", "watch", run_id)
        click.echo(f"run {run_id} is still {state}; follow it with: {again}")
    ctx.exit(code.get(state, EXIT_TIMED_OUT))


@run.command("list")
@click.option(
    "--status",
    metavar="S[,S...]",
    help="Only runs in this status, or in any of a comma-separated list "
    "(pending, running, paused, completed, failed, cancelled).",
)
@click.option("--graph", "graph_id", metavar="ID", help="Only runs of this graph.")
@click.option(
    "--trigger",
    type=click.Choice(["api", "schedule", "webhook", "subworkflow"]),
    help="Only runs started this way.",
)
@click.option(
    "--created-after",
    metavar="TIME",
    help="Only runs created after TIME: RFC 3339, or a date (UTC midnight).",
)
@click.option("--created-before", metavar="TIME", help="Only runs created before TIME.")
@LIMIT
@ALL
@client_options
def list_runs(
    status: str | None,
    graph_id: str | None,
    trigger: str | None,
    created_after: str | None,
    created_before: str | None,
    limit: int,
    every: bool,
) -> None:
    """List the project's runs, newest first (the newest 50 unless --limit or --all)."""
    s = session()
    filters = {
        "status": status,
        "workflow_id": graph_id,
        "trigger": trigger,
        "created_after": api_time(created_after, "--created-after"),
        "created_before": api_time(created_before, "--created-before"),
    }
    listing = s.api.list_runs(filters, None if every else limit)
    if s.as_json:
        print_json(listing.items)
        return
    console().print(runs_table(listing.items))
    if listing.more:
        say_more(len(listing.items), "runs")


@run.command()
@RUN_ID
@client_options
def status(run_id: str) -> None:
    """Show a run's status and its nodes."""
    s = session()
    current = s.api.run_status(run_id)
    if s.as_json:
        print_json(current)
        return
    found = s.api.get_run(run_id)
    console().print(status_view(current, found, now=datetime.now(UTC)))
    children = s.api.list_runs({"parent_run_id": run_id}, limit=50).items
    if children:
        click.echo("sub-workflow runs:")
        console().print(runs_table(children))
    if found.get("pause_reason") == "input_required":
        _say_input_required(s, found, sys.stdout)


@run.command()
@RUN_ID
@TIMEOUT
@client_options
def watch(run_id: str, timeout_s: float | None) -> None:
    """Follow a run until it ends: exit 0 completed, 1 failed, 2 cancelled, 3 waiting for input.

    Ctrl-C stops watching and leaves the run alone.
    """
    follow(session(), run_id, timeout_s)


@run.command()
@RUN_ID
@click.option("--since", type=click.IntRange(min=0), default=0, help="Only events after SEQ.")
@client_options
def events(run_id: str, since: int) -> None:
    """Print a run's events in order, one line each (seq, time, subject, status)."""
    s = session()
    found = s.api.events_after(run_id, since)
    if s.as_json:
        print_json(found)
        return
    for event in found:
        click.echo(event_line(event))


def _control(run_id: str, action: str, body: JSON | None = None, watch: bool = False) -> Session:
    s = session()
    changed = s.api.control(run_id, action, body)
    if s.as_json:
        if not watch:  # with --watch, stdout is JSON lines of events only
            print_json(changed)
    else:
        click.echo(f"run {changed.get('id', run_id)} is {changed.get('status')}")
    return s


@run.command()
@RUN_ID
@client_options
def cancel(run_id: str) -> None:
    """Cancel a pending, running or paused run."""
    _control(run_id, "cancel")


@run.command()
@RUN_ID
@client_options
def pause(run_id: str) -> None:
    """Pause a run: the node in flight finishes, no new one starts."""
    _control(run_id, "pause")


@run.command()
@RUN_ID
@click.option("--value", metavar="JSON|@FILE", help="The answer a run waiting for input gets.")
@WATCH
@TIMEOUT
@client_options
def resume(run_id: str, value: str | None, watch: bool, timeout_s: float | None) -> None:
    """Resume a paused run (with --value, answer the node that asked for input)."""
    body = None if value is None else {"value": parse_json(value, "--value")}
    since = _last_seq(run_id) if watch else 0
    s = _control(run_id, "resume", body, watch)
    if watch:
        follow(s, run_id, timeout_s, since)


@run.command()
@RUN_ID
@click.option("--from-start", is_flag=True, help="Start over instead of from the failure.")
@INPUT
@WATCH
@TIMEOUT
@client_options
def execute(
    run_id: str, from_start: bool, run_input: str | None, watch: bool, timeout_s: float | None
) -> None:
    """Run a failed or cancelled run again (a failed one from where it failed)."""
    body: JSON = {"from_start": True} if from_start else {}
    if run_input is not None:
        body["input"] = parse_json(run_input, "--input")
    since = _last_seq(run_id) if watch else 0
    s = _control(run_id, "execute", body, watch)
    if watch:
        follow(s, run_id, timeout_s, since)


def _last_seq(run_id: str) -> int:
    """The run's latest event, so that a watch after resume or execute shows only what is new."""
    history = session().api.events_after(run_id, 0)
    return int(history[-1]["seq"]) if history else 0


def follow(s: Session, run_id: str, timeout_s: float | None, since: int = 0) -> None:
    """Watch the run, say how it ended, and exit with the code for that."""
    ctx = click.get_current_context()
    out = console()
    view: View
    if s.as_json:
        view = JsonLinesView()
    elif sys.stdout.isatty():
        view = LiveView(out)
    else:
        view = LineView(out)
    try:
        with view:
            ending = watch_run(s.api, run_id, view, since=since, timeout_s=timeout_s)
    except KeyboardInterrupt:
        again = s.command("run", "watch", run_id)
        click.echo(f"stopped watching; run {run_id} goes on untouched ({again})", err=True)
        ctx.exit(EXIT_INTERRUPTED)
    _say_ending(s, run_id, ending, timeout_s)
    ctx.exit(ending.exit_code)


def _say_ending(s: Session, run_id: str, ending: Ending, timeout_s: float | None) -> None:
    # With --json, stdout carries only events; the summary goes to stderr.
    stream = sys.stderr if s.as_json else sys.stdout
    run = ending.run
    if ending.reason == "timed out":
        again = s.command("run", "watch", run_id)
        click.echo(f"stopped watching after {timeout_s:g} s; the run goes on ({again})", err=True)
    elif ending.reason == "input_required":
        _say_input_required(s, run, stream)
    elif ending.reason == "completed":
        took = duration(run.get("started_at"), run.get("finished_at"))
        click.echo(f"run {run_id} completed in {took}", file=stream)
    elif ending.reason == "failed":
        click.echo(f"run {run_id} failed: {run_message(run)}", file=stream)
        retry = s.command("run", "execute", run_id)
        click.echo(f"retry it from the failed node with: {retry}", file=stream)
    else:
        click.echo(f"run {run_id} {ending.reason}", file=stream)


def _say_input_required(s: Session, run: JSON, stream: Any) -> None:
    question, choices = _prompt(run.get("prompt"))
    click.echo(f"run {run.get('id')} is waiting for input: {question}", file=stream)
    if choices:
        click.echo(f"choices: {', '.join(json.dumps(c) for c in choices)}", file=stream)
    example = json.dumps(choices[0] if choices else True)
    answer = s.command("run", "resume", str(run.get("id")), "--value", example)
    click.echo(f"answer with: {answer} [--watch]", file=stream)


def _prompt(prompt: Any) -> tuple[str, list[Any]]:
    if isinstance(prompt, dict) and isinstance(prompt.get("prompt"), str):
        choices = prompt.get("choices")
        return prompt["prompt"], list(choices) if isinstance(choices, list) else []
    if isinstance(prompt, str):
        return prompt, []
    return json.dumps(prompt), []
