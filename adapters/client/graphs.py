"""`cortexd graph apply | list | show | validate | delete`."""

from __future__ import annotations

from typing import Any

import click

from adapters.client.api import ApiError, BadInput
from adapters.client.output import (
    console,
    graph_view,
    graphs_table,
    print_json,
    problems_text,
)
from adapters.client.session import (
    ALL,
    LIMIT,
    ClientGroup,
    client_options,
    read_json_file,
    say_more,
    session,
)

GRAPH_FILE = click.argument(
    "file", metavar="FILE", type=click.Path(dir_okay=False, allow_dash=True)
)


@click.group(cls=ClientGroup)
def graph() -> None:
    """Store, inspect and validate workflow graphs."""


def _graph_spec(file: str) -> dict[str, Any]:
    spec = read_json_file(file)
    if not isinstance(spec, dict):
        raise BadInput(f"{file} must hold a JSON object (a graph), not {type(spec).__name__}")
    return spec


@graph.command()
@GRAPH_FILE
@client_options
def apply(file: str) -> None:
    """Create the graph in FILE, or replace it (a new version) if its id exists."""
    s = session()
    spec = _graph_spec(file)
    graph_id = spec.get("id")
    try:
        stored, verb = s.api.create_graph(spec), "created"
    except ApiError as exc:
        if exc.status != 409 or not isinstance(graph_id, str):
            raise
        stored, verb = s.api.replace_graph(graph_id, spec), "updated"
    if s.as_json:
        print_json(stored)
        return
    count = len(stored.get("nodes") or [])
    nodes = f"{count} node{'' if count == 1 else 's'}"
    click.echo(f"{verb} graph {stored.get('id')} (version {stored.get('version')}, {nodes})")


@graph.command("list")
@LIMIT
@ALL
@client_options
def list_graphs(limit: int, every: bool) -> None:
    """List the project's graphs by id (the first 50 unless --limit or --all)."""
    s = session()
    listing = s.api.list_graphs(None if every else limit)
    if s.as_json:
        print_json(listing.items)
        return
    console().print(graphs_table(listing.items))
    if listing.more:
        say_more(len(listing.items), "graphs")


@graph.command()
@click.argument("graph_id", metavar="ID")
@client_options
def show(graph_id: str) -> None:
    """Show a graph: its nodes and edges (`--json`: the graph as stored)."""
    s = session()
    stored = s.api.get_graph(graph_id)
    if s.as_json:
        print_json(stored)
    else:
        console().print(graph_view(stored))


@graph.command()
@GRAPH_FILE
@client_options
def validate(file: str) -> None:
    """Validate the graph in FILE on the daemon; exit 1 with every problem if it is invalid."""
    s = session()
    result = s.api.validate_graph(_graph_spec(file))
    valid = bool(result.get("valid"))
    if s.as_json:
        print_json(result)
    elif valid:
        click.echo(f"{file}: valid")
    else:
        problems = result.get("problems") or []
        count = f"{len(problems)} problem{'' if len(problems) == 1 else 's'}"
        click.echo(f"{file}: {result.get('detail', 'not valid')} ({count})")
        console().print(problems_text(problems), end="")
    if not valid:
        click.get_current_context().exit(1)


@graph.command()
@click.argument("graph_id", metavar="ID")
@client_options
def delete(graph_id: str) -> None:
    """Delete a graph (refused while it has pending, running or paused runs)."""
    s = session()
    s.api.delete_graph(graph_id)
    if s.as_json:
        print_json({"id": graph_id, "deleted": True})
    else:
        click.echo(f"deleted graph {graph_id}")
