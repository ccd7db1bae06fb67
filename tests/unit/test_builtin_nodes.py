"""The built-in node types, run once each through `core.testing.run_node`."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import plugins.basic as basic
from core.testing import run_node


class EarlyTimers:
    """A clock whose sleeps of a millisecond or more end 0.2 ms early, as uvloop's timers
    (millisecond resolution) may; shorter ones end on time."""

    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds - 0.0002 if seconds >= 0.001 else seconds


async def test_delay_reports_progress_once_a_second_even_when_timers_fire_early(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = EarlyTimers()
    monkeypatch.setattr(basic, "time", SimpleNamespace(monotonic=clock.monotonic))
    monkeypatch.setattr(basic, "asyncio", SimpleNamespace(sleep=clock.sleep))

    result = await run_node(basic.Delay(), config={"seconds": 2})

    assert result.output == {"slept_s": 2.0}
    # One report per second, the last at (about) 100 %: not a second one for the remainder.
    assert [round(fraction, 2) for fraction, _ in result.progress] == [0.5, 1.0]
