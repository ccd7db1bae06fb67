"""Fixtures every suite may use: a PostgreSQL server for the session, a fresh database per test.

Where the server comes from is `tests.support.postgres.find_server`'s doc. Without one the tests
that use these fixtures skip and say why; with ``CORTEXD_REQUIRE_POSTGRES=1`` (what ``.ci/run``
sets) they fail instead, so CI cannot pass without having run them. Mark such tests
``@pytest.mark.postgres`` so that ``-m postgres`` selects them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.postgres import Server, find_server

REQUIRE_POSTGRES = "CORTEXD_REQUIRE_POSTGRES"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Server]:
    """The session's PostgreSQL server (a private cluster is stopped and removed after it)."""
    server, why = find_server()
    if server is None:
        if os.environ.get(REQUIRE_POSTGRES) == "1":
            pytest.fail(f"{REQUIRE_POSTGRES}=1 but {why}", pytrace=False)
        pytest.skip(why)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def postgres_url(postgres_server: Server) -> Iterator[str]:
    """The URL of an empty database of this test's own, dropped after it (open connections and
    all: a fixture holding a pool should depend on this one, so that it closes first)."""
    with postgres_server.database() as url:
        yield url
