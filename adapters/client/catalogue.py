"""`cortexd node-types` and `cortexd plugins`: what the daemon can run, and what it loaded."""

from __future__ import annotations

import click

from adapters.client.output import console, node_types_table, plugins_table, print_json
from adapters.client.session import ClientCommand, client_options, session


@click.command("node-types", cls=ClientCommand)
@client_options
def node_types() -> None:
    """List the node types graphs can use."""
    s = session()
    types = s.api.node_types()
    if s.as_json:
        print_json(types)
    else:
        console().print(node_types_table(types))


@click.command("plugins", cls=ClientCommand)
@client_options
def plugins() -> None:
    """List the plugins the daemon loaded, with their node types and sinks."""
    s = session()
    loaded = s.api.plugins()
    if s.as_json:
        print_json(loaded)
    else:
        console().print(plugins_table(loaded))
