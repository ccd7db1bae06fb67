"""`cortexd serve | check-config`, and the client commands `graph`, `run`, `node-types`,
`plugins` (in `adapters/client/`, talking HTTP to a running daemon).

Imports stay light at module level: LangGraph takes most of a second to import, and only
`serve` needs it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from adapters.client.catalogue import node_types, plugins
from adapters.client.graphs import graph
from adapters.client.runs import run

if TYPE_CHECKING:  # pydantic-settings costs ~90 ms at start-up: only the daemon commands need it
    from adapters.config import Settings

CONFIG_OPTION = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TOML config file (default: $CORTEXD_CONFIG, else built-in defaults).",
)


def _load(config_path: Path | None) -> Settings:
    from adapters.config import ConfigError, load_settings

    try:
        return load_settings(config_path)
    except ConfigError as exc:
        click.echo(f"cortexd: invalid configuration:\n{exc}", err=True)
        sys.exit(2)


@click.group()
@click.version_option(package_name="cortexd")
def main() -> None:
    """cortexd: a workflow daemon that stores graphs and runs them durably on LangGraph."""


@main.command()
@CONFIG_OPTION
def serve(config_path: Path | None) -> None:
    """Run the daemon (what systemd runs) until SIGTERM or SIGINT; SIGHUP reloads the config."""
    settings = _load(config_path)
    import asyncio

    from adapters.serve import StartupError
    from adapters.serve import serve as run_daemon
    from core.errors import PluginError

    try:
        asyncio.run(run_daemon(settings, config_path))
    except StartupError as exc:
        # The same status as an invalid file: a setting to change, not a failure to retry.
        click.echo(f"cortexd: {exc}", err=True)
        sys.exit(2)
    except PluginError as exc:
        click.echo(f"cortexd: {exc}", err=True)
        sys.exit(3)
    except OSError as exc:
        click.echo(f"cortexd: cannot start: {exc}", err=True)
        sys.exit(1)


@main.command("check-config")
@CONFIG_OPTION
def check_config(config_path: Path | None) -> None:
    """Validate the configuration and print the effective settings as JSON."""
    from adapters.config import settings_summary

    settings = _load(config_path)
    click.echo(json.dumps(settings_summary(settings), indent=2, default=str))


main.add_command(graph)
main.add_command(run)
main.add_command(node_types)
main.add_command(plugins)
