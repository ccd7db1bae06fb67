"""What every client command shares: `--url/--token/--project/--json`, errors, JSON arguments.

The common options are on each command (`cortexd run list --project acme`), each with its
environment variable. A `ClientError` ends the command with one line on stderr (and the
problem list, for a 422) and the error's exit code; never a traceback.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from adapters.client.api import DEFAULT_PROJECT, DEFAULT_URL, Api, BadInput, ClientError

F = TypeVar("F", bound=Callable[..., Any])
_META = "cortexd.client"


@dataclass(frozen=True)
class Session:
    api: Api
    as_json: bool

    def command(self, *words: str) -> str:
        """A `cortexd ...` command line that reaches the same daemon and project."""
        parts = ["cortexd", *words]
        if self.api.project != DEFAULT_PROJECT:
            parts += ["--project", self.api.project]
        if self.api.url != DEFAULT_URL:
            parts += ["--url", self.api.url]
        return " ".join(shlex.quote(part) for part in parts)


def session() -> Session:
    options: dict[str, Any] = click.get_current_context().meta[_META]
    api = Api(url=options["url"], project=options["project"], token=options["token"] or None)
    return Session(api=api, as_json=bool(options["as_json"]))


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    ctx.meta.setdefault(_META, {})[param.name or ""] = value
    return value


_OPTIONS = (
    click.option(
        "--url",
        envvar="CORTEXD_URL",
        default=DEFAULT_URL,
        show_default=True,
        expose_value=False,
        callback=_remember,
        help="The daemon's base URL.",
        show_envvar=True,
    ),
    click.option(
        "--token",
        envvar="CORTEXD_TOKEN",
        default=None,
        expose_value=False,
        callback=_remember,
        help="Bearer token sent as `Authorization: Bearer`.",
        show_envvar=True,
    ),
    click.option(
        "--project",
        envvar="CORTEXD_PROJECT",
        default=DEFAULT_PROJECT,
        show_default=True,
        expose_value=False,
        callback=_remember,
        help="Project id.",
        show_envvar=True,
    ),
    click.option(
        "--json",
        "as_json",
        is_flag=True,
        expose_value=False,
        callback=_remember,
        help="Print JSON for scripts instead of tables.",
    ),
)


def client_options(function: F) -> F:
    for option in reversed(_OPTIONS):
        function = option(function)
    return function


class ClientCommand(click.Command):
    """A command that turns a `ClientError` into one line on stderr and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ClientError as error:
            click.echo(f"cortexd: {error}", err=True)
            for line in error.details:
                click.echo(f"  {line}", err=True)
            ctx.exit(error.exit_code)
        except BrokenPipeError:
            # `cortexd run events ID | head`: the reader left; say nothing more.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(1)


class ClientGroup(click.Group):
    command_class = ClientCommand


def parse_json(text: str, what: str) -> Any:
    """JSON from the command line; `@FILE` reads it from a file."""
    if text.startswith("@"):
        return read_json_file(text[1:], what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        hint = " (a string needs JSON quotes, e.g. '\"yes\"')" if what == "--value" else ""
        raise BadInput(f"{what} is not valid JSON: {_where(exc)}{hint}") from None


def read_json_file(path: str, what: str = "") -> Any:
    """The JSON in a file (`-` is standard input)."""
    name = what or path
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise BadInput(f"{name}: {path} is not UTF-8 text") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"{path} is not valid JSON: {_where(exc)}") from None


def _where(error: json.JSONDecodeError) -> str:
    return f"{error.msg} (line {error.lineno}, column {error.colno})"


# How many items a list command shows unless told otherwise (the dashboard's page, too).
DEFAULT_LIST = 50
LIMIT = click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=DEFAULT_LIST,
    show_default=True,
    metavar="N",
    help="Show at most N (read a page of up to 1000 at a time).",
)
ALL = click.option("--all", "every", is_flag=True, help="Show every one, however many.")


def api_time(value: str | None, what: str) -> str | None:
    """A time for the API (RFC 3339 with an offset): a date is its midnight UTC, a time
    without an offset is UTC."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise BadInput(
            f"{what} must be a date (2026-05-01) or an RFC 3339 time "
            f"(2026-05-01T12:00:00Z), not {value!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()


def say_more(shown: int, what: str) -> None:
    """On stderr (stdout holds only the table): the list was cut short."""
    click.echo(f"showing the first {shown} {what}; more with --limit N or --all", err=True)
