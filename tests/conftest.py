"""Fixtures every suite may use: a PostgreSQL server for the session, a fresh database per test.

Where the server comes from is `tests.support.postgres.find_server`'s doc. Without one the tests
that use these fixtures skip and say why; with ``CORTEXD_REQUIRE_POSTGRES=1`` (what ``.ci/run``
sets) they fail instead, so CI cannot pass without having run them. Mark such tests
``@pytest.mark.postgres`` so that ``-m postgres`` selects them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.support.postgres import Server, find_server
from tests.support.stores import run_sql

REQUIRE_POSTGRES = "CORTEXD_REQUIRE_POSTGRES"


def no_postgres(why: str) -> NoReturn:
    """Skip a test that needs PostgreSQL, saying why; fail it where PostgreSQL is required."""
    if os.environ.get(REQUIRE_POSTGRES) == "1":
        pytest.fail(f"{REQUIRE_POSTGRES}=1 but {why}", pytrace=False)
    pytest.skip(why)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Server]:
    """The session's PostgreSQL server (a private cluster is stopped and removed after it)."""
    server, why = find_server()
    if server is None:
        no_postgres(why)
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


# A test module that sets `ON_BOTH_STORES = True` runs each test taking `storage` twice: on a
# SQLite file and on a PostgreSQL database (the same test, not a copy).
STORES = ("sqlite", pytest.param("postgres", marks=pytest.mark.postgres))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "storage" in metafunc.fixturenames and getattr(metafunc.module, "ON_BOTH_STORES", False):
        metafunc.parametrize("storage", STORES, indirect=True)


@pytest.fixture
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The `[storage]` settings of the test's store, as environment variables: SQLite in
    tmp_path unless the module runs on both stores and this is PostgreSQL's turn."""
    if getattr(request, "param", "sqlite") == "postgres":
        return {"CORTEXD_STORAGE__URL": request.getfixturevalue("postgres_url")}
    return {"CORTEXD_STORAGE__PATH": str(tmp_path / "cortexd.db")}


SQL = Callable[..., list[tuple[Any, ...]]]


@pytest.fixture
def store_sql(storage: dict[str, str]) -> SQL:
    """`store_sql(sql, *params)`: rows of a query on the test's store (either database)."""

    def run(sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return run_sql(storage, sql, params)

    return run
