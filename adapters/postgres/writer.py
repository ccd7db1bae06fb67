"""The store's one writer on PostgreSQL: group commit (`adapters.sql.batching`) on a dedicated
connection, each transaction pipelined.

**The event log's order.** DESIGN §8 asks `seq` to be gap-free and strictly increasing in
commit order across every daemon. A PostgreSQL sequence is neither (a rolled-back nextval
leaves a gap; a transaction that drew a smaller number can commit after one that drew a
larger). So the last statement of a write transaction, sent with its COMMIT, locks the one
row of `event_head`, numbers the transaction's events after it, stores them and the new head
(`_FLUSH`, in `adapters/postgres/tx.py`); the lock is let go only once that commit is
visible. Seqs are therefore handed out in commit order with no gap, and a reader that has
seen N never later finds a smaller one.
The head is held only while the server stores the events and commits (the WAL flush), not
while the daemon works: the transactions of several daemons overlap up to their last
statement, and are serialised only there.

**Overlapping transactions.** What two daemons' transactions could both change is locked
row by row instead (`adapters/sql/runs.py`, `adapters/sql/groups.py`): a run read to be
changed is locked as it is read; claims pass over the runs another transaction holds; the
leases of a batch's fenced writes are read, and held against a change of owner, in its first
round trip (`FENCES`), so a takeover waits for the write, which lands before it or is
refused. Two transactions can still wait on each other's rows (a cancel from one daemon of a
run whose child another is finishing): the server breaks such a deadlock by rolling one back,
and that batch is done again (`RETRIES`). A daemon stopped in the middle of a transaction
holds its rows (and, stopped between its flush and its COMMIT, the head): the others pass over
them, a write that needs one fails after `stall_s`, and once it has been stopped for a lease
and `stall_s` they end its transaction (`adapters/postgres/stalls.py`).
What keeps a transaction short: its statements are sent in psycopg's pipeline mode, waited
for only where an operation reads (the fences, a claim, a finishing run), and a fence read
once is remembered (`PgTx.fences`).

**Waking the other daemons.** The commit carries one `NOTIFY cortexd_events, '<last seq>'`
(delivered at commit; a seq, never a payload that could pass NOTIFY's 8000 bytes): the other
daemons' tails read the log from their last seq (`adapters/postgres/session.py`). The daemon's
own session hears it too, and ignores it: it comes from this writer's server process, and the
feed has the events from the writer already.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import psycopg
import structlog

from adapters.postgres.db import SERVER_KEEPALIVES, WRITER_NAME, connect, reason
from adapters.postgres.tx import FENCES, PgTx, numbered
from adapters.sql.batching import GroupCommit, Item, Outcome
from adapters.sql.execution import Fenced
from adapters.sql.tx import Op
from core.errors import StoreUnavailable
from core.events import Published

log = structlog.get_logger("cortexd.postgres")
# How often a batch is done again when the server ended its transaction to break a deadlock
# (or a serialisation failure) between the row locks of two daemons' transactions.
RETRIES = 20
_ROLLED_BACK = ("40001", "40P01")  # serialization_failure, deadlock_detected
_LOCK_TIMEOUT = "55P03"  # lock_not_available: a row held longer than `stall_s`
BRIEF_WAIT_MS = 500  # how long a row is waited for once one was held `stall_s`


class _OpFailed(Exception):
    def __init__(self, index: int, error: Exception, *, final: bool = False) -> None:
        self.index = index
        self.error = error
        self.final = final  # not to be decided again (it could not wait for a row)


class _Deadlocked(Exception):
    """The server rolled the transaction back to break a deadlock with another's row locks
    (or a serialisation failure): the whole batch is done again."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class _Refused(Exception):
    """The server refused a statement of a pipelined transaction: which operation sent it is
    not known (its error surfaces where the pipeline is next read)."""

    def __init__(self, *, busy: bool = False) -> None:
        self.busy = busy  # it waited `stall_s` for a row: another transaction holds one


class PgWriter(GroupCommit):
    def __init__(
        self,
        url: str,
        *,
        batch_max: int = 256,
        lazy_window_s: float = 0.005,
        on_commit: Callable[[list[Published]], None] = lambda events: None,
        available: Callable[[], bool] = lambda: True,
        stall_s: float = 5.0,
    ) -> None:
        """`available`: whether the server is there as far as this daemon knows (its session):
        while it says no, a batch fails at once instead of waiting for a connection.
        `stall_s`: how long a statement of this writer waits for a row another transaction
        holds (`lock_timeout`) before its operation fails with StoreUnavailable (a daemon
        stopped in the middle of a transaction holds its rows until it goes on or the
        others end its transaction), and how long the server waits on this writer between two
        transactions' statements outside the pipeline
        (`idle_in_transaction_session_timeout`)."""
        super().__init__(
            name="postgres-writer",
            batch_max=batch_max,
            lazy_window_s=lazy_window_s,
            on_commit=on_commit,
        )
        self._url = url
        self._available = available
        self._stall_ms = max(1, round(stall_s * 1000))
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self.reconnects = 0
        self.deadlocks = 0  # batches the server rolled back to break a deadlock, done again

    async def start(self) -> None:
        self._conn = await self._open()
        self._start()

    async def _open(self) -> psycopg.AsyncConnection[Any]:
        conn = await connect(self._url, application_name=WRITER_NAME)
        try:  # a SET, not a startup option: pgbouncer passes it on in session mode
            await conn.execute(SERVER_KEEPALIVES.encode())  # several statements: simple protocol
            # The name the other daemons look for (adapters/postgres/stalls.py), whatever the
            # URL's `application_name` says.
            await conn.execute(f"SET application_name = '{WRITER_NAME}'")
            await conn.execute(f"SET lock_timeout = {self._stall_ms}")
            await conn.execute(f"SET idle_in_transaction_session_timeout = {self._stall_ms}")
        except BaseException:
            await conn.close()
            raise
        return conn

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
            self._conn = await self._open()
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"the database is unavailable: {reason(exc)}") from exc
        self.reconnects += 1
        log.info("store_reconnected", reconnects=self.reconnects)
        return self._conn

    async def apply(self, batch: Sequence[Item]) -> tuple[list[Outcome], list[Published]]:
        outcomes: dict[int, Outcome] = {}
        committed: list[Published] = []
        todo = list(range(len(batch)))
        # Operations that failed after others in their transaction: those were rolled back
        # with it, and may not do the same again (another daemon's commit came in between),
        # so the failure is decided again, alone, once the others are committed (a refused
        # Idempotency-Key must name the run that was stored, not a neighbour's that was not).
        later: list[int] = []
        pipelined = True
        # Once a statement waited `stall_s` for a row (another daemon stopped in the middle
        # of a transaction holds it), the next attempts wait for rows only briefly: the
        # operation that needs that row fails alone, without costing its neighbours (and
        # the renewal of leases queued behind them) `stall_s` again.
        brief = False
        retries = 0
        while todo or later:
            if not todo:
                todo = [later.pop(0)]  # alone: first in its transaction, its failure stands
            try:
                results, events = await self._attempt([batch[i].op for i in todo], pipelined, brief)
            except _OpFailed as failed:
                failing = todo.pop(failed.index)
                if failed.index == 0 or failed.final:  # decided on what was committed
                    outcomes[failing] = (None, failed.error)
                else:
                    later.append(failing)
                continue
            except _Refused as refused:
                pipelined = False  # one statement at a time: the failing operation is named
                brief = brief or refused.busy
                continue
            except _Deadlocked as deadlocked:
                self.deadlocks += 1
                retries += 1
                if retries > RETRIES:
                    raise StoreUnavailable(
                        f"the database is unavailable: {deadlocked.reason}"
                    ) from None
                log.info("store_batch_retried", reason=deadlocked.reason, retries=retries)
                continue
            for i, result in zip(todo, results, strict=True):
                outcomes[i] = (result, None)
            committed += events
            todo = []
        return [outcomes[i] for i in range(len(batch))], committed

    async def _attempt(
        self, ops: list[Op], pipelined: bool, brief: bool = False
    ) -> tuple[list[Any], list[Published]]:
        """One transaction of `ops`; _OpFailed, _Refused or _Deadlocked (all rolled back)
        when it fails. Pipelined, a statement is sent without waiting for the one before: the
        transaction waits on the server only where an operation reads and at the COMMIT.
        `brief`: rows are waited for `BRIEF_WAIT_MS` at most (one was held `stall_s`)."""
        conn = await self._connection()
        try:
            if pipelined:
                async with conn.pipeline():
                    return await self._transaction(conn, ops, pipelined, brief)
            return await self._transaction(conn, ops, pipelined, brief)
        except _OpFailed:
            await self._roll_back(conn)
            raise
        except psycopg.Error as exc:
            if exc.sqlstate in _ROLLED_BACK:
                await self._roll_back(conn)
                raise _Deadlocked(reason(exc)) from exc
            if conn.broken or conn.closed or isinstance(exc, psycopg.InterfaceError):
                await self._discard(conn)
                raise StoreUnavailable(f"the database is unavailable: {reason(exc)}") from exc
            if pipelined:
                await self._roll_back(conn)
                raise _Refused(busy=exc.sqlstate == _LOCK_TIMEOUT) from exc
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
        self, conn: psycopg.AsyncConnection[Any], ops: list[Op], pipelined: bool, brief: bool
    ) -> tuple[list[Any], list[Published]]:
        await conn.execute("BEGIN")
        if brief:
            await conn.execute(f"SET LOCAL lock_timeout = {BRIEF_WAIT_MS}")
        tx = PgTx(conn)
        # The leases the batch's operations are fenced by, read and locked at once, with
        # BEGIN in one round trip (no other transaction changes them until this one ends).
        leased = list({op.lease.run_id for op in ops if isinstance(op, Fenced)})
        if leased:
            fences = await conn.execute(FENCES, (leased,))
            tx.fences = dict.fromkeys(leased)
            for run_id, owner, epoch in await fences.fetchall():
                tx.fences[run_id] = (owner, epoch)
        results = []
        for index, op in enumerate(ops):
            try:
                results.append(await op(tx))
            except psycopg.Error as exc:
                if exc.sqlstate == _LOCK_TIMEOUT and not pipelined:
                    busy = StoreUnavailable(
                        "the database is unavailable: a row this write needs is held by "
                        f"another transaction that has not ended ({reason(exc)}); try again"
                    )
                    raise _OpFailed(index, busy, final=True) from exc
                if pipelined or isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
                    raise  # maybe another operation's statement; or the connection
                raise _OpFailed(index, exc) from exc
            except Exception as exc:
                raise _OpFailed(index, exc) from exc
        await tx.flush()
        await conn.execute("COMMIT")  # pipelined: sent with the flush, no round trip between
        base, events = await tx.numbered()
        if tx.wants_head:
            results = [numbered(result, base) for result in results]
        return results, events

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
