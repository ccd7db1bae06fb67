"""Following a run until it ends: show its events as they happen, say how it ended.

The watcher reads one `GET .../status`, then follows the run's events over the daemon's WebSocket
(`adapters.client.live`, which imports aiohttp: only once a watch starts). When no socket can be
opened, it polls `GET .../status` and `GET .../events?since=` every `interval_s` instead. On a
terminal it keeps a rich `Live` table of the nodes; elsewhere it prints one plain line (or, with
`--json`, one JSON object) per event.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
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
EXIT_PAUSED = 4  # `run start --wait`: paused by someone
EXIT_TIMED_OUT = 124
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Ending:
    """Why watching stopped: the run's final status, `input_required`, or `timed out`."""

    reason: str
    exit_code: int
    run: JSON = field(default_factory=dict)


class View(ABC):
    """Where a watch shows what it sees; a context manager so a live display is always closed."""

    @abstractmethod
    def update(self, status: JSON, events: list[JSON]) -> None:
        """Show the run's latest status and the events that led to it."""

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
        self._last: list[str] = []  # the latest event's line, kept through redraws without one

    def update(self, status: JSON, events: list[JSON]) -> None:
        view = status_view(status, now=datetime.now(UTC))
        if events:
            self._last = [event_line(events[-1])]
        self._live.update(Group(view, *self._last), refresh=True)

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
    websocket: bool = True,
) -> Ending:
    """Follow until the run completes, fails, is cancelled or waits for input, or time is up.

    Shows the run's events after `since` (0: its whole history): over the WebSocket when one
    can be opened (and `websocket`), else by polling.
    """
    deadline = None if timeout_s is None else clock() + timeout_s
    if websocket:
        status = api.run_status(run_id)
        if not _over(status):  # an ended run: one poll shows the rest of its events
            try:
                from adapters.client import live  # imports aiohttp: only now
            except ImportError:
                pass
            else:
                followed = live.follow(
                    api, run_id, view, status, since=since, deadline=deadline, clock=clock
                )
                if isinstance(followed, Ending):
                    return followed
                since = followed.since
    return _poll(api, run_id, view, since, interval_s, deadline, sleep, clock)


def _over(status: JSON) -> bool:
    state = status.get("status")
    return state in EXIT_FOR_STATUS or (
        state == "paused" and status.get("pause_reason") == "input_required"
    )


def _poll(
    api: Api,
    run_id: str,
    view: View,
    since: int,
    interval_s: float,
    deadline: float | None,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
) -> Ending:
    """Poll the run's status, then its events after `since`, every `interval_s`.

    The status is read before the events, so the events read after a final status include that
    final transition's.
    """
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
