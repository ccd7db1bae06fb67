"""What the stores on SQLite and on PostgreSQL share: write operations on one transaction.

A write is an operation: an `async def op(tx)` that reads and writes through `Tx` and records
its events with `tx.emit`. Each store's writer folds the operations waiting at one moment into
one transaction (group commit) and answers each caller once it is committed. The operations
(runs, graphs, node states, checkpoints) are written once, here and in `adapters/sql/`, in the
SQL both databases speak: `?` placeholders (the PostgreSQL adapter turns them into psycopg's),
`INSERT ... ON CONFLICT`, `RETURNING`; what differs is in `Dialect`.

On SQLite the transaction is a plain `sqlite3` connection in the writer's hands: an operation
never really waits (`Tx`'s methods finish at once) and is driven to its end by `run_sync`,
on the writer's thread or the loop's. On PostgreSQL each statement is a round trip, awaited on
the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from core.domain import Event

JSON = dict[str, Any]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Dialect:
    """The SQL that is not the same on both databases."""

    # Seconds since 1970 by the database's clock (leases never use a daemon's clock).
    now: str
    # An index hint for a query on `runs` (SQLite's planner has no statistics to go by).
    indexed_by: Callable[[str], str]
    # `a` equals `b`, NULL equal to NULL.
    same: Callable[[str, str], str]
    # A column that orders a table's rows as they were first inserted.
    row_order: str
    # The seq the event log gives next (it stays known after every event is pruned).
    next_seq: str
    # What follows a SELECT of rows the transaction goes on to change: `lock` waits for them
    # (a row another transaction is changing is read as that one leaves it), `take` passes
    # over those another transaction holds (a claim). Empty on SQLite, whose transactions
    # never overlap (BEGIN IMMEDIATE).
    lock: str = ""
    take: str = ""
    # What follows a SELECT of a row that must stay until the transaction ends while others
    # may still change its other columns (a graph a new run is of: its deletion waits).
    keep: str = ""
    # Where a run joins the queue (`runs.queued_at`): None, at the seq of the event that says
    # so (SQLite: the transactions commit one at a time, so seqs are handed out as they
    # begin); else this SQL (PostgreSQL numbers a transaction's events only as it commits).
    queue_position: str | None = None

    def differs(self, a: str, b: str) -> str:
        return f"NOT ({self.same(a, b)})"


class Tx(Protocol):
    """One open transaction of the store's writer."""

    dialect: Dialect

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> None:
        """Run one statement whose result is not needed (PostgreSQL may send it on without
        waiting for it: its failure can surface at a later statement). A statement whose rows
        or count matter is a `fetchone` or `fetchall` (`... RETURNING`)."""
        ...

    async def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> None: ...

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> Any: ...

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Any]: ...

    async def emit(self, event: Event) -> JSON:
        """Record `event` in the log with the next `seq`: the event as clients get it."""
        ...

    async def last_seq(self) -> int:
        """The newest `seq` of the log as this transaction leaves it so far (0 when none is).
        On PostgreSQL it is known only once the transaction committed: a writer there makes
        what an operation returns right (a `Claim`'s seq, `adapters.postgres.writer`)."""
        ...

    async def lock(self, *name: str) -> None:
        """Hold the lock of `name` (say, a concurrency group) until the transaction ends:
        transactions that take it decide one after the other. Nothing on SQLite, whose write
        transactions never overlap."""
        ...


Op = Callable[[Tx], Awaitable[Any]]


class Writes(Protocol):
    """A store's writer, as the operations' callers use it."""

    def submit(self, op: Op, *, lazy: bool = False, small: bool = False) -> asyncio.Future[Any]:
        """Queue `op`; resolved once its transaction committed. `lazy`: it may wait a moment
        for company; `small`: it writes a few rows at most."""
        ...

    async def write(self, op: Callable[[Tx], Awaitable[T]], *, small: bool = False) -> T: ...


class Reads(Protocol):
    """A store's reads: one query run to its end (never a cursor held across awaits)."""

    async def all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...


def run_sync(step: Awaitable[T]) -> T:
    """Drive an operation that never suspends (one on SQLite's `Tx`) to its result."""
    coroutine = step.__await__()
    try:
        coroutine.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coroutine.close()
    raise RuntimeError("a write operation waited on something outside its transaction")
