"""The in-process fan-out of committed events: sinks and WebSocket clients subscribe here.

The store publishes each committed batch in `seq` order, synchronously, from its writer; so
`publish` must never block: every subscriber takes events into a bounded queue of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

JSON = dict[str, Any]


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
        self.last_seq = 0

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)

    def publish(self, items: Sequence[Published]) -> None:
        for item in items:
            self.last_seq = item.seq
            for subscriber in tuple(self._subscribers):
                subscriber.offer(item)
