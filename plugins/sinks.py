"""The built-in log sink: one structured line per event (`cortexd.events`), once per database
(on the daemon holding the duties, like every sink)."""

from __future__ import annotations

import logging
from typing import Any

import pluggy
import structlog

hookimpl = pluggy.HookimplMarker("cortexd")
JSON = dict[str, Any]

events_log = structlog.get_logger("cortexd.events")
# Asked first, so an event below the level costs a lookup, not a structlog call (this runs for
# every event of every run; at the default level the node-state lines are not written).
_events_level = logging.getLogger("cortexd.events")


# -- the log sink ----------------------------------------------------------------------------


def log_event(event: JSON) -> None:
    """One structured line per event: run events at info, the rest at debug."""
    is_run_event = str(event.get("type", "")).startswith("workflow.run.")
    if not _events_level.isEnabledFor(logging.INFO if is_run_event else logging.DEBUG):
        return
    fields: JSON = {k: event[k] for k in ("seq", "type", "project_id", "run_id") if k in event}
    if "run" in event:
        fields["status"] = event["run"].get("status")
    if "nodeState" in event:
        state = event["nodeState"]
        fields.update(node_id=state.get("node_id"), status=state.get("status"))
    if "graph" in event:
        fields["graph_id"] = event["graph"].get("id")
    if is_run_event:
        events_log.info("workflow_event", **fields)
    else:
        events_log.debug("workflow_event", **fields)


@hookimpl
def cortexd_event(event: JSON) -> None:
    log_event(event)
