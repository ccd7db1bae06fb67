"""What client commands print: rich tables for people, JSON with `--json` for scripts."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

JSON = dict[str, Any]

STATUS_STYLE = {
    "pending": "yellow",
    "running": "cyan",
    "paused": "magenta",
    "completed": "green",
    "failed": "bold red",
    "cancelled": "yellow",
    "skipped": "dim",
    "idle": "dim",
}


def console() -> Console:
    """A console on stdout; off a terminal, wide enough that tables never wrap an id."""
    terminal = sys.stdout.isatty()
    return Console(highlight=False, width=None if terminal else 200)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def print_json_line(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def status_text(status: str | None) -> Text:
    return Text(status or "-", style=STATUS_STYLE.get(status or "", ""))


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def clock_time(value: Any) -> str:
    """A server timestamp as local wall-clock time with milliseconds."""
    moment = parse_time(value)
    return moment.astimezone().strftime("%H:%M:%S.%f")[:-3] if moment else "-"


def short_time(value: Any) -> str:
    moment = parse_time(value)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def duration(start: Any, end: Any, now: datetime | None = None) -> str:
    """`1.25s`, `3m05s`, `2h01m`; a started, unfinished span runs to `now`."""
    begun = parse_time(start)
    if begun is None:
        return "-"
    finished = parse_time(end) or now
    if finished is None:
        return "-"
    seconds = max(0.0, (finished - begun).total_seconds())
    if seconds < 60:
        return f"{seconds:.2f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def _table(*columns: str) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def graphs_table(graphs: list[JSON]) -> RenderableType:
    if not graphs:
        return Text("no graphs")
    table = _table("GRAPH", "NAME", "VERSION", "NODES", "UPDATED")
    for g in graphs:
        table.add_row(
            g.get("id"),
            g.get("name"),
            str(g.get("version", "-")),
            str(len(g.get("nodes") or [])),
            short_time(g.get("updated_at")),
        )
    return table


def graph_view(graph: JSON) -> RenderableType:
    title = Text.assemble(
        (str(graph.get("id")), "bold"),
        f"  {graph.get('name')}  version {graph.get('version', '-')}",
        f"  updated {short_time(graph.get('updated_at'))}",
    )
    parts: list[RenderableType] = [title]
    if graph.get("description"):
        parts.append(Text(str(graph["description"])))
    nodes = _table("NODE", "TYPE", "LABEL", "CONFIG")
    for n in graph.get("nodes") or []:
        config = json.dumps(n.get("config") or {}, ensure_ascii=False)
        nodes.add_row(n.get("id"), n.get("type"), n.get("label") or "", config)
    edges = _table("FROM", "TO", "CONDITION")
    for e in graph.get("edges") or []:
        edges.add_row(e.get("source"), e.get("target"), e.get("condition") or "")
    parts += [Text(""), nodes, Text(""), edges]
    return Group(*parts)


def problems_text(problems: list[JSON]) -> Text:
    text = Text()
    for p in problems:
        text.append(f"  {p.get('path') or '/'}", style="bold")
        text.append(f": {p.get('message')}\n")
    return text


def runs_table(runs: list[JSON]) -> RenderableType:
    if not runs:
        return Text("no runs")
    table = _table("RUN", "GRAPH", "STATUS", "TRIGGER", "CREATED", "DURATION", "MESSAGE")
    now = datetime.now(UTC)
    for r in runs:
        table.add_row(
            r.get("id"),
            f"{r.get('workflow_id')} v{r.get('graph_version', '?')}",
            status_text(r.get("status")),
            trigger_text(r.get("trigger")),
            short_time(r.get("created_at")),
            duration(r.get("started_at"), r.get("finished_at"), now),
            run_message(r),
        )
    return table


def waiting_text(waiting: JSON) -> str:
    """`a timer until 12:00:00`, `run 1f0c…`, `input`: what a run waits for (DESIGN §11)."""
    kind = waiting.get("type")
    if kind == "timer":
        return f"a timer until {short_time(waiting.get('until'))}"
    if kind == "subworkflow":
        return f"its sub-workflow run {waiting.get('run_id')}"
    return "input"


def trigger_text(trigger: Any) -> str:
    """`api`, or the trigger's type and id (`schedule nightly`, `webhook github`)."""
    if not isinstance(trigger, dict):
        return "api"
    kind = str(trigger.get("type", "api"))
    return f"{kind} {trigger['id']}" if trigger.get("id") else kind


def run_message(run: JSON) -> str:
    error = run.get("error")
    if isinstance(error, dict) and error.get("message"):
        where = f" in {error['node_id']}" if error.get("node_id") else ""
        return f"{error.get('type', 'error')}{where}: {error['message']}"
    return str(run.get("last_message") or "")


def nodes_table(node_states: list[JSON], now: datetime | None = None) -> Table:
    table = _table("NODE", "STATUS", "PROGRESS", "", "ATTEMPTS", "DURATION", "MESSAGE")
    for s in node_states:
        progress = float(s.get("progress") or 0.0)
        if s.get("status") == "completed":
            progress = 1.0
        error = s.get("error")
        message = error.get("message") if isinstance(error, dict) else s.get("message")
        table.add_row(
            s.get("node_id"),
            status_text(s.get("status")),
            ProgressBar(
                total=1.0,
                completed=progress,
                width=20,
                complete_style="cyan",
                finished_style="green",
            ),
            f"{progress:4.0%}",
            str(s.get("attempts", 0)),
            duration(s.get("started_at"), s.get("completed_at"), now),
            str(message or ""),
        )
    return table


def status_view(
    status: JSON, run: JSON | None = None, now: datetime | None = None
) -> RenderableType:
    header = Text.assemble(
        ("run ", ""),
        (str(status.get("run_id")), "bold"),
        "  ",
        status_text(status.get("status")),
        f"  {float(status.get('progress') or 0):.0%}",
    )
    if status.get("current_node"):
        header.append(f"  at {status['current_node']}")
    if run is not None:
        header.append(f"  started by {trigger_text(run.get('trigger'))}")
        if run.get("parent_run_id"):
            header.append(f" (node {run.get('parent_node_id')} of run {run['parent_run_id']})")
    waiting = status.get("waiting_for")
    if isinstance(waiting, dict):
        header.append(f"\nwaiting for {waiting_text(waiting)}")
    parts: list[RenderableType] = [header, nodes_table(status.get("node_states") or [], now)]
    if run is not None and run.get("error"):
        parts.append(Text(run_message(run), style="red"))
    return Group(*parts)


def schedules_table(schedules: list[JSON]) -> RenderableType:
    if not schedules:
        return Text("no schedules")
    table = _table("SCHEDULE", "GRAPH", "CRON", "TIMEZONE", "STATE", "NEXT", "LAST")
    for s in schedules:
        table.add_row(
            s.get("id"),
            s.get("workflow_id"),
            s.get("cron"),
            s.get("timezone"),
            s.get("state"),
            short_time(s.get("next_run_at")),
            short_time(s.get("last_run_at")),
        )
    return table


def hooks_table(hooks: list[JSON]) -> RenderableType:
    if not hooks:
        return Text("no hooks")
    table = _table("HOOK", "GRAPH", "REPLAY-SAFE", "URL")
    for h in hooks:
        tolerance = h.get("tolerance_s")
        safe = f"{tolerance} s" if tolerance else "no"
        table.add_row(h.get("id"), h.get("workflow_id"), safe, h.get("url"))
    return table


def node_types_table(types: list[JSON]) -> RenderableType:
    table = _table("TYPE", "TITLE", "DESCRIPTION")
    for t in types:
        table.add_row(t.get("name"), t.get("title"), t.get("description") or "")
    return table


def plugins_table(plugins: list[JSON]) -> RenderableType:
    table = _table("PLUGIN", "VERSION", "SOURCE", "NODE TYPES", "SINK")
    for p in plugins:
        table.add_row(
            p.get("name"),
            p.get("version") or "-",
            p.get("source"),
            ", ".join(p.get("node_types") or []) or "-",
            "yes" if p.get("sinks") else "no",
        )
    return table


def event_line(event: JSON) -> str:
    """One plain line per event: seq, time, subject (`run` or the node id), status, detail."""
    head = f"{event.get('seq', '?'):>6}  {clock_time(event.get('timestamp'))}"
    node = event.get("nodeState")
    if isinstance(node, dict):
        detail = [f"attempt {node['attempts']}"] if node.get("attempts") else []
        if node.get("status") == "running" and node.get("progress"):
            detail.append(f"{float(node['progress']):.0%}")
        error = node.get("error")
        message = error.get("message") if isinstance(error, dict) else node.get("message")
        status = node.get("status")
        if message and message != status:
            detail.append(str(message))
        subject = f"node {node.get('node_id')}"
        return f"{head}  {subject:<20} {status:<10} {'  '.join(detail)}".rstrip()
    run = event.get("run")
    if isinstance(run, dict):
        message = run_message(run)
        message = "" if message == run.get("status") else message
        return f"{head}  {'run':<20} {run.get('status'):<10} {message}".rstrip()
    return f"{head}  {event.get('type')}"
