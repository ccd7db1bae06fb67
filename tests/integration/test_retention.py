"""Retention (DESIGN §12, issue 18): checkpoints nothing resumes from are pruned (a cancelled
run's all, a failed run's all but its newest, and it still resumes from the failure), and
finished runs past `[storage] finished_run_retention_days` are deleted with everything kept
for them; unfinished runs stay. The duty's pass is called directly with a chosen `now`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from adapters.http.keys import STORE_WRITER
from adapters.sql.retention import Retention
from tests.conftest import SQL
from tests.integration.conftest import ApiFactory, P, linear

ON_BOTH_STORES = True


def rows(store_sql: SQL, table: str, column: str, run_id: str) -> int:
    return int(store_sql(f"SELECT COUNT(*) FROM {table} WHERE {column} = ?", run_id)[0][0])


async def test_checkpoints_nothing_resumes_from_go_and_old_finished_runs_are_deleted(
    make_api: ApiFactory, store_sql: SQL
) -> None:
    api = await make_api()
    await api.graph(linear("ok", "count", "count", "count"))
    await api.graph(linear("flaky", "count", "count", "fail", n3={"fail_times": 1}))
    await api.graph(linear("held", "count", "gate", "count"))
    completed = await api.start("ok")
    failed = await api.start("flaky")
    await api.idle()
    cancelled = await api.start("held")
    await api.arrived()
    await api.call("POST", f"{P}/runs/{cancelled}/cancel", status=200)
    paused = await api.start("held")
    await api.call("POST", f"{P}/runs/{paused}/pause", status=200)
    api.kit.gate("default").set()
    await api.idle()
    assert (await api.run(failed))["status"] == "failed"
    assert rows(store_sql, "checkpoints", "thread_id", failed) > 1
    assert rows(store_sql, "checkpoints", "thread_id", cancelled) > 0

    retention = Retention(api.client.app[STORE_WRITER], 7, keep_checkpoints=1)
    now = datetime.now(UTC)
    done = await retention.pass_once(now)
    assert done.runs_deleted == 0  # none finished a week ago
    assert done.checkpoints_pruned == 2
    assert rows(store_sql, "checkpoints", "thread_id", cancelled) == 0
    assert rows(store_sql, "writes", "thread_id", cancelled) == 0
    assert rows(store_sql, "checkpoints", "thread_id", failed) == 1
    assert rows(store_sql, "checkpoints", "thread_id", completed) == 1
    assert (await retention.pass_once(now)).checkpoints_pruned == 0  # nothing more to prune

    # The failed run still continues from its failure: what completed does not run again.
    await api.call("POST", f"{P}/runs/{failed}/execute", status=200)
    await api.idle()
    assert (await api.run(failed))["status"] == "completed"
    assert api.kit.count(failed, "n1") == 1
    assert api.kit.count(failed, "n2") == 1
    assert api.kit.count(failed, "n3") == 2
    # So does a cancelled one, from the start (its checkpoints were of no use to it).
    await api.call("POST", f"{P}/runs/{cancelled}/execute", status=200)
    await api.idle()
    assert (await api.run(cancelled))["status"] == "completed"

    paused_states = rows(store_sql, "node_states", "run_id", paused)
    paused_checkpoints = rows(store_sql, "checkpoints", "thread_id", paused)
    done = await retention.pass_once(now + timedelta(days=8))
    assert done.runs_deleted == 3
    for run_id in (completed, failed, cancelled):
        await api.call("GET", f"{P}/runs/{run_id}", status=404)
        for table, column in (
            ("runs", "id"),
            ("node_states", "run_id"),
            ("checkpoints", "thread_id"),
            ("writes", "thread_id"),
        ):
            assert rows(store_sql, table, column, run_id) == 0, (table, run_id)
    assert (await api.run(paused))["status"] == "paused"  # not finished: kept
    assert rows(store_sql, "node_states", "run_id", paused) == paused_states
    assert rows(store_sql, "checkpoints", "thread_id", paused) == paused_checkpoints
    listed = await api.call("GET", f"{P}/runs", status=200)
    assert [r["id"] for r in listed] == [paused]


async def test_no_retention_keeps_every_finished_run(make_api: ApiFactory, store_sql: SQL) -> None:
    api = await make_api()
    await api.graph(linear("ok", "count"))
    run_id = await api.start("ok")
    await api.idle()
    retention = Retention(api.client.app[STORE_WRITER], 0, keep_checkpoints=1)
    done = await retention.pass_once(datetime.now(UTC) + timedelta(days=10_000))
    assert done.runs_deleted == 0
    assert (await api.run(run_id))["status"] == "completed"


async def test_expired_idempotency_keys_are_deleted_and_live_ones_kept(
    make_api: ApiFactory, store_sql: SQL
) -> None:
    api = await make_api(CORTEXD_RUNS__IDEMPOTENCY_TTL_S="3600")
    await api.graph(linear("ok", "count"))
    for key in ("k1", "k2"):
        response = await api.client.post(
            f"{P}/runs", json={"workflow_id": "ok"}, headers={"Idempotency-Key": key}
        )
        assert response.status == 201
    await api.idle()
    retention = Retention(api.client.app[STORE_WRITER], 0, keep_checkpoints=1)
    assert (await retention.pass_once(datetime.now(UTC))).keys_expired == 0
    done = await retention.pass_once(datetime.now(UTC) + timedelta(hours=2))
    assert done.keys_expired == 2
    assert store_sql("SELECT COUNT(*) FROM idempotency_keys")[0][0] == 0
    assert done.runs_deleted == 0  # the runs stay
