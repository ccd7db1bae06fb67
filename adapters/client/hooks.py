"""`cortexd hook new | list | delete | sign`: inbound webhooks (DESIGN §10)."""

from __future__ import annotations

import shlex
import time
from typing import BinaryIO

import click

from adapters.client.output import console, hooks_table, print_json
from adapters.client.session import ClientGroup, client_options, session


@click.group(cls=ClientGroup)
def hook() -> None:
    """Inbound webhooks: a signed POST starts a run of a graph."""


@hook.command("new")
@click.argument("graph_id", metavar="GRAPH_ID")
@click.option("--id", "hook_id", metavar="ID", help="The hook's id (default: a new UUID).")
@click.option(
    "--tolerance",
    "tolerance_s",
    type=click.IntRange(min=1, max=86_400),
    metavar="SECONDS",
    help="Replay-safe: requests must carry a signed X-Cortexd-Timestamp this fresh.",
)
@client_options
def hook_new(graph_id: str, hook_id: str | None, tolerance_s: int | None) -> None:
    """Make a hook for GRAPH_ID: print its URL and its secret (shown only now)."""
    s = session()
    spec: dict[str, object] = {"workflow_id": graph_id}
    if hook_id is not None:
        spec["id"] = hook_id
    if tolerance_s is not None:
        spec["tolerance_s"] = tolerance_s
    made = s.api.create_webhook(spec)
    if s.as_json:
        print_json(made)
        return
    secret = str(made["secret"])
    click.echo(f"hook {made['id']} starts runs of graph {graph_id}")
    click.echo(f"url:    {made['url']}")
    click.echo(f"secret: {secret}   (shown only now: store it where the caller signs)")
    click.echo("\nsign and send a request with:")
    sign = f"cortexd hook sign --secret {shlex.quote(secret)} body.json"
    if tolerance_s is not None:
        sign += " --timestamp"
    click.echo(f"  {sign}")


@hook.command("list")
@client_options
def hook_list() -> None:
    """List the project's hooks (their secrets are never shown again)."""
    s = session()
    hooks = s.api.list_webhooks()
    if s.as_json:
        print_json(hooks)
        return
    console().print(hooks_table(hooks))


@hook.command("delete")
@click.argument("hook_id", metavar="ID")
@client_options
def hook_delete(hook_id: str) -> None:
    """Delete a hook: requests to it get 404 (its runs stay)."""
    session().api.delete_webhook(hook_id)
    click.echo(f"deleted hook {hook_id}")


@hook.command("sign")
@click.argument("body", metavar="FILE", type=click.File("rb"), default="-")
@click.option("--secret", required=True, envvar="CORTEXD_HOOK_SECRET", help="The hook's secret.")
@click.option(
    "--timestamp",
    "stamped",
    is_flag=True,
    help="Sign for a replay-safe hook: with X-Cortexd-Timestamp set to now.",
)
@click.option("--url", "hook_url", metavar="URL", help="Print a complete curl command for URL.")
def hook_sign(body: BinaryIO, secret: str, stamped: bool, hook_url: str | None) -> None:
    """Print the headers that sign FILE (default: standard input) for a hook; nothing is sent.

    The signature is sha256= and the hex HMAC-SHA256 of the exact bytes sent, keyed by the
    secret (with --timestamp, of "<timestamp>.<bytes>"): send the file as it is.
    """
    # Here, not at the top: every other command stays as light as `token new` (no `core`).
    from core.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature, signed_content

    raw = body.read()
    timestamp = str(int(time.time())) if stamped else None
    headers = {SIGNATURE_HEADER: signature(secret.encode(), signed_content(raw, timestamp))}
    if timestamp is not None:
        headers[TIMESTAMP_HEADER] = timestamp
    if hook_url is None:
        for name, value in headers.items():
            click.echo(f"{name}: {value}")
        return
    name = str(getattr(body, "name", "-"))
    source = "@-" if name in ("-", "<stdin>") else "@" + name
    parts = ["curl", "-sS", "-X", "POST", hook_url, "-H", "Content-Type: application/json"]
    for name, value in headers.items():
        parts += ["-H", f"{name}: {value}"]
    parts += ["--data-binary", source]
    click.echo(shlex.join(parts))
    if source == "@-":
        click.echo("(curl reads the same bytes from its standard input)", err=True)
