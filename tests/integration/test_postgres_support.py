"""The tests' PostgreSQL: a fresh database per test, dropped after it; a private cluster when no
server is at hand; a skip that says why, or a failure when PostgreSQL is required."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from tests.support.postgres import (
    PRIVATE_ENV,
    UNPRIVILEGED_USER,
    URL_ENV,
    Server,
    database_of,
    find_server,
    server_binaries,
)
from tests.support.process import free_port

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
PYTEST_TIMEOUT_S = 120.0


def databases(server: Server) -> set[str]:
    with psycopg.connect(server.url, connect_timeout=10) as conn:
        return {row[0] for row in conn.execute("SELECT datname FROM pg_database")}


def test_a_fresh_database_is_usable_and_dropped_even_with_a_connection_open(
    postgres_server: Server,
) -> None:
    url = postgres_server.create_database()
    left_open = psycopg.connect(url, autocommit=True, connect_timeout=10)
    try:
        left_open.execute("CREATE TABLE notes (body text)")
        left_open.execute("INSERT INTO notes VALUES ('kept')")
        assert left_open.execute("SELECT body FROM notes").fetchall() == [("kept",)]
        assert database_of(url) in databases(postgres_server)

        postgres_server.drop_database(url)
    finally:
        left_open.close()

    assert database_of(url) not in databases(postgres_server)
    with pytest.raises(psycopg.OperationalError, match="does not exist"):
        psycopg.connect(url, connect_timeout=10)


def test_two_databases_are_distinct(postgres_server: Server) -> None:
    with postgres_server.database() as first, postgres_server.database() as second:
        assert database_of(first) != database_of(second)
        with psycopg.connect(first, autocommit=True) as conn:
            conn.execute("CREATE TABLE only_here (id int)")
        with psycopg.connect(second) as conn:
            assert conn.execute("SELECT to_regclass('only_here')").fetchone() == (None,)


def test_only_test_databases_are_dropped(postgres_server: Server) -> None:
    with pytest.raises(ValueError, match="not a test database"):
        postgres_server.drop_database(postgres_server.url)


async def test_postgres_url_is_an_empty_database_of_its_own_for_async_code(
    postgres_url: str,
) -> None:
    async with await psycopg.AsyncConnection.connect(postgres_url) as conn:
        cursor = await conn.execute(
            "SELECT current_database(), count(*) FROM pg_tables WHERE schemaname = 'public'"
        )
        assert await cursor.fetchone() == (database_of(postgres_url), 0)
    assert database_of(postgres_url).startswith(f"cortexd_test_{os.getpid()}_")


def test_a_private_cluster_serves_then_leaves_nothing_behind() -> None:
    bindir = server_binaries()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (apt-get install postgresql)")
    started = time.monotonic()
    server, why = find_server(private_only=True)
    assert server is not None, why
    assert server.cluster is not None
    cluster = server.cluster
    try:
        print(f"private cluster from {bindir} up in {time.monotonic() - started:.2f} s")
        assert server.url.startswith("postgresql://postgres@127.0.0.1:")
        pid = cluster.postmaster_pid()
        assert pid is not None
        if os.geteuid() == 0:  # initdb refuses root: the server runs as nobody
            assert _uid_of(pid) == pwd.getpwnam(UNPRIVILEGED_USER).pw_uid
        with server.database() as url, psycopg.connect(url) as conn:
            assert conn.execute("SELECT 1 + 1").fetchone() == (2,)
    finally:
        server.close()

    assert not cluster.root.exists()
    assert _gone(pid)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(server.url, connect_timeout=2)


def test_a_set_url_that_does_not_answer_is_reported_not_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(PRIVATE_ENV, raising=False)
    monkeypatch.setenv(URL_ENV, f"postgresql://postgres@127.0.0.1:{free_port()}/postgres")

    server, why = find_server()

    assert server is None
    assert why.startswith(f"{URL_ENV} is set but unusable: ")


@pytest.mark.parametrize(
    ("require", "outcome"), [(None, "1 skipped"), ("1", "1 error")], ids=["skip", "required"]
)
def test_without_postgres_its_tests_skip_with_the_reason_or_fail_when_required(
    tmp_path: Path, require: str | None, outcome: str
) -> None:
    (tmp_path / "test_needs_postgres.py").write_text(
        "def test_it(postgres_url):\n    pass\n", encoding="utf-8"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORTEXD_")}
    env |= {"PYTHONPATH": str(ROOT), URL_ENV: f"postgresql://127.0.0.1:{free_port()}/postgres"}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # the installed plugins take seconds to load
    if require is not None:
        env["CORTEXD_REQUIRE_POSTGRES"] = require

    pytest_args = ["-p", "tests.conftest", "-p", "no:cacheprovider", "-q", "-ra", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", *pytest_args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=PYTEST_TIMEOUT_S,
        check=False,
    )

    assert outcome in result.stdout, result.stdout + result.stderr
    assert f"{URL_ENV} is set but unusable" in result.stdout
    assert result.returncode == (0 if require is None else 1)


def _uid_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("\nUid:", 1)[1].split()[1])  # real, effective, saved, fs: effective


def _gone(pid: int, within_s: float = 10.0) -> bool:
    """Whether process `pid` is gone (or a zombie) within `within_s`."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        if stat.rsplit(")", 1)[-1].split()[0] == "Z":
            return True
        time.sleep(0.05)
    return False
