"""`cortexd serve | check-config | backup`, and the client commands `graph`, `run`, `node-types`,
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
from adapters.client.hooks import hook
from adapters.client.runs import run
from adapters.client.schedules import schedule

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

    from adapters.postgres.db import StoreUnreachable
    from adapters.serve import StartupError
    from adapters.serve import serve as run_daemon
    from adapters.sql.batching import WriterDied
    from adapters.sql.migrations import SchemaTooNew
    from core.errors import PluginError

    try:
        loop_factory = None
        if settings.server.event_loop == "uvloop":
            import uvloop

            loop_factory = uvloop.new_event_loop
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(run_daemon(settings, config_path))
    except StartupError as exc:
        # The same status as an invalid file: a setting to change, not a failure to retry.
        click.echo(f"cortexd: {exc}", err=True)
        sys.exit(2)
    except PluginError as exc:
        click.echo(f"cortexd: {exc}", err=True)
        sys.exit(3)
    except SchemaTooNew as exc:
        # Not to be retried by systemd: this release cannot serve that database.
        click.echo(f"cortexd: cannot start: {exc}", err=True)
        sys.exit(2)
    except StoreUnreachable as exc:
        # Not a setting to change, maybe: a database not up yet. systemd tries again.
        click.echo(f"cortexd: cannot start: {exc}", err=True)
        sys.exit(1)
    except WriterDied as exc:
        # The store's writer stopped for good while serving: systemd starts a fresh process.
        click.echo(f"cortexd: stopped: {exc}", err=True)
        sys.exit(1)
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


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@CONFIG_OPTION
def backup(file: Path, config_path: Path | None) -> None:
    """Copy the configured SQLite store to FILE, consistently, while daemons serve it (one
    snapshot through SQLite's online backup; FILE must not exist). Prints what was copied as
    JSON. A PostgreSQL store is backed up with pg_dump instead."""
    settings = _load(config_path)
    if settings.storage.url:
        from adapters.postgres.db import describe

        click.echo(
            "cortexd: backup copies SQLite stores; this configuration's store is PostgreSQL "
            f"at {describe(settings.storage.url)}: back it up with pg_dump, e.g. "
            "pg_dump -Fc -d DBNAME -f cortexd.dump (see docs/operations.md, Backups)",
            err=True,
        )
        sys.exit(2)
    from adapters.backup import BackupError, backup_sqlite

    try:
        report = backup_sqlite(settings.storage.path, file)
    except (BackupError, OSError) as exc:
        click.echo(f"cortexd: backup failed: {exc}", err=True)
        sys.exit(1)
    click.echo(json.dumps(report.to_json()))


# core.domain.ID_PATTERN, spelt again: importing it would load pydantic (a test keeps them equal).
TOKEN_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"


@main.group()
def token() -> None:
    """Bearer tokens for the [auth] section of the config file."""


def _check_id(value: str, what: str, option: str) -> None:
    import re

    if not re.match(TOKEN_NAME_PATTERN, value):
        raise click.BadParameter(
            f"{value!r} is not {what} (letters, digits and _.:- only)", param_hint=option
        )


@token.command("new")
@click.option("--name", required=True, help="A unique name for the token (shown in logs).")
@click.option(
    "--project",
    "projects",
    required=True,
    multiple=True,
    help='A project the token is valid for (repeat for more), or "*" for every project.',
)
@click.option(
    "--role",
    required=True,
    type=click.Choice(["read", "write", "admin"]),
    help="read: GET and WebSocket; write: + graph and run changes; admin: + everything.",
)
def token_new(name: str, projects: tuple[str, ...], role: str) -> None:
    """Make a token: print it once, and the [[auth.tokens]] table (with only its SHA-256) to
    add to the config file. cortexd keeps no copy of the token: store it now."""
    import hashlib
    import secrets

    _check_id(name, "a valid token name", "--name")
    if "*" in projects and len(projects) > 1:
        raise click.BadParameter('"*" means every project; give it alone', param_hint="--project")
    for project in projects:
        if project != "*":
            _check_id(project, "a valid project id", "--project")
    secret = secrets.token_urlsafe(32)
    digest = hashlib.sha256(secret.encode()).hexdigest()
    listed = ", ".join(json.dumps(p) for p in projects)
    click.echo(f"The token (shown only now; cortexd keeps only its SHA-256):\n\n    {secret}\n")
    click.echo(
        "Add this to the config file, then reload the daemon "
        "(systemctl reload cortexd, or SIGHUP):\n"
    )
    click.echo(
        f"[[auth.tokens]]\nname = {json.dumps(name)}\nsha256 = {json.dumps(digest)}\n"
        f"projects = [{listed}]\nrole = {json.dumps(role)}"
    )


main.add_command(graph)
main.add_command(run)
main.add_command(hook)
main.add_command(schedule)
main.add_command(node_types)
main.add_command(plugins)
