"""The store's one writer on PostgreSQL: group commit (`adapters.sql.batching`) on a dedicated
connection, each transaction pipelined.

**The event log's order.** DESIGN §8 asks `seq` to be gap-free and strictly increasing in
commit order across every daemon. A PostgreSQL sequence is neither (a rolled-back nextval
leaves a gap; a transaction that drew a smaller number can commit after one that drew a
larger). So a write transaction begins by locking the one row of `event_head`
(`SELECT ... FOR UPDATE`) and numbers its events after the head it read; it stores them and
the new head just before COMMIT, and the lock is let go only once that commit is visible. Two
transactions that record events can therefore never overlap: seqs are handed out in commit
order with no gap, and a reader that has seen N never later finds a smaller one. The price:
the write transactions of all daemons are serialised, as SQLite's are (BEGIN IMMEDIATE). Group
commit is what makes that cheap: each daemon's transaction carries every write it had waiting.
What keeps the lock's time short (docs/performance.md measured it): the statements are sent in
psycopg's pipeline mode, waited for only where an operation reads; the fences of the batch's
operations come with the head, in its round trip, and are remembered (`PgTx.fences`). Taking
the lock first, before any row lock, also means two writers never deadlock, and every
operation decides on rows no other writer is changing (the run operations in
`adapters/sql/runs.py` rely on that, on both databases).

**Failures.** The batch runs without a savepoint per operation (a savepoint and its release are
two more round trips each, inside the lock): when an operation fails, the transaction is rolled
back and the batch is done again without it; it failed on a state that was stored, and keeps
that outcome. In the pipeline, a statement's failure surfaces where the pipeline is next read,
maybe in another operation: that batch is rolled back and done again without the pipeline,
which names the operation. A connection that breaks fails the batch (the callers hear
`StoreUnavailable`) and is opened again for the next one.

**Waking the other daemons.** The commit carries one `NOTIFY cortexd_events, '<last seq>'`
(delivered at commit; a seq, never a payload that could pass NOTIFY's 8000 bytes): the other
daemons' tails read the log from their last seq (`adapters/postgres/session.py`). The daemon's
own session hears it too, and ignores it: it comes from this writer's server process, and the
feed has the events from the writer already.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import structlog

from adapters.postgres.db import connect, reason
from adapters.sql.batching import GroupCommit, Item, Outcome
from adapters.sql.execution import Fenced
from adapters.sql.runs import FENCE
from adapters.sql.tx import JSON, Dialect, Op
from core.domain import Event
from core.errors import StoreUnavailable
from core.events import Published

log = structlog.get_logger("cortexd.postgres")
CHANNEL = "cortexd_events"

POSTGRES = Dialect(
    now="extract(epoch from clock_timestamp())",
    indexed_by=lambda index: "",
    same=lambda a, b: f"{a} IS NOT DISTINCT FROM {b}",
    row_order="position",
    next_seq="(SELECT seq + 1 FROM event_head)",
)


@dataclass(frozen=True, slots=True)
class _Statement:
    sql: str  # with psycopg's placeholders
    # How it changes `runs`: "" not at all, "one" the run whose id is its last parameter
    # (an UPDATE ... WHERE id = ?) or first (an INSERT), "any" rows it does not name.
    runs: str


_STATEMENTS: dict[str, _Statement] = {}
_WRITES_RUNS = re.compile(r"\b(UPDATE|INSERT\s+INTO|DELETE\s+FROM)\s+runs\b", re.IGNORECASE)
_ONE_RUN = re.compile(r"^(UPDATE runs SET [^;]* WHERE id = \?|INSERT INTO runs \(id,[^;]*)$")


def _statement(sql: str) -> _Statement:
    known = _STATEMENTS.get(sql)
    if known is None:
        runs = "" if not _WRITES_RUNS.search(sql) else "one" if _ONE_RUN.match(sql) else "any"
        known = _Statement(sql.replace("%", "%%").replace("?", "%s"), runs)
        if len(_STATEMENTS) < 4096:  # statements are a fixed set; bounded anyway
            _STATEMENTS[sql] = known
    return known


def pg_sql(sql: str) -> str:
    """The shared SQL's `?` placeholders as psycopg's `%s` (and a literal % doubled)."""
    return _statement(sql).sql


# The events of a transaction, the new head and the wake-up of the other daemons: one round trip.
_FLUSH = (
    "WITH stored AS (INSERT INTO events (seq, project_id, run_id, type, timestamp, body) "
    "SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[], "
    "%s::text[])), "
    "head AS (UPDATE event_head SET seq = %s) "
    f"SELECT pg_notify('{CHANNEL}', %s)"
)


_FENCES = "SELECT id, owner, epoch FROM runs WHERE id = ANY(%s)"


class PgTx:
    dialect = POSTGRES

    def __init__(self, conn: psycopg.AsyncConnection[Any], head: int) -> None:
        self.conn = conn
        self.head = head
        self.events: list[Published] = []
        self.rows: list[tuple[int, str, str | None, str, str, str]] = []
        # What `runs.FENCE` read of a run, until a statement of this transaction writes it:
        # a step's writes, its checkpoint and its node records, fenced each, cost one read.
        self.fences: dict[str, Any] = {}
        self.fence_reads = 0

    async def _run(self, sql: str, params: Iterable[Any]) -> psycopg.AsyncCursor[Any]:
        statement = _statement(sql)
        values = tuple(params)
        if statement.runs == "one":
            self.fences.pop(values[0] if sql.startswith("INSERT") else values[-1], None)
        elif statement.runs == "any":
            self.fences.clear()
        return await self.conn.execute(statement.sql, values)

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> None:
        await self._run(sql, params)

    async def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> None:
        values = [tuple(r) for r in rows]
        if len(values) == 1:  # the usual node record: executemany's pipeline costs more
            await self._run(sql, values[0])
            return
        if _statement(sql).runs:
            self.fences.clear()
        async with self.conn.cursor() as cursor:
            await cursor.executemany(pg_sql(sql), values)

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> Any:
        if sql == FENCE:
            [run_id] = params
            if run_id in self.fences:
                return self.fences[run_id]
            self.fence_reads += 1
            row = await (await self._run(sql, (run_id,))).fetchone()
            self.fences[run_id] = row
            return row
        return await (await self._run(sql, params)).fetchone()

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        return await (await self._run(sql, params)).fetchall()

    async def emit(self, event: Event) -> JSON:
        payload = event.to_json()
        del payload["seq"]
        body = json.dumps(payload, separators=(",", ":"))
        self.head += 1
        seq = self.head
        self.rows.append(
            (seq, event.project_id, event.run_id, event.type.value, payload["timestamp"], body)
        )
        published = {"seq": seq, **payload}
        self.events.append(Published(published, f'{{"seq":{seq},{body[1:]}'))
        return published

    async def last_seq(self) -> int:
        return self.head

    async def flush(self) -> None:
        if not self.rows:
            return
        columns = [list(column) for column in zip(*self.rows, strict=True)]
        await self.conn.execute(_FLUSH, (*columns, self.head, str(self.head)))


class _OpFailed(Exception):
    def __init__(self, index: int, error: Exception) -> None:
        self.index = index
        self.error = error


class _Refused(Exception):
    """The server refused a statement of a pipelined transaction: which operation sent it is
    not known (its error surfaces where the pipeline is next read)."""


class PgWriter(GroupCommit):
    def __init__(
        self,
        url: str,
        *,
        batch_max: int = 256,
        lazy_window_s: float = 0.005,
        on_commit: Callable[[list[Published]], None] = lambda events: None,
        available: Callable[[], bool] = lambda: True,
    ) -> None:
        """`available`: whether the server is there as far as this daemon knows (its session):
        while it says no, a batch fails at once instead of waiting for a connection."""
        super().__init__(
            name="postgres-writer",
            batch_max=batch_max,
            lazy_window_s=lazy_window_s,
            on_commit=on_commit,
        )
        self._url = url
        self._available = available
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self.reconnects = 0

    async def start(self) -> None:
        self._conn = await connect(self._url)
        self._start()

    async def close(self) -> None:
        await self._stop()
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    def backend_pid(self) -> int | None:
        """The server process of the writer's connection (None while it has none)."""
        conn = self._conn
        return None if conn is None or conn.closed else conn.info.backend_pid

    async def after_commit(self, batch: Sequence[Item]) -> None:
        """Nothing: the server does its own checkpoints."""

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        if conn is not None:
            await conn.close()
            self._conn = None
        if not self._available():
            raise StoreUnavailable("the database is unavailable: this daemon lost its session")
        try:
            self._conn = await connect(self._url)
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"the database is unavailable: {reason(exc)}") from exc
        self.reconnects += 1
        log.info("store_reconnected", reconnects=self.reconnects)
        return self._conn

    async def apply(self, batch: Sequence[Item]) -> tuple[list[Outcome], list[Published]]:
        outcomes: dict[int, Outcome] = {}
        pipelined = True
        while True:
            todo = [i for i in range(len(batch)) if i not in outcomes]
            try:
                results, events = await self._attempt([batch[i].op for i in todo], pipelined)
            except _OpFailed as failed:
                outcomes[todo[failed.index]] = (None, failed.error)
                continue
            except _Refused:
                pipelined = False  # one statement at a time: the failing operation is named
                continue
            for i, result in zip(todo, results, strict=True):
                outcomes[i] = (result, None)
            return [outcomes[i] for i in range(len(batch))], events

    async def _attempt(self, ops: list[Op], pipelined: bool) -> tuple[list[Any], list[Published]]:
        """One transaction of `ops`; _OpFailed or _Refused (all rolled back) when one of
        them fails. Pipelined, a statement is sent without waiting for the one before: the
        transaction waits on the server only where an operation reads (and at the head and
        the COMMIT), so the event log's head is held for a few round trips, not one per
        statement."""
        conn = await self._connection()
        try:
            if pipelined:
                async with conn.pipeline():
                    return await self._transaction(conn, ops, pipelined)
            return await self._transaction(conn, ops, pipelined)
        except _OpFailed:
            await self._roll_back(conn)
            raise
        except psycopg.Error as exc:
            if conn.broken or conn.closed or isinstance(exc, psycopg.InterfaceError):
                await self._discard(conn)
                raise StoreUnavailable(f"the database is unavailable: {reason(exc)}") from exc
            if pipelined:
                await self._roll_back(conn)
                raise _Refused() from exc
            # Not pipelined, outside any operation (BEGIN, the events, COMMIT), or a server
            # error of the kind that says the server, not the statement, failed.
            await self._discard(conn)
            if isinstance(exc, psycopg.OperationalError):
                raise StoreUnavailable(f"the database is unavailable: {reason(exc)}") from exc
            raise
        except BaseException:
            # Cancelled mid-transaction (the writer's task stopped): a transaction left open
            # on this connection would be committed with the next batch. Closing it rolls
            # it back on the server.
            await self._discard(conn)
            raise

    async def _transaction(
        self, conn: psycopg.AsyncConnection[Any], ops: list[Op], pipelined: bool
    ) -> tuple[list[Any], list[Published]]:
        await conn.execute("BEGIN")
        head = await conn.execute("SELECT seq FROM event_head FOR UPDATE")
        # The leases the batch's operations are fenced by, read once, under the head's lock
        # (nothing but this transaction changes them until it commits).
        leased = list({op.lease.run_id for op in ops if isinstance(op, Fenced)})
        fences = await conn.execute(_FENCES, (leased,)) if leased else None
        row = await head.fetchone()  # BEGIN, the head and the fences: one round trip
        assert row is not None  # the migration stores the head's one row
        tx = PgTx(conn, int(row[0]))
        if fences is not None:
            tx.fences = dict.fromkeys(leased)
            for run_id, owner, epoch in await fences.fetchall():
                tx.fences[run_id] = (owner, epoch)
        results = []
        for index, op in enumerate(ops):
            try:
                results.append(await op(tx))
            except psycopg.Error as exc:
                if pipelined or isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
                    raise  # maybe another operation's statement; or the connection
                raise _OpFailed(index, exc) from exc
            except Exception as exc:
                raise _OpFailed(index, exc) from exc
        await tx.flush()
        await conn.execute("COMMIT")  # pipelined: its answer is awaited as the pipeline ends
        return results, tx.events

    async def _roll_back(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """End the failed transaction; a connection that cannot is not used again."""
        try:
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                await conn.execute("ROLLBACK")
        except psycopg.Error:
            await self._discard(conn)

    async def _discard(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """A connection whose transaction is in doubt is never used again."""
        try:
            await conn.close()
        finally:
            if self._conn is conn:
                self._conn = None
