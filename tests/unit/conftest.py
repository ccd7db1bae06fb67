"""Fixtures of the core's unit tests: the hand-written fakes of its ports, and the test node
types."""

from __future__ import annotations

import pytest

from tests.support.nodes import TestKit
from tests.unit.fakes import FakeCheckpoints, FakeStore


@pytest.fixture
def kit() -> TestKit:
    return TestKit()


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def checkpoints(store: FakeStore) -> FakeCheckpoints:
    return FakeCheckpoints(store)
