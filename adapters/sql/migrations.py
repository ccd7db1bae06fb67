"""Numbered SQL migrations, the same scheme on both databases: `NNNN_name.sql` files in a
package's `migrations/` folder, applied in order, each recorded in `schema_migrations`."""

from __future__ import annotations

import re
from importlib import resources

_MIGRATION = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer cortexd than this one: a daemon of an older
    release must not run beside newer ones (what the store's operations may assume changes
    with the schema, e.g. PostgreSQL's migration 0007, after which daemons' transactions
    overlap)."""


def refuse_newer(done: set[int], known: list[tuple[int, str, str]], where: str) -> None:
    """SchemaTooNew if `done` (the versions recorded in `schema_migrations`) holds one this
    release does not know."""
    newer = sorted(done - {version for version, _, _ in known})
    if newer:
        latest = known[-1][0] if known else 0
        raise SchemaTooNew(
            f"{where} was migrated by a newer cortexd (migration {newer[-1]:04d}; this one knows "
            f"up to {latest:04d}): upgrade this daemon, or stop the newer ones and restore a "
            "backup made before their upgrade"
        )


def numbered_migrations(package: str) -> list[tuple[int, str, str]]:
    """(number, file name, SQL) of each migration of `package`, in order."""
    folder = resources.files(package) / "migrations"
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)
