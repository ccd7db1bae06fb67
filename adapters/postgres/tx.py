"""One write transaction of the PostgreSQL writer (`PgTx`): the shared SQL's statements as
psycopg's, the fences it remembers, and its events, numbered in the log only by its last
statement (`_FLUSH`, see `adapters/postgres/writer.py`)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import psycopg

from adapters.sql.runs import FENCE
from adapters.sql.tx import JSON, Dialect
from core.domain import Event
from core.events import Published
from core.ports import Claim

CHANNEL = "cortexd_events"

POSTGRES = Dialect(
    now="extract(epoch from clock_timestamp())",
    indexed_by=lambda index: "",
    same=lambda a, b: f"{a} IS NOT DISTINCT FROM {b}",
    row_order="position",
    next_seq="(SELECT seq + 1 FROM event_head)",
    lock=" FOR UPDATE",
    take=" FOR UPDATE SKIP LOCKED",
    keep=" FOR KEY SHARE",
    queue_position="nextval('runs_queue')",
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


# The events of a transaction numbered after the head, the new head and the wake-up of the
# other daemons: one statement, the transaction's last before COMMIT (sent with it).
_FLUSH = (
    "WITH head AS (UPDATE event_head SET seq = seq + %s RETURNING seq), "
    "stored AS (INSERT INTO events (seq, project_id, run_id, type, timestamp, body) "
    "SELECT head.seq - %s + e.n, e.project_id, e.run_id, e.type, e.timestamp, e.body "
    "FROM head, unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[]) "
    "WITH ORDINALITY AS e(project_id, run_id, type, timestamp, body, n)) "
    f"SELECT seq, pg_notify('{CHANNEL}', seq::text) FROM head"
)
# A transaction that records no event but asked for the head (a claim of a run already
# running): read after its row locks are taken, so every event of those runs is at or before it.
_HEAD = "SELECT seq FROM event_head"
# The leases of a batch, locked against a change of owner until the transaction ends (a
# takeover waits for it, so a fenced write lands before the takeover or is refused).
FENCES = "SELECT id, owner, epoch FROM runs WHERE id = ANY(%s) ORDER BY id FOR SHARE"
_FENCE = pg_sql(FENCE) + " FOR SHARE"
# Advisory locks of `Tx.lock`: cortexd's class (the two-key form, apart from the session's).
_LOCK = "SELECT pg_advisory_xact_lock(1668248180, hashtext(%s))"  # 1668248180: "cort"


class PgTx:
    dialect = POSTGRES

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn
        # The events, numbered 1, 2, ... in the transaction until the flush numbers them in
        # the log: (project_id, run_id, type, timestamp, body without seq).
        self.rows: list[tuple[str, str | None, str, str, str]] = []
        self.payloads: list[JSON] = []
        self.wants_head = False
        self.locks: set[str] = set()  # the advisory locks taken (`lock`)
        self.head: psycopg.AsyncCursor[Any] | None = None  # the flush's, read after COMMIT
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
            row = await (await self.conn.execute(_FENCE, (run_id,))).fetchone()
            self.fences[run_id] = row
            return row
        return await (await self._run(sql, params)).fetchone()

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        return await (await self._run(sql, params)).fetchall()

    async def emit(self, event: Event) -> JSON:
        """The event with its place in this transaction as `seq`: the log's seq is known at
        the flush (nothing here orders by it: runs join the queue by `queue_position`)."""
        payload = event.to_json()
        del payload["seq"]
        body = json.dumps(payload, separators=(",", ":"))
        self.rows.append(
            (event.project_id, event.run_id, event.type.value, payload["timestamp"], body)
        )
        self.payloads.append(payload)
        return {"seq": len(self.rows), **payload}

    async def last_seq(self) -> int:
        """The events so far, counted in this transaction: `PgWriter` adds the head they were
        numbered after to what the operation returns."""
        self.wants_head = True
        return len(self.rows)

    async def lock(self, *name: str) -> None:
        key = "\x1f".join(name)
        if key not in self.locks:  # held to the transaction's end: once is enough
            self.locks.add(key)
            await self.conn.execute(_LOCK, (key,))

    async def flush(self) -> None:
        """Number the events after the log's head, taking its lock: the last statement before
        COMMIT, so the head is held only while the server stores them and commits."""
        if self.rows:
            columns = [list(column) for column in zip(*self.rows, strict=True)]
            count = len(self.rows)
            self.head = await self.conn.execute(_FLUSH, (count, count, *columns))
        elif self.wants_head:
            self.head = await self.conn.execute(_HEAD)

    async def numbered(self) -> tuple[int, list[Published]]:
        """After COMMIT: the head the events were numbered after, and the events."""
        if self.head is None:
            return 0, []
        row = await self.head.fetchone()
        assert row is not None  # the migration stores the head's one row
        base = int(row[0]) - len(self.rows)
        events = []
        for n, ((*_, body), payload) in enumerate(zip(self.rows, self.payloads, strict=True)):
            seq = base + n + 1
            events.append(Published({"seq": seq, **payload}, f'{{"seq":{seq},{body[1:]}'))
        return base, events


def numbered(result: Any, base: int) -> Any:
    """What an operation returned, with a claim's seq counted in its transaction made the
    log's (`PgTx.last_seq`)."""
    if isinstance(result, Claim):
        return replace(result, seq=base + result.seq)
    if isinstance(result, list) and result and isinstance(result[0], Claim):
        return [replace(claim, seq=base + claim.seq) for claim in result]
    return result
