"""The in-process fan-out of committed events: sinks and WebSocket clients subscribe here.

The store publishes each committed batch in `seq` order, synchronously, from its writer; so
`publish` must never block: every subscriber takes events into a bounded queue of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

JSON = dict[str, Any]


class Subscriber(Protocol):
    def offer(self, event: JSON) -> None:
        """Take one event without blocking (queue it, or mark itself as overflowed)."""
        ...


class EventBus:
    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self.last_seq = 0

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)

    def publish(self, events: Sequence[JSON]) -> None:
        for event in events:
            self.last_seq = event["seq"]
            for subscriber in tuple(self._subscribers):
                subscriber.offer(event)
