"""`cortexd backup FILE`: a consistent copy of a live SQLite store, taken while daemons serve it.

SQLite's online backup API (`sqlite3.Connection.backup`) in **one step**: the whole copy is
read inside one read transaction, so it is one snapshot of the database (WAL included) as of
one commit. In WAL mode a reader never blocks the writer: every daemon goes on committing
while the copy is read (the WAL only grows meanwhile, since its checkpoints cannot pass the
copy's snapshot). Copying in several steps would let the daemons' commits in between restart
the copy from the first page (a change made by another connection invalidates a backup in
progress), so under a steady load it might never end; stepping only pays in rollback-journal
mode, where a reader holds writers back, which cortexd never uses. `VACUUM INTO` also reads
one snapshot, but rebuilds every table and index into the copy (more CPU and time for the
same consistency); the backup API copies pages as they are.

The copy is written beside FILE under a temporary name, checked (`PRAGMA quick_check`),
flushed to disk and renamed to FILE, so FILE is either absent or a complete copy. An existing
FILE is never overwritten.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

BUSY_TIMEOUT_S = 5.0


class BackupError(Exception):
    """The copy could not be made; the message says why (nothing was left at FILE)."""


@dataclass(frozen=True, slots=True)
class BackupReport:
    database: Path
    target: Path
    bytes: int
    seconds: float
    runs: int
    last_seq: int

    def to_json(self) -> dict[str, object]:
        return {
            "database": str(self.database),
            "backup": str(self.target),
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "runs": self.runs,
            "last_event_seq": self.last_seq,
        }


def backup_sqlite(database: Path, target: Path) -> BackupReport:
    database, target = database.absolute(), target.absolute()
    if not database.is_file():
        raise BackupError(f"there is no database at {database}")
    if target.exists():
        raise BackupError(f"{target} exists already: cortexd backup never overwrites a file")
    if not target.parent.is_dir():
        raise BackupError(f"the directory {target.parent} does not exist")
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    began = time.monotonic()
    try:
        runs, last_seq = _copy(database, partial)
        _flush(partial)
        os.rename(partial, target)
        _flush(target.parent)
    except BaseException:
        for leftover in (partial, partial.with_name(partial.name + "-journal")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
        raise
    return BackupReport(
        database, target, target.stat().st_size, time.monotonic() - began, runs, last_seq
    )


def _copy(database: Path, partial: Path) -> tuple[int, int]:
    # mode=rw: never create an empty database where the store should be.
    uri = f"file:{urllib.parse.quote(str(database))}?mode=rw"
    try:
        source = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot open {database}: {exc}") from exc
    with contextlib.closing(source):
        copy = sqlite3.connect(partial, isolation_level=None)
        with contextlib.closing(copy):
            try:
                source.backup(copy)  # pages=-1: one step, one snapshot
            except sqlite3.Error as exc:
                raise BackupError(f"cannot copy {database}: {exc}") from exc
            # The copy is a database of its own: a rollback journal while nothing uses it;
            # the daemon started on it turns WAL on again.
            try:
                copy.execute("PRAGMA journal_mode=DELETE")
                (check,) = copy.execute("PRAGMA quick_check").fetchone()
                (runs,) = copy.execute("SELECT COUNT(*) FROM runs").fetchone()
                (last_seq,) = copy.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()
            except sqlite3.Error as exc:
                raise BackupError(f"{database} is not a cortexd database: {exc}") from exc
            if check != "ok":
                raise BackupError(f"the copy of {database} does not pass quick_check: {check}")
    return int(runs), int(last_seq)


def _flush(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
