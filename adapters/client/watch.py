"""Following a run until it ends: poll its status and events, show them, say how it ended.

There is no WebSocket client yet: the watcher polls `GET .../status` and `GET .../events?since=`
every `interval_s`. On a terminal it keeps a rich `Live` table of the nodes; elsewhere it prints
one plain line (or, with `--json`, one JSON object) per event.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from rich.console import Console, Group
from rich.live import Live

from adapters.client.api import Api
from adapters.client.output import event_line, print_json_line, status_view

JSON = dict[str, Any]

POLL_INTERVAL_S = 0.5
EXIT_FOR_STATUS = {"completed": 0, "failed": 1, "cancelled": 2}
EXIT_INPUT_REQUIRED = 3
EXIT_TIMED_OUT = 124
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Ending:
    """Why watching stopped: the run's final status, `input_required`, or `timed out`."""

    reason: str
    exit_code: int
    run: JSON = field(default_factory=dict)


class View:
    """Where a watch shows what it sees; a context manager so a live display is always closed."""

    def update(self, status: JSON, events: list[JSON]) -> None:
        raise NotImplementedError

    def __enter__(self) -> View:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        return None


class LineView(View):
    """One plain line per event (stdout is not a terminal)."""

    def __init__(self, console: Console) -> None:
        self._console = console

    def update(self, status: JSON, events: list[JSON]) -> None:
        for event in events:
            self._console.print(event_line(event), markup=False, highlight=False, soft_wrap=True)


class JsonLinesView(View):
    """One JSON object per event and line (`--json`)."""

    def update(self, status: JSON, events: list[JSON]) -> None:
        for event in events:
            print_json_line(event)


class LiveView(View):
    """A table of the run's nodes, redrawn in place after every poll."""

    def __init__(self, console: Console) -> None:
        self._live = Live(console=console, auto_refresh=False, transient=False)

    def update(self, status: JSON, events: list[JSON]) -> None:
        view = status_view(status, now=datetime.now(UTC))
        lines = [event_line(e) for e in events[-1:]]
        self._live.update(Group(view, *lines), refresh=True)

    def __enter__(self) -> View:
        self._live.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._live.stop()


def watch_run(
    api: Api,
    run_id: str,
    view: View,
    *,
    since: int = 0,
    interval_s: float = POLL_INTERVAL_S,
    timeout_s: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Ending:
    """Poll until the run completes, fails, is cancelled or waits for input, or time is up.

    Shows the run's events after `since` (0: its whole history). The status is read before
    the events, so the events read after a final status include that final transition's.
    """
    deadline = None if timeout_s is None else clock() + timeout_s
    while True:
        status = api.run_status(run_id)
        events = api.events_after(run_id, since)
        if events:
            since = int(events[-1]["seq"])
        view.update(status, events)
        state = str(status.get("status"))
        if state in EXIT_FOR_STATUS:
            return Ending(state, EXIT_FOR_STATUS[state], api.get_run(run_id))
        if state == "paused":
            run = api.get_run(run_id)
            if run.get("pause_reason") == "input_required":
                return Ending("input_required", EXIT_INPUT_REQUIRED, run)
        if deadline is not None and clock() >= deadline:
            return Ending("timed out", EXIT_TIMED_OUT)
        sleep(interval_s if deadline is None else max(0.0, min(interval_s, deadline - clock())))
