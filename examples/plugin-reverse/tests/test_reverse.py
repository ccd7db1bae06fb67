"""Tests of the node type alone, with cortexd's helper: no daemon, no event loop plugin."""

from __future__ import annotations

import asyncio

from cortexd_reverse import Reverse

from core.testing import run_node


def test_reverses_the_word_and_reports_progress() -> None:
    result = asyncio.run(run_node(Reverse(), {}, {"word": "stressed"}))

    assert result.output == {"reversed": "desserts", "length": 8}
    assert result.progress == [(0.5, "halfway")]


def test_a_missing_field_fails_without_retries() -> None:
    result = asyncio.run(run_node(Reverse(), {"field": "name"}, {"word": "x"}))

    assert "no 'name'" in str(result.error)
    assert not result.retryable
