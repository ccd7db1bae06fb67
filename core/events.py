"""The in-process fan-out of committed events: sinks and WebSocket clients subscribe here.

The store publishes each committed batch in `seq` order, synchronously, from its writer; so
`publish` must never block: every subscriber takes events into a bounded queue of its own. A
subscriber that raises is logged and skipped: it keeps no event from the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

JSON = dict[str, Any]

log = structlog.get_logger("cortexd.events")


@dataclass(frozen=True, slots=True)
class Published:
    """A committed event, with its JSON text made once for every client that sends it."""

    event: JSON
    text: str

    @property
    def seq(self) -> int:
        seq: int = self.event["seq"]
        return seq


class Subscriber(Protocol):
    def offer(self, item: Published) -> None:
        """Take one event without blocking (queue it, or mark itself as overflowed)."""
        ...


class EventBus:
    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._failures: dict[int, int] = {}  # by id(): a subscriber need not be hashable
        self.last_seq = 0

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)
        self._failures.pop(id(subscriber), None)

    def publish(self, items: Sequence[Published]) -> None:
        # One copy per batch: subscribing or unsubscribing during an offer changes nothing here.
        subscribers = tuple(self._subscribers)
        for item in items:
            self.last_seq = item.seq
            for subscriber in subscribers:
                try:  # free until something raises
                    subscriber.offer(item)
                except Exception:
                    self._failed(subscriber, item)

    def _failed(self, subscriber: Subscriber, item: Published) -> None:
        """Count every failure; log the 1st, 2nd, 4th, 8th...: a subscriber failing on every
        event must not turn the log into a second event stream."""
        count = self._failures.get(id(subscriber), 0) + 1
        self._failures[id(subscriber)] = count
        if count & (count - 1) == 0:
            log.exception(
                "event_subscriber_failed",
                subscriber=repr(subscriber),
                seq=item.seq,
                type=item.event.get("type"),
                failures=count,
            )
