"""The SQLite writer when the store fails (a real database file): a full database is
`StoreFull` for the whole batch and marks the writer faulty until a write lands again; an
operation's own error stays its own; a database file replaced under it ends the writer.
(SQLite's `max_page_count` makes a real SQLITE_FULL without filling a disk; the e2e tests in
tests/e2e/test_storage_faults.py fill a real one.)"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.sql.batching import WriterDied
from adapters.sqlite.db import prepare_database
from adapters.sqlite.writer import Tx, Writer, probe_for
from core.errors import StoreFull, StoreUnavailable


@pytest.fixture
async def writer(tmp_path: Path) -> AsyncIterator[Writer]:
    await prepare_database(tmp_path / "c.db")
    writer = Writer(tmp_path / "c.db")
    await writer.start()
    yield writer
    await writer.close()


async def cap_pages(tx: Tx, extra: int = 0) -> None:
    """The database may not grow past its size now (+ `extra` pages): SQLITE_FULL beyond."""
    (pages,) = await tx.fetchone("PRAGMA page_count")
    await tx.execute(f"PRAGMA max_page_count = {int(pages) + extra}")


async def big_row(tx: Tx) -> None:
    await tx.execute(
        "INSERT INTO plugin_state (plugin, key, value) VALUES ('t', hex(randomblob(8)), ?)",
        ("x" * 200_000,),
    )


async def test_a_full_database_fails_the_whole_batch_with_store_full_until_a_write_lands(
    writer: Writer,
) -> None:
    async def small_row(tx: Tx) -> None:
        await tx.execute("INSERT INTO plugin_state (plugin, key, value) VALUES ('t', 's', '')")

    await writer.write(cap_pages)
    results = await asyncio.gather(
        writer.write(small_row), writer.write(big_row), return_exceptions=True
    )
    assert all(isinstance(r, StoreFull) for r in results), results  # one transaction, both
    assert "disk is full" in str(results[1])
    assert isinstance(writer.fault, StoreFull)
    assert not writer.healthy

    async def uncap(tx: Tx) -> None:
        await tx.execute("PRAGMA max_page_count = 1073741823")

    await writer.write(uncap)  # commits, but writes no row: not a proof
    assert writer.fault is not None
    await writer.write(small_row)
    assert writer.healthy


async def test_the_probe_finds_the_store_back_without_traffic(writer: Writer) -> None:
    async def register(tx: Tx) -> None:
        await tx.execute(
            "INSERT INTO instances (id, host, pid, started_at, wake) VALUES (?, 'h', 1, '', NULL)",
            ("me",),
        )

    await writer.write(register)
    writer.probe = probe_for("me")
    await writer.write(cap_pages)
    with pytest.raises(StoreFull):
        await writer.write(big_row)

    async def uncap(tx: Tx) -> None:
        await tx.execute("PRAGMA max_page_count = 1073741823")

    await writer.write(uncap)  # room again; this commit wrote no row, so proves nothing
    assert not writer.healthy
    for _ in range(100):  # the probe runs every second: it writes this daemon's row
        if writer.healthy:
            break
        await asyncio.sleep(0.05)
    assert writer.healthy


async def test_an_operation_error_is_its_own_not_the_stores(writer: Writer) -> None:
    async def duplicate(tx: Tx) -> None:
        await tx.execute("INSERT INTO plugin_state (plugin, key, value) VALUES ('t', 'k', '')")
        await tx.execute("INSERT INTO plugin_state (plugin, key, value) VALUES ('t', 'k', '')")

    with pytest.raises(sqlite3.IntegrityError):
        await writer.write(duplicate)
    assert writer.healthy


async def test_a_database_file_replaced_under_the_writer_ends_it(
    writer: Writer, tmp_path: Path
) -> None:
    other = tmp_path / "other.db"
    sqlite3.connect(other).close()
    os.replace(other, tmp_path / "c.db")
    async with asyncio.timeout(5):
        death = await writer.died()
    assert "was replaced or deleted" in str(death)
    assert not writer.healthy
    with pytest.raises(WriterDied) as refused:
        writer.submit(big_row)
    assert isinstance(refused.value, StoreUnavailable)  # a client is answered 503
