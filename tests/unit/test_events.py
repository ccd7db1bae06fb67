"""The event bus: every subscriber gets every event, whatever another one does."""

from __future__ import annotations

from structlog.testing import capture_logs

from core.events import EventBus, Published


def published(seq: int) -> Published:
    return Published({"seq": seq, "type": "t", "project_id": "p"}, f'{{"seq": {seq}}}')


class Recording:
    def __init__(self) -> None:
        self.seqs: list[int] = []

    def offer(self, item: Published) -> None:
        self.seqs.append(item.seq)


class Broken:
    """A subscriber with a bug: raises for every event, or for the events it is told."""

    def __init__(self, on: set[int] | None = None) -> None:
        self.on = on

    def offer(self, item: Published) -> None:
        if self.on is None or item.seq in self.on:
            raise RuntimeError(f"cannot take {item.seq}")

    def __repr__(self) -> str:
        return "Broken()"


def test_a_subscriber_that_raises_does_not_keep_events_from_the_others() -> None:
    bus = EventBus()
    before, after = Recording(), Recording()
    for subscriber in (before, Broken(), Broken(on={2}), after):
        bus.subscribe(subscriber)

    with capture_logs() as logs:
        bus.publish([published(1), published(2)])
        bus.publish([published(3)])

    assert before.seqs == after.seqs == [1, 2, 3]
    assert bus.last_seq == 3
    failures = [e for e in logs if e["event"] == "event_subscriber_failed"]
    assert failures, logs
    assert all(e["subscriber"] == "Broken()" and e["log_level"] == "error" for e in failures)
    assert {e["seq"] for e in failures} >= {1, 2}


def test_a_subscriber_failing_on_every_event_is_logged_ever_more_rarely() -> None:
    bus = EventBus()
    broken, recording = Broken(), Recording()
    bus.subscribe(broken)
    bus.subscribe(recording)

    with capture_logs() as logs:
        bus.publish([published(seq) for seq in range(1, 1001)])

    assert recording.seqs == list(range(1, 1001))
    counts = [e["failures"] for e in logs if e["event"] == "event_subscriber_failed"]
    assert counts == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]  # each one counted, 10 lines
