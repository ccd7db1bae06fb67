"""Ending the transaction of another daemon's writer that stalled in the middle of it.

A daemon stopped (SIGSTOP, a frozen VM, a loop blocked for good) while its writer's transaction
is open keeps that transaction's locks for as long as it stays stopped: its runs' rows (the
fences of its writes, its renewal), maybe a graph's or the groups' advisory lock, and, between
its last statement and its COMMIT, the event log's head. Its session lives on, so it is not
dead, and its leases lapse; but the others pass over the rows it holds, and its runs would
never be taken back. The server cannot end such a transaction by itself: inside a pipeline the
backend is "active", waiting for the next message, not "idle in transaction", and
`transaction_timeout` is PostgreSQL 17's.

So before it renews its leases, each daemon ends (`pg_terminate_backend`, which rolls the
transaction back) the server process of any other daemon's writer that is in a transaction
and has been waiting for its client, with no statement sent, for `after_s`
(`lease_s` + `stall_s`): a live daemon sends its writer's next statement within
milliseconds. A writer waiting for a lock, for the disk or for a standby (synchronous
replication) waits for the server, not for its client, and is left alone. The stalled daemon,
when it goes on, finds its connection gone, connects again, and is fenced like any daemon that
lost its leases; a statement it had sent, never committed, is not stored.

A role may end only the server processes of roles whose rights it has, or any but a
superuser's with `pg_signal_backend`; it sees their transactions only with the same rights or
`pg_read_all_stats`. The query asks only for the processes it may end.
"""

from __future__ import annotations

from typing import Any

import psycopg
import structlog

from adapters.postgres.db import WRITER_NAME, reason

log = structlog.get_logger("cortexd.postgres")
WAIT_MS = 1000  # how long the server waits for an ended process to be gone

_END_STALLED = (
    "SELECT a.pid, pg_terminate_backend(a.pid, %s), "
    "extract(epoch from clock_timestamp() - a.state_change), host(a.client_addr) "
    "FROM pg_stat_activity a JOIN pg_roles r ON r.oid = a.usesysid "
    "WHERE a.datname = current_database() AND a.application_name = %s "
    "AND a.pid <> pg_backend_pid() AND a.pid <> %s "
    "AND a.xact_start IS NOT NULL AND a.wait_event_type = 'Client' "
    "AND a.wait_event = 'ClientRead' "
    "AND a.state_change < clock_timestamp() - make_interval(secs => %s) "
    "AND ((SELECT rolsuper FROM pg_roles WHERE rolname = current_user) OR (NOT r.rolsuper "
    "AND (pg_has_role(r.oid, 'USAGE') OR pg_has_role('pg_signal_backend', 'USAGE'))))"
)


async def end_stalled(conn: psycopg.AsyncConnection[Any], own_pid: int, after_s: float) -> int:
    """End the stalled writers of other daemons (see the module); how many are gone. A
    refusal of the server is logged, and nothing is ended: recovery goes on without it."""
    try:
        cursor = await conn.execute(_END_STALLED, (WAIT_MS, WRITER_NAME, own_pid, after_s))
        found = await cursor.fetchall()
    except (psycopg.OperationalError, psycopg.InterfaceError):
        raise
    except psycopg.Error as exc:
        log.warning("stalled_writers_not_ended", error=reason(exc))
        return 0
    for pid, done, waited, client in found:
        log.warning(
            "stalled_writer_ended" if done else "stalled_writer_still_there",
            backend_pid=pid,
            waited_for_client_s=round(float(waited), 1),
            client=client,
        )
    return sum(1 for _, done, _, _ in found if done)
