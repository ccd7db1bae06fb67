"""An owned background task: stopping it cancels it, and an error it died of is not lost."""

from __future__ import annotations

import asyncio

import pytest

from core.background import Background


async def test_stop_cancels_a_running_task_and_is_idempotent() -> None:
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    background = Background("forever")
    background.start(forever())
    await started.wait()
    await background.stop()
    await background.stop()


async def test_the_error_a_task_died_of_is_raised_by_stop() -> None:
    async def broken() -> None:
        raise RuntimeError("disk full")

    background = Background("broken")
    background.start(broken())
    await asyncio.sleep(0)  # let it run (and fail) before it is stopped
    with pytest.raises(RuntimeError, match="disk full"):
        await background.stop()
