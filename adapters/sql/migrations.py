"""Numbered SQL migrations, the same scheme on both databases: `NNNN_name.sql` files in a
package's `migrations/` folder, applied in order, each recorded in `schema_migrations`."""

from __future__ import annotations

import re
from importlib import resources

_MIGRATION = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def numbered_migrations(package: str) -> list[tuple[int, str, str]]:
    """(number, file name, SQL) of each migration of `package`, in order."""
    folder = resources.files(package) / "migrations"
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)
