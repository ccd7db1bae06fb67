"""`cortexd schedule new | list | show | enable | disable | delete` (DESIGN §10)."""

from __future__ import annotations

import click

from adapters.client.output import console, print_json, schedules_table
from adapters.client.session import ClientGroup, client_options, parse_json, session


@click.group(cls=ClientGroup)
def schedule() -> None:
    """Schedules: runs of a graph at the times of a cron expression."""


@schedule.command("new")
@click.argument("graph_id", metavar="GRAPH_ID")
@click.argument("cron", metavar="CRON")
@click.option("--id", "schedule_id", metavar="ID", help="The schedule's id (default: a UUID).")
@click.option("--timezone", default="UTC", show_default=True, help="An IANA time zone.")
@click.option("--input", "run_input", metavar="JSON|@FILE", help="Every run's input.")
@click.option(
    "--catchup",
    type=click.Choice(["skip", "latest", "all"]),
    default="latest",
    show_default=True,
    help="After downtime: none of the missed times, the latest, or each (bounded).",
)
@click.option("--disabled", is_flag=True, help="Make it disabled (it fires nothing).")
@client_options
def schedule_new(
    graph_id: str,
    cron: str,
    schedule_id: str | None,
    timezone: str,
    run_input: str | None,
    catchup: str,
    disabled: bool,
) -> None:
    """Make a schedule: CRON is five fields, e.g. '30 7 * * 1-5' (quote it)."""
    s = session()
    spec: dict[str, object] = {
        "workflow_id": graph_id,
        "cron": cron,
        "timezone": timezone,
        "catchup": catchup,
        "enabled": not disabled,
    }
    if schedule_id is not None:
        spec["id"] = schedule_id
    if run_input is not None:
        spec["input"] = parse_json(run_input, "--input")
    made = s.api.call("POST", s.api.workflows_path("/schedules"), spec)
    if s.as_json:
        print_json(made)
        return
    when = made.get("next_run_at") or "never (disabled)"
    click.echo(f"schedule {made['id']} runs graph {graph_id} at '{made['cron']}' ({timezone})")
    click.echo(f"next run: {when}")


@schedule.command("list")
@client_options
def schedule_list() -> None:
    """List the project's schedules with their next and last times."""
    s = session()
    found = s.api.call("GET", s.api.workflows_path("/schedules"))
    if s.as_json:
        print_json(found)
    else:
        console().print(schedules_table(found))


@schedule.command("show")
@click.argument("schedule_id", metavar="ID")
@client_options
def schedule_show(schedule_id: str) -> None:
    """Show one schedule (as JSON)."""
    s = session()
    print_json(s.api.call("GET", s.api.workflows_path("/schedules", schedule_id)))


def _set_enabled(schedule_id: str, enabled: bool) -> None:
    s = session()
    path = s.api.workflows_path("/schedules", schedule_id)
    current = s.api.call("GET", path)
    fields = ("workflow_id", "cron", "timezone", "input", "catchup")
    changed = s.api.call("PUT", path, {**{k: current[k] for k in fields}, "enabled": enabled})
    if s.as_json:
        print_json(changed)
        return
    when = changed.get("next_run_at") or "never (disabled)"
    click.echo(f"schedule {schedule_id} is {changed['state']}; next run: {when}")


@schedule.command("enable")
@click.argument("schedule_id", metavar="ID")
@client_options
def schedule_enable(schedule_id: str) -> None:
    """Enable a schedule (or start one stopped by its graph's deletion, once it exists)."""
    _set_enabled(schedule_id, True)


@schedule.command("disable")
@click.argument("schedule_id", metavar="ID")
@client_options
def schedule_disable(schedule_id: str) -> None:
    """Disable a schedule: it fires nothing until enabled."""
    _set_enabled(schedule_id, False)


@schedule.command("delete")
@click.argument("schedule_id", metavar="ID")
@client_options
def schedule_delete(schedule_id: str) -> None:
    """Delete a schedule (its runs stay)."""
    s = session()
    s.api.call("DELETE", s.api.workflows_path("/schedules", schedule_id))
    click.echo(f"deleted schedule {schedule_id}")
