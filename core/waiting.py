"""Run and wait (DESIGN §10, `Prefer: wait=N`): a request that waits for its run to settle is
woken by the run's own events on the bus, which carries every daemon's commits; nothing polls.

`RunWaiters` is one bus subscriber for every waiting request; `offer` only sets the events of
the runs being waited on (it never blocks the bus). A request registers before it reads the
run, so an event committed between the read and the wait still wakes it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator

from core.domain import Run, RunStatus
from core.events import Published

# Where a waiting request answers: the run ended, or waits for someone (a pause, an input).
SETTLED = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.PAUSED})
_SETTLED_VALUES = frozenset(status.value for status in SETTLED)


class RunWaiters:
    def __init__(self) -> None:
        self._waiting: dict[str, set[asyncio.Event]] = {}

    @property
    def count(self) -> int:
        return sum(len(events) for events in self._waiting.values())

    def offer(self, item: Published) -> None:
        run_id = item.event.get("run_id")
        if run_id is None or run_id not in self._waiting:
            return
        run = item.event.get("run")
        if isinstance(run, dict) and run.get("status") in _SETTLED_VALUES:
            for event in self._waiting[run_id]:
                event.set()

    @contextlib.contextmanager
    def _registered(self, run_id: str) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._waiting.setdefault(run_id, set()).add(event)
        try:
            yield event
        finally:
            events = self._waiting[run_id]
            events.discard(event)
            if not events:
                del self._waiting[run_id]

    async def wait(
        self, run_id: str, timeout_s: float, read: Callable[[], Awaitable[Run | None]]
    ) -> Run | None:
        """The run as `read` finds it once it is settled, or when `timeout_s` passed."""
        with self._registered(run_id) as woken:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s
            while True:
                woken.clear()  # before the read: what commits after it sets it again
                run = await read()
                left = deadline - loop.time()
                if run is None or run.status in SETTLED or left <= 0:
                    return run
                # A settled event of a run that moves on (a pause, then a resume) wakes this
                # for a read that finds it running again: it waits on, until the deadline.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), left)
