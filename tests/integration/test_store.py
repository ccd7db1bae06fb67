"""The SQLite store: migrations, the single writer's group commit, and the event log."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from adapters.sql.migrations import SchemaTooNew
from adapters.sqlite.db import connect, migrate, migrations, prepare_database
from adapters.sqlite.store import SqliteStore
from adapters.sqlite.writer import Tx, Writer
from core.domain import Event, EventType
from core.events import Published

NOW = datetime(2026, 1, 1, tzinfo=UTC)


async def test_migrations_are_recorded_and_idempotent(tmp_path: Path) -> None:
    conn = await connect(tmp_path / "c.db")
    try:
        first = await migrate(conn)
        second = await migrate(conn)
        assert first == [name for _, name, _ in migrations()]
        assert second == []
        async with conn.execute("SELECT version, name FROM schema_migrations") as cursor:
            rows = await cursor.fetchall()
        assert [(v, n) for v, n in rows] == [(v, n) for v, n, _ in migrations()]
        async with conn.execute("PRAGMA journal_mode") as cursor:
            assert (await cursor.fetchone()) == ("wal",)
    finally:
        await conn.close()


@pytest.fixture
async def writer(tmp_path: Path) -> Any:
    await prepare_database(tmp_path / "c.db")
    published: list[Published] = []
    writer = Writer(tmp_path / "c.db", batch_max=64, on_commit=published.extend)
    await writer.start()
    writer.published = published  # type: ignore[attr-defined]
    yield writer
    await writer.close()


def _event(n: int) -> Event:
    return Event(type=EventType.RUN_UPDATED, project_id="p", run_id=f"r{n}", timestamp=NOW)


async def test_concurrent_writes_share_commits_and_all_land(writer: Writer) -> None:
    async def op_for(n: int) -> Any:
        async def op(tx: Tx) -> int:
            event = await tx.emit(_event(n))
            return int(event["seq"])

        return await writer.write(op)

    seqs = await asyncio.gather(*(op_for(n) for n in range(200)))
    assert sorted(seqs) == list(range(1, 201))
    assert writer.ops == 200
    assert writer.commits < 200  # grouped: fewer transactions than writes
    published = writer.published  # type: ignore[attr-defined]
    assert [e.seq for e in published] == list(range(1, 201))
    assert all(json.loads(e.text) == e.event for e in published)


async def test_a_failing_write_does_not_undo_its_batch_neighbours_nor_leave_a_seq_gap(
    writer: Writer, tmp_path: Path
) -> None:
    async def good(tx: Tx) -> None:
        await tx.emit(_event(1))

    async def bad(tx: Tx) -> None:
        await tx.emit(_event(2))
        raise ValueError("refused")

    results = await asyncio.gather(
        writer.write(good), writer.write(bad), writer.write(good), return_exceptions=True
    )
    assert results[0] is None
    assert results[2] is None
    assert isinstance(results[1], ValueError)
    async with (
        aiosqlite.connect(tmp_path / "c.db") as reader,
        reader.execute("SELECT seq, run_id FROM events ORDER BY seq") as cursor,
    ):
        rows = await cursor.fetchall()
    assert [tuple(r) for r in rows] == [(1, "r1"), (2, "r1")]
    assert [e.seq for e in writer.published] == [1, 2]  # type: ignore[attr-defined]


async def test_close_commits_what_was_submitted(writer: Writer, tmp_path: Path) -> None:
    async def op(tx: Tx) -> None:
        await tx.emit(_event(7))

    futures = [writer.submit(op) for _ in range(10)]
    await writer.close()
    assert all(f.done() and f.exception() is None for f in futures)
    with pytest.raises(RuntimeError, match="not running"):
        writer.submit(op)


async def test_pruning_deletes_only_an_old_prefix_of_the_event_log(
    writer: Writer, tmp_path: Path
) -> None:
    reader = await connect(tmp_path / "c.db")
    store = SqliteStore(writer, reader)
    old, new = datetime(2020, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC)
    stamps = [old, old, new, old, new]  # an old event after a new one stays: no holes

    for stamp in stamps:

        async def op(tx: Tx, stamp: datetime = stamp) -> None:
            await tx.emit(
                Event(type=EventType.RUN_UPDATED, project_id="p", run_id="r", timestamp=stamp)
            )

        await writer.write(op)
    try:
        assert await store.prune_events(datetime(2025, 1, 1, tzinfo=UTC), batch=1) == 2
        assert [e["seq"] for e in await store.list_events("p")] == [3, 4, 5]
        assert await store.min_event_seq() == 3
        assert await store.prune_events(datetime(2040, 1, 1, tzinfo=UTC)) == 3
        assert await store.list_events("p") == []
        assert await store.min_event_seq() == 6  # gone, but a client since=2 learns of the gap
    finally:
        await reader.close()


async def test_a_lazy_write_waits_for_company_and_still_lands_alone(writer: Writer) -> None:
    async def op(tx: Tx) -> None:
        await tx.emit(_event(1))

    before = writer.commits
    lazy = writer.submit(op, lazy=True)
    await writer.submit(op)  # arrives within the window: one commit serves both
    assert lazy.done()
    assert writer.commits == before + 1

    alone = writer.submit(op, lazy=True)
    await asyncio.wait_for(alone, 10)  # nothing else comes: committed after the window
    assert writer.commits == before + 2


async def test_small_batches_commit_on_the_loop_and_large_ones_on_the_writers_thread(
    writer: Writer,
) -> None:
    async def where(tx: Tx) -> int:
        await tx.emit(_event(1))
        return threading.get_ident()

    loop_thread = threading.get_ident()
    alone = await writer.write(where, small=True)  # a batch of one: no hop
    assert alone == loop_thread

    many = await asyncio.gather(*(writer.write(where, small=True) for _ in range(32)))
    assert len(set(many)) == 1  # one batch, one transaction, one thread
    assert many[0] != loop_thread  # too large to hold the loop for

    heavy = await writer.write(where)  # not known to be small (a prune, say)
    assert heavy != loop_thread


async def test_a_small_write_never_holds_the_loop_while_another_process_has_the_lock(
    writer: Writer, tmp_path: Path
) -> None:
    async def op(tx: Tx) -> int:
        await tx.emit(_event(1))
        return threading.get_ident()

    other = sqlite3.connect(tmp_path / "c.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # a sqlite3 shell, a backup tool: the write lock is taken
    try:
        pending = writer.submit(op, small=True)
        for _ in range(20):  # the loop keeps running meanwhile: this test can let go
            await asyncio.sleep(0.01)
        assert not pending.done()
    finally:
        other.execute("COMMIT")
        other.close()
    ran_on = await asyncio.wait_for(pending, 10)  # the writer's thread waited for the lock
    assert ran_on != threading.get_ident()


async def test_the_writer_checkpoints_the_wal_so_it_does_not_grow_with_every_commit(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.db"
    await prepare_database(path)
    writer = Writer(path, checkpoint_every=16)
    await writer.start()
    blob = "x" * 4000  # about a page a commit

    async def op(tx: Tx) -> None:
        await tx.execute(
            "INSERT INTO plugin_state (plugin, key, value) VALUES ('t', ?, ?)",
            (str(uuid.uuid4()), json.dumps(blob)),
        )

    try:
        for _ in range(600):
            await writer.write(op)
        wal = path.with_name(path.name + "-wal")
        # 600 commits of a page or more each: without checkpoints the WAL would hold them all.
        assert wal.stat().st_size < 200 * 4096
    finally:
        await writer.close()


async def test_a_database_migrated_by_a_newer_release_is_refused(tmp_path: Path) -> None:
    conn = await connect(tmp_path / "c.db")
    try:
        await migrate(conn)
        await conn.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) "
            "VALUES (9999, '9999_later.sql', 'now')"
        )
        await conn.commit()
        with pytest.raises(SchemaTooNew, match=r"migration 9999.*upgrade this daemon"):
            await migrate(conn)
    finally:
        await conn.close()
