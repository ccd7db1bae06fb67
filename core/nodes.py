"""What node types and plugins receive: the node-type contract and its contexts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, runtime_checkable

import structlog
from langgraph.types import interrupt as _interrupt

from core import waits

JSON = dict[str, Any]


@runtime_checkable
class NodeType(Protocol):
    """Any object with these attributes is a node type (plugins need not import this)."""

    name: str
    title: str
    description: str
    config_schema: JSON

    async def execute(self, ctx: NodeContext, config: JSON, state: JSON) -> JSON: ...


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


@dataclass(slots=True)
class NodeContext:
    """Handed to ``NodeType.execute``: who is running, a bound logger, and progress reporting.

    Usable from any thread: a node type doing CPU work in ``asyncio.to_thread`` may report
    progress, log and set data from there."""

    run_id: str
    project_id: str
    node_id: str
    attempt: int
    log: Any
    _on_progress: Callable[[float, str | None], None]
    data_updates: JSON = field(default_factory=dict)
    # The loop the node runs on (contexts are made there); progress is recorded on it.
    _loop: asyncio.AbstractEventLoop | None = field(default_factory=_running_loop)
    # A wait longer than this parks the run (None: never, e.g. in core.testing).
    park_after_s: float | None = None
    _now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    _children: ChildRunner | None = None

    def report_progress(self, fraction: float, message: str | None = None) -> None:
        """Record progress (0..1, clamped) and an optional message; a plain call.

        Off the node's event loop (a worker thread) the report is handed to the loop with
        ``call_soon_threadsafe``: reports keep the order they were made in, and those made
        before the thread's work returns are recorded before the node completes."""
        value = min(1.0, max(0.0, float(fraction)))
        loop = self._loop
        if loop is None or _running_loop() is loop:
            self._on_progress(value, message)
            return
        try:
            loop.call_soon_threadsafe(self._on_progress, value, message)
        except RuntimeError:
            if not loop.is_closed():
                raise
            # A thread that outlived its daemon: nothing is left to record the report.

    def set_data(self, key: str, value: Any) -> None:
        """Write `data[key]`, the run's shared map, when this node completes.

        Safe from any thread (one dict store under the GIL); read when the node returns."""
        self.data_updates[key] = value

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds`. A wait longer than `[execution] park_after_s` gives the run's slot
        back: the execution ends here, and the run continues when the time comes, on this
        daemon or another, after a restart too; then this node runs again from its start
        and this call returns (as with `interrupt`, code before it runs again: keep it free
        of side effects). The time is kept, not restarted, however often the node runs."""
        deadline = self._now() + timedelta(seconds=max(0.0, float(seconds)))
        if self.park_after_s is None or seconds <= self.park_after_s:
            await asyncio.sleep(max(0.0, seconds))
            return
        marker = _interrupt(waits.timer(deadline))
        for _ in range(waits.MAX_REWAITS):
            until = waits.until_of(marker) if waits.is_wait(marker) else None
            if until is None:
                return
            left = (until - self._now()).total_seconds()
            if left <= self.park_after_s:
                await asyncio.sleep(max(0.0, left))  # woken a little early: the rest here
                return
            marker = _interrupt(waits.timer(until))  # not due yet: wait again, same time
        raise RuntimeError(f"woken {waits.MAX_REWAITS} times before its time")

    async def run_child(self, workflow_id: str, run_input: JSON | None = None) -> JSON:
        """Run the graph `workflow_id` of this project as a child run and return its
        `output`. The run gives its slot back while the child runs; a failed or cancelled
        child raises (the node fails with the child's error and id), and the node's retry
        executes that same child again. One child per node: the node running again finds it.
        As with `interrupt`, code before this call runs again: keep it free of side effects."""
        if self._children is None:
            raise RuntimeError("this context cannot start child runs")
        return await self._children.run(workflow_id, dict(run_input or {}))

    def interrupt(self, prompt: Any) -> Any:
        """Pause the run until a human answers; returns the value given to ``resume``.

        Code before this call runs again when the run resumes: keep it free of side effects.
        """
        return _interrupt(prompt)


class ChildRunner(Protocol):
    """Starts and awaits a node's sub-workflow run (`core.children.NodeChildren`)."""

    async def run(self, workflow_id: str, run_input: JSON) -> JSON: ...


class PluginState(Protocol):
    """A plugin's own persistent key/value space (values are JSON)."""

    async def get(self, key: str, default: Any = None) -> Any: ...

    async def set(self, key: str, value: Any) -> None: ...


class EventLog(Protocol):
    """The stored events of every project, oldest first."""

    async def since(self, seq: int, limit: int = 500) -> list[JSON]: ...

    async def last_seq(self) -> int: ...


@dataclass(slots=True)
class PluginContext:
    """Handed to the lifecycle hooks: config, a logger, persistent state, the event log."""

    plugin_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    log: Any = field(default_factory=structlog.get_logger)
    state_factory: Callable[[str], PluginState] | None = None
    events: EventLog | None = None

    def options(self, name: str) -> Mapping[str, Any]:
        """The ``[plugins.<name>]`` table of the config, or an empty mapping."""
        return self.plugin_options.get(name, {})

    def state(self, name: str) -> PluginState:
        """The persistent key/value space of the plugin `name` (e.g. a delivery cursor)."""
        if self.state_factory is None:
            raise RuntimeError("this context has no persistent state")
        return self.state_factory(name)
