"""Pages of a list (DESIGN §12): a page of items and the opaque cursor of the next one.

A cursor is the position of a page's last item in the list's order (keyset pagination: a page
costs the same however many items come before it), written as base64url of a small JSON array
whose first element names the list. Stores make and read them with these helpers; clients
only hand back what they were given.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from core.domain import RunStatus
from core.errors import InvalidCursor

T = TypeVar("T")

MAX_PAGE = 1000
# A cursor longer than this was not made here (the longest, a graph's, is ~200 characters).
MAX_CURSOR_CHARS = 512
_INT64 = (-(2**63), 2**63 - 1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# Strictly the alphabet: Python's decoder would skip any other character.
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """Items in the list's order; `cursor` is where the next page starts (None: no more)."""

    items: list[T]
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class RunFilter:
    """Which runs a list holds; every condition given must hold (AND). `statuses`: any of
    them (empty: any status). The times are exclusive bounds on `created_at`."""

    workflow_id: str | None = None
    statuses: frozenset[RunStatus] = frozenset()
    created_after: datetime | None = None
    created_before: datetime | None = None
    trigger: str | None = None  # a trigger type: api, schedule, webhook, subworkflow
    parent_run_id: str | None = None  # the children of this run (sub-workflows)

    @property
    def status_values(self) -> list[str]:
        """The statuses asked for, in a fixed order; empty when they are all of them."""
        if len(self.statuses) == len(RunStatus):
            return []
        return sorted(s.value for s in self.statuses)


def micros(moment: datetime) -> int:
    """Microseconds since 1970 (UTC), exactly: what runs are ordered and filtered by. A time
    without a zone is taken as UTC (cortexd's clock is always UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MICROSECOND


def encode_cursor(kind: str, *position: int | str) -> str:
    raw = json.dumps([kind, *position], separators=(",", ":"), ensure_ascii=True)
    return base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode()


def decode_cursor(kind: str, cursor: str, shape: Sequence[type]) -> list[Any]:
    """The position a cursor of list `kind` holds, checked against `shape` (int or str per
    element); InvalidCursor for anything this server did not make."""
    if len(cursor) > MAX_CURSOR_CHARS or not _BASE64URL.fullmatch(cursor):
        raise InvalidCursor()
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw.decode())
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidCursor() from None
    if not isinstance(data, list) or len(data) != len(shape) + 1 or data[0] != kind:
        raise InvalidCursor()
    position = data[1:]
    for value, wanted in zip(position, shape, strict=True):
        if wanted is int:
            ok = type(value) is int and _INT64[0] <= value <= _INT64[1]
        else:
            ok = isinstance(value, str) and 0 < len(value) <= 256
        if not ok:
            raise InvalidCursor()
    return position
