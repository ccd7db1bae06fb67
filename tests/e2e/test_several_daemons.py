"""Several `cortexd serve` processes on one store (DESIGN §8), with real signals: they share the
queue, take over each other's runs, obey each other's commands and serve one event log. Each
test runs on one SQLite file and on one PostgreSQL database."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from tests.support.process import DaemonProcess, until
from tests.support.stores import run_sql

pytestmark = pytest.mark.e2e
P = "/api/projects/acme/workflows"
NODES = ("n1", "n2", "n3", "n4", "n5")
LEASE_S = 3
SHORT = ("n1", "n2", "n3", "n4", "n5", "n6")
FINISHED = "workflow.run.completed"


class Shared:
    """The store the daemons share, read directly (as an operator would, with sqlite3 or psql)."""

    def __init__(self, storage: dict[str, str]) -> None:
        self.storage = storage

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return run_sql(self.storage, sql, params)

    def events(self, kind: str | None = None) -> list[tuple[int, str, dict[str, Any]]]:
        rows = self.query("SELECT seq, type, body FROM events ORDER BY seq")
        return [(seq, t, json.loads(body)) for seq, t, body in rows if kind in (None, t)]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Shared:
    if request.param == "postgres":
        return Shared({"url": request.getfixturevalue("postgres_url")})
    return Shared({"path": str(tmp_path / "shared.db")})


@pytest.fixture
def pair(tmp_path: Path, shared: Shared) -> Iterator[tuple[DaemonProcess, DaemonProcess]]:
    """Two daemons on one store, each with its own port, config and logs."""
    made = []
    for name in ("a", "b"):
        workdir = tmp_path / name
        workdir.mkdir()
        made.append(
            DaemonProcess(
                workdir,
                storage=shared.storage,
                # Delays execute in place (not parked): the tests are about runs in flight.
                execution={
                    "max_concurrent_runs": 12,
                    "shutdown_grace_s": 2,
                    "lease_s": LEASE_S,
                    "park_after_s": 3600,
                },
                logging={"format": "json"},
            )
        )
    a, b = made
    yield a, b
    for daemon in (a, b):
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.signal(signal.SIGCONT)
        daemon.stop()


def chain(graph_id: str, seconds: float, nodes: tuple[str, ...] = NODES) -> dict[str, Any]:
    return {
        "id": graph_id,
        "name": graph_id,
        "nodes": [
            {"id": n, "x": i * 100.0, "y": 0.0, "type": "delay", "config": {"seconds": seconds}}
            for i, n in enumerate(nodes)
        ],
        "edges": [{"source": x, "target": y} for x, y in itertools.pairwise(nodes)],
    }


def completions(db: Shared) -> Counter[tuple[str, str]]:
    return Counter(
        (body["run_id"], body["nodeState"]["node_id"])
        for _, _, body in db.events("workflow.node_state.updated")
        if body["nodeState"]["status"] == "completed"
    )


def starters(db: Shared) -> set[str]:
    """The instances that began executing a run (their claims' pending -> running events)."""
    return {
        body["run"]["owner"]
        for _, _, body in db.events("workflow.run.updated")
        if body["run"]["status"] == "running" and body["run"].get("owner")
    }


def status_of(daemon: DaemonProcess, run_id: str) -> str:
    status: str = daemon.request("GET", f"{P}/runs/{run_id}")[1]["status"]
    return status


def instance(daemon: DaemonProcess) -> str:
    body = daemon.request("GET", "/readyz")[1]
    name: str = body["instance"]
    return name


def submit(daemon: DaemonProcess, graph_id: str, count: int) -> list[str]:
    ids = []
    for i in range(count):
        status, run = daemon.request(
            "POST", f"{P}/runs", {"workflow_id": graph_id, "input": {"i": i}}
        )
        assert status == 201, run
        ids.append(run["id"])
    return ids


def assert_gap_free(db: Shared) -> None:
    seqs = [s for (s,) in db.query("SELECT seq FROM events ORDER BY seq")]
    assert seqs == list(range(1, len(seqs) + 1)), "the event log has a gap"


class Watcher:
    """A WebSocket client of one daemon, from seq 0, receiving on a thread of its own."""

    def __init__(self, daemon: DaemonProcess) -> None:
        self.url = f"{daemon.url}/api/projects/acme/ws?since=0"
        self.received: list[dict[str, Any]] = []
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._watch()), daemon=True)
        self._thread.start()
        assert self.connected.wait(30), "the WebSocket did not connect"

    async def _watch(self) -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(self.url, heartbeat=5) as ws,
        ):
            self.connected.set()
            while not self._stop.is_set():
                try:
                    message = await ws.receive(timeout=0.2)
                except TimeoutError:
                    continue
                if message.type is not aiohttp.WSMsgType.TEXT:
                    raise AssertionError(f"the socket ended: {message}")
                self.received.append(json.loads(message.data))

    def last_seq(self) -> int:
        return self.received[-1]["seq"] if self.received else 0

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        assert not self._thread.is_alive()


def test_two_daemons_share_the_work_and_one_survives_the_others_kill_9(
    pair: tuple[DaemonProcess, DaemonProcess], shared: Shared
) -> None:
    a, b = pair
    a.start()
    b.start()
    db = shared
    ids = {instance(a), instance(b)}
    assert len(ids) == 2
    assert a.request("POST", f"{P}/graphs", chain("five", 0.3))[0] == 201
    watcher = Watcher(b)  # the survivor's client: it must see every event of every run once
    runs = submit(a, "five", 20) + submit(b, "five", 20)
    until(lambda: len(completions(db)) >= 40, what="40 nodes completed")
    before = set(completions(db))
    a.signal(signal.SIGKILL)
    assert a.wait(10) == -signal.SIGKILL
    killed_at = time.monotonic()

    until(
        lambda: all(status_of(b, r) == "completed" for r in runs),
        timeout=LEASE_S + 60,
        what="every run completed by the survivor",
    )
    took = time.monotonic() - killed_at
    done = completions(db)
    for run_id in runs:
        for node in NODES:
            assert done[(run_id, node)] == 1, (run_id, node, "completed twice or never")
        states = b.request("GET", f"{P}/runs/{run_id}/status")[1]["node_states"]
        for state in states:
            expected = {1} if (run_id, state["node_id"]) in before else {1, 2}
            assert state["attempts"] in expected, (run_id, state)
    assert starters(db) == ids, "both daemons executed runs"
    assert db.query("SELECT COUNT(*) FROM runs WHERE owner IS NOT NULL") == [(0,)]
    assert_gap_free(db)
    recovered = [r for (r,) in db.query("SELECT recoveries FROM runs") if r]
    assert recovered, "the killed daemon's runs were taken back"
    assert "recovering_runs" in b.log()
    stored = db.events()
    until(lambda: watcher.last_seq() >= stored[-1][0], what="the client has the whole log")
    watcher.stop()
    got = [(e["seq"], e["type"], e.get("run_id")) for e in watcher.received]
    final = [(seq, t, body.get("run_id")) for seq, t, body in db.events()]
    # Up to the last event of the runs at least, and nothing but what is stored, in order.
    assert got == final[: len(got)], "the survivor's client missed, repeated or reordered one"
    print(f"all runs completed {took:.1f} s after the kill (lease_s = {LEASE_S})")


def test_a_daemon_stopped_past_its_lease_loses_its_runs_and_writes_nothing_after(
    pair: tuple[DaemonProcess, DaemonProcess], shared: Shared
) -> None:
    a, b = pair
    a.start()
    db = shared
    assert a.request("POST", f"{P}/graphs", chain("slow", 1.0, ("n1", "n2", "n3")))[0] == 201
    runs = submit(a, "slow", 4)
    until(lambda: all(status_of(a, r) == "running" for r in runs), what="running on a")
    b.start()
    a_id, b_id = instance(a), instance(b)
    if "path" in db.storage:
        # On SQLite a daemon stopped in the middle of a write holds the file's write lock,
        # and no daemon can write until it goes on (or, under systemd, its watchdog ends it:
        # docs/operations.md): here it is stopped outside a write.
        stop_outside_a_write(a, Path(db.storage["path"]))
    else:  # on PostgreSQL wherever it is (in a transaction: tested below)
        stop(a)
    until(
        lambda: db.query("SELECT DISTINCT owner FROM runs WHERE status = 'running'") == [(b_id,)],
        timeout=LEASE_S * 3 + 30,
        what="b took the stopped daemon's runs",
    )
    a.signal(signal.SIGCONT)
    until(lambda: all(status_of(b, r) == "completed" for r in runs), what="runs completed")
    until(lambda: "leases_lost" in a.log(), what="a noticed")
    done = completions(db)
    assert all(done[(r, n)] == 1 for r in runs for n in ("n1", "n2", "n3")), done
    assert a.request("GET", "/readyz")[0] == 200  # it serves on
    assert a_id in a.log()  # its lines name it
    assert b_id != a_id
    assert_gap_free(db)


def stop(daemon: DaemonProcess) -> None:
    """SIGSTOP, and until the process is stopped (the signal is not waited for)."""
    assert daemon.proc is not None
    daemon.signal(signal.SIGSTOP)
    stat = Path(f"/proc/{daemon.proc.pid}/stat")
    until(lambda: stat.read_text().rsplit(")", 1)[1].split()[0] == "T", what="stopped")


def stop_outside_a_write(daemon: DaemonProcess, database: Path) -> None:
    """Stop the daemon at a moment it holds no write lock of the SQLite file (bounded)."""
    for _ in range(20):
        stop(daemon)
        try:  # the other daemon's writes are short: waited for; the stopped one's never end
            with sqlite3.connect(database, timeout=5, isolation_level=None) as conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:  # database is locked: by the stopped daemon
            daemon.signal(signal.SIGCONT)
            time.sleep(0.1)
    raise AssertionError("the daemon was in a write each of 20 times it was stopped")


@pytest.mark.parametrize(
    "shared", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_a_daemon_stopped_inside_a_write_transaction_loses_its_runs_all_the_same(
    pair: tuple[DaemonProcess, DaemonProcess], shared: Shared
) -> None:
    """On PostgreSQL a daemon stopped in the middle of a write transaction holds the rows of
    its runs that the transaction fenced; the others end that transaction once it has been
    open for a lease, and take the runs. It is stopped there on purpose: a run's row is held
    here until its writer waits for it, the daemon is stopped, and the row is let go (its
    writer's transaction now holds it)."""
    a, b = pair
    a.start()
    db = shared
    assert a.request("POST", f"{P}/graphs", chain("slow", 1.0, ("n1", "n2", "n3")))[0] == 201
    runs = submit(a, "slow", 4)
    until(lambda: all(status_of(a, r) == "running" for r in runs), what="running on a")
    b.start()
    a_id, b_id = instance(a), instance(b)
    stop_inside_a_transaction(a, db.storage["url"], runs[0])
    until(
        lambda: db.query("SELECT DISTINCT owner FROM runs WHERE status = 'running'") == [(b_id,)],
        timeout=LEASE_S * 3 + 30,
        what="b took the stopped daemon's runs, the one its transaction holds included",
    )
    assert "stalled_writer_ended" in b.log()
    a.signal(signal.SIGCONT)
    until(lambda: all(status_of(b, r) == "completed" for r in runs), what="runs completed")
    until(lambda: "leases_lost" in a.log(), what="a noticed")
    done = completions(db)
    assert all(done[(r, n)] == 1 for r in runs for n in ("n1", "n2", "n3")), done
    assert a.request("GET", "/readyz")[0] == 200  # it serves on, with a writer connected again
    assert a_id != b_id
    assert_gap_free(db)


def waits_for(probe: psycopg.Connection[Any], pid: int) -> bool:
    """Whether one server process waits for a lock the process `pid` holds."""
    query = "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))"
    return probe.execute(query, (pid,)).fetchone() == (1,)


def stop_inside_a_transaction(daemon: DaemonProcess, url: str, run_id: str) -> None:
    """Stop the daemon while its writer's transaction holds the run's row (bounded tries)."""
    for _ in range(5):
        with (
            psycopg.connect(url, autocommit=True) as held,
            psycopg.connect(url, autocommit=True) as probe,
        ):
            held.execute("BEGIN")
            held.execute("SELECT id FROM runs WHERE id = %s FOR UPDATE", (run_id,))
            me = held.info.backend_pid
            # The daemon's next write of the run (a node's end) waits for the row: its
            # writer's transaction is open, and will hold the row once it has it.
            until(partial(waits_for, probe, me), what="the daemon's writer waits for the row")
            stop(daemon)
            held.execute("ROLLBACK")  # the stopped daemon's transaction takes the row
            try:
                probe.execute("SELECT id FROM runs WHERE id = %s FOR UPDATE NOWAIT", (run_id,))
            except psycopg.errors.LockNotAvailable:
                return  # held by the stopped daemon's open transaction
            # Its wait ran out (lock_timeout) before it was stopped: again.
            daemon.signal(signal.SIGCONT)
    raise AssertionError("the daemon could not be stopped inside a transaction in 5 tries")


def test_commands_given_to_one_daemon_act_on_the_run_the_other_executes(
    pair: tuple[DaemonProcess, DaemonProcess], shared: Shared
) -> None:
    a, b = pair
    a.start()
    db = shared
    assert a.request("POST", f"{P}/graphs", chain("long", 30.0, ("n1", "n2")))[0] == 201
    # Six 2 s nodes: still running when b is up and asked to pause it, even on a busy machine
    # where b's start takes seconds (three 1 s nodes had finished by then).
    assert a.request("POST", f"{P}/graphs", chain("short", 2.0, SHORT))[0] == 201
    [long_run] = submit(a, "long", 1)
    [short_run] = submit(a, "short", 1)
    until(lambda: status_of(a, long_run) == status_of(a, short_run) == "running", what="running")
    b.start()

    # Cancel through b: a stops the node at once, and nothing starts after.
    asked = time.time()
    status, cancelled = b.request("POST", f"{P}/runs/{long_run}/cancel")
    assert (status, cancelled["status"]) == (200, "cancelled")
    until(lambda: f'"run_id": "{long_run}"' in _stopped(a), timeout=10, what="a stopped it")
    stopped = json.loads(_stopped(a).splitlines()[-1])["timestamp"]
    print(f"cancel through b stopped the node on a {_since(asked, stopped):.3f} s after")
    assert node_statuses(b, long_run) == {"n1": "cancelled", "n2": "idle"}

    # Pause through b: the node in flight finishes, no new one starts; resume through b.
    assert b.request("POST", f"{P}/runs/{short_run}/pause")[0] == 200
    until(  # drained: the node in flight finished, and a let go of the run
        lambda: (
            db.query("SELECT status, owner FROM runs WHERE id = ?", (short_run,))
            == [("paused", None)]
        ),
        timeout=10,
        what="a drained the paused run",
    )
    paused = node_statuses(a, short_run)
    assert list(paused.values()).count("completed") >= 1
    assert "running" not in paused.values(), paused
    assert b.request("POST", f"{P}/runs/{short_run}/resume")[0] == 200
    until(lambda: status_of(a, short_run) == "completed", what="resumed run completed")
    done = completions(db)
    assert all(done[(short_run, n)] == 1 for n in SHORT)


def _since(start: float, stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() - start


def node_statuses(daemon: DaemonProcess, run_id: str) -> dict[str, str]:
    states = daemon.request("GET", f"{P}/runs/{run_id}/status")[1]["node_states"]
    return {s["node_id"]: s["status"] for s in states}


def _stopped(daemon: DaemonProcess) -> str:
    return "\n".join(line for line in daemon.log().splitlines() if "execution_stopped" in line)


def test_a_websocket_on_one_daemon_gets_every_event_of_runs_the_other_executes(
    pair: tuple[DaemonProcess, DaemonProcess], shared: Shared
) -> None:
    a, b = pair
    a.start()
    b.start()
    db = shared
    assert a.request("POST", f"{P}/graphs", chain("quick", 0.05, ("n1", "n2", "n3")))[0] == 201
    runs: list[str] = []

    async def watch() -> list[dict[str, Any]]:
        received: list[dict[str, Any]] = []
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"{b.url}/api/projects/acme/ws?since=0") as ws,
        ):
            # Through both: each daemon commits between the other's commits, so B's own events
            # come past gaps that only its tail can fill.
            for _ in range(5):
                runs.extend(await asyncio.to_thread(submit, a, "quick", 2))
                runs.extend(await asyncio.to_thread(submit, b, "quick", 2))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                finished = {e.get("run_id") for e in received if e["type"] == FINISHED}
                if runs and finished >= set(runs):
                    break
                message = await ws.receive(timeout=30)
                if message.type is not aiohttp.WSMsgType.TEXT:
                    break
                received.append(json.loads(message.data))
        return received

    received = asyncio.run(watch())
    stored = [s for (s,) in db.query("SELECT seq FROM events ORDER BY seq")]
    seqs = [e["seq"] for e in received]
    assert seqs == sorted(set(seqs)), "out of order or duplicated"
    assert seqs == stored[: len(seqs)], "a gap, or not what is stored"
    assert instance(a) in starters(db) or instance(b) in starters(db)


def test_sinks_deliver_each_event_once_per_database_and_move_to_the_survivor(
    pair: tuple[DaemonProcess, DaemonProcess], shared: Shared
) -> None:
    a, b = pair
    a.start()
    b.start()
    db = shared
    assert a.request("POST", f"{P}/graphs", chain("q", 0.05, ("n1", "n2")))[0] == 201
    first = submit(a, "q", 5) + submit(b, "q", 5)
    until(lambda: all(status_of(a, r) == "completed" for r in first), what="first runs")
    holder, other = (a, b) if "duties_taken" in a.log() else (b, a)
    holder.stop()  # graceful: its sinks deliver to the end, then the other daemon takes over
    survivor = other
    until(lambda: "duties_taken" in survivor.log(), timeout=LEASE_S + 30, what="taken over")
    second = submit(survivor, "q", 5)
    until(lambda: all(status_of(survivor, r) == "completed" for r in second), what="second runs")
    run_events = [
        s
        for (s,) in db.query("SELECT seq FROM events WHERE type LIKE 'workflow.run.%' ORDER BY seq")
    ]

    def logged(daemon: DaemonProcess) -> list[int]:
        seqs = []
        for start in range(1, daemon.starts + 1):
            path = daemon.workdir / f"daemon-{start}.log"
            for line in path.read_text(errors="replace").splitlines():
                if '"workflow_event"' in line:
                    seqs.append(json.loads(line)["seq"])
        return seqs

    until(lambda: len(logged(a)) + len(logged(b)) >= len(run_events), what="all logged")
    together = Counter(logged(a) + logged(b))
    assert sorted(together) == run_events, "an event not logged"
    assert set(together.values()) == {1}, "an event logged by both daemons"


def test_a_restarted_daemon_takes_back_its_own_runs_without_waiting_out_the_lease(
    tmp_path: Path, shared: Shared
) -> None:
    long_lease = 600  # far longer than this test may take: only proof of death frees the runs
    daemon = DaemonProcess(
        tmp_path,
        storage=shared.storage,
        execution={"max_concurrent_runs": 8, "lease_s": long_lease},
        logging={},
    )
    try:
        daemon.start()
        assert daemon.request("POST", f"{P}/graphs", chain("five", 0.3))[0] == 201
        runs = submit(daemon, "five", 6)
        until(lambda: len(completions(shared)) >= 6, what="some nodes completed")
        before = instance(daemon)
        daemon.signal(signal.SIGKILL)
        assert daemon.wait(10) == -signal.SIGKILL
        daemon.start()
        assert instance(daemon) != before  # a new instance id at every start
        until(lambda: all(status_of(daemon, r) == "completed" for r in runs), timeout=60)
        done = completions(shared)
        assert all(done[(r, n)] == 1 for r in runs for n in NODES)
        assert {r for (r,) in shared.query("SELECT recoveries FROM runs")} == {1}
    finally:
        daemon.stop()


def test_a_schedule_fires_once_per_time_across_two_daemons_and_a_kill_9(
    pair: tuple[DaemonProcess, DaemonProcess], shared: Shared
) -> None:
    """Missed times are caught up (catchup "all"): the daemon holding the duties fires them.
    Then that daemon is killed, and the schedule's row is put back as it was before the
    firing (a stale decision, a restored row): the survivor takes the duties over and fires
    the same times again, and the unique key leaves every time with its one run."""
    a, b = pair
    a.start()
    b.start()
    db = shared
    assert a.request("POST", f"{P}/graphs", chain("quick", 0.0, ("n1",)))[0] == 201
    later = datetime.now(UTC) + timedelta(hours=12)  # no time of it comes due by itself
    schedule = {
        "id": "daily",
        "workflow_id": "quick",
        "cron": f"{later.minute} {later.hour} * * *",
        "catchup": "all",
    }
    status, made = a.request("POST", f"{P}/schedules", schedule)
    assert status == 201, made
    [(next_run,)] = db.query("SELECT next_run_at FROM schedules WHERE id = 'daily'")
    stale = next_run - 20 * 86400.0  # a downtime of 20 days: 20 missed times
    db.query("UPDATE schedules SET next_run_at = ? WHERE id = 'daily'", (stale,))

    def fired() -> list[str]:
        rows = db.query("SELECT body FROM runs")
        triggers = [json.loads(body)["trigger"] for (body,) in rows]
        return [t["scheduled_for"] for t in triggers if t.get("id") == "daily"]

    until(lambda: len(fired()) >= 20, what="20 runs fired")
    first = fired()
    [(holder,)] = db.query("SELECT owner FROM singletons WHERE name = 'duties'")
    victim, survivor = (a, b) if holder == instance(a) else (b, a)
    victim.signal(signal.SIGKILL)
    assert victim.wait(10) == -signal.SIGKILL
    db.query("UPDATE schedules SET next_run_at = ? WHERE id = 'daily'", (stale,))
    until(
        lambda: db.query("SELECT next_run_at FROM schedules WHERE id = 'daily'") != [(stale,)],
        timeout=LEASE_S * 3 + 30,
        what="the survivor took the duties and fired the stale row",
    )
    [(now_holder,)] = db.query("SELECT owner FROM singletons WHERE name = 'duties'")
    assert now_holder == instance(survivor)
    times = fired()
    assert len(times) == 20, "a time got a second run"
    assert sorted(times) == sorted(first)
    assert len(set(times)) == 20
    assert db.query("SELECT COUNT(*) FROM schedule_firings") == [(20,)]
    ids = [r["id"] for r in survivor.request("GET", f"{P}/runs")[1]]
    until(
        lambda: all(status_of(survivor, r) == "completed" for r in ids),
        what="every scheduled run completed",
    )
    assert "schedule_fired" in victim.log()


def test_a_kill_9_as_a_schedule_fires_leaves_each_time_with_one_run(
    pair: tuple[DaemonProcess, DaemonProcess], shared: Shared
) -> None:
    """100 missed times come due; the daemon is killed as soon as it logs its firing (the
    runs just created, executing or queued), and another daemon is started on the store:
    every time has exactly one run, and every run completes."""
    a, b = pair
    a.start()
    db = shared
    assert a.request("POST", f"{P}/graphs", chain("quick", 0.05, ("n1", "n2")))[0] == 201
    later = datetime.now(UTC) + timedelta(hours=12)
    schedule = {
        "id": "daily",
        "workflow_id": "quick",
        "cron": f"{later.minute} {later.hour} * * *",
        "catchup": "all",
    }
    assert a.request("POST", f"{P}/schedules", schedule)[0] == 201
    back = (100 * 86400.0,)
    db.query("UPDATE schedules SET next_run_at = next_run_at - ? WHERE id = 'daily'", back)
    until(lambda: "schedule_fired" in a.log(), what="a fired the missed times")
    a.signal(signal.SIGKILL)
    assert a.wait(10) == -signal.SIGKILL
    # A firing is one transaction: all of its 100 times, each with its run, or none.
    assert db.query("SELECT COUNT(*) FROM schedule_firings") == [(100,)]
    unfinished = db.query("SELECT COUNT(*) FROM runs WHERE status != 'completed'")[0][0]

    b.start()
    until(
        lambda: db.query("SELECT COUNT(*) FROM runs WHERE status = 'completed'") == [(100,)],
        timeout=LEASE_S * 3 + 60,
        what="every scheduled run completed",
    )
    times = [
        json.loads(body)["trigger"]["scheduled_for"]
        for (body,) in db.query("SELECT body FROM runs")
    ]
    assert len(times) == 100
    assert len(set(times)) == 100
    assert db.query("SELECT COUNT(*) FROM schedule_firings") == [(100,)]
    print(f"killed with {unfinished} of the 100 scheduled runs unfinished")


def test_one_key_makes_one_run_across_daemons_and_a_wait_wakes_on_the_others_work(
    tmp_path: Path, shared: Shared
) -> None:
    """Idempotency-Key races through both daemons at once; `Prefer: wait` on a daemon with no
    free slot is answered when the other daemon, which executes the run, finishes it."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    execution = {"lease_s": LEASE_S, "shutdown_grace_s": 1, "park_after_s": 3600}
    a = DaemonProcess(
        tmp_path / "a", storage=shared.storage, execution={**execution, "max_concurrent_runs": 1}
    )
    b = DaemonProcess(tmp_path / "b", storage=shared.storage, execution=execution)
    try:
        a.start()
        assert a.request("POST", f"{P}/graphs", chain("quick", 0.2, ("n1", "n2")))[0] == 201
        assert a.request("POST", f"{P}/graphs", chain("hold", 60.0, ("n1",)))[0] == 201
        [holding] = submit(a, "hold", 1)  # a, alone, takes it: its one slot is busy from now
        until(lambda: status_of(a, holding) == "running", what="a holds its only slot")
        b.start()

        answers: list[tuple[int, Any]] = []
        body = {"workflow_id": "quick", "input": {"order": 7}}

        def post(daemon: DaemonProcess) -> None:
            headers = {"Idempotency-Key": "order-7"}
            # A long timeout: on a loaded machine 16 racing requests take a while.
            answers.append(daemon.request("POST", f"{P}/runs", body, headers=headers, timeout=60))

        threads = [threading.Thread(target=post, args=(d,)) for d in (a, b) * 8]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
        assert len(answers) == 16, "a request got no answer"
        assert sorted(status for status, _ in answers) == [200] * 15 + [201]
        assert len({run["id"] for _, run in answers}) == 1
        assert shared.query("SELECT COUNT(*) FROM runs WHERE workflow_id = 'quick'") == [(1,)]

        # a's waiting request wakes on b's events, which reach a through the store.
        status, run = a.request(
            "POST", f"{P}/runs", {"workflow_id": "quick"}, timeout=60, headers={"Prefer": "wait=50"}
        )
        assert (status, run["status"]) == (201, "completed"), run
        owners = {
            event["run"]["owner"]
            for _, _, event in shared.events("workflow.run.updated")
            if event["run_id"] == run["id"] and event["run"].get("owner")
        }
        assert owners == {instance(b)}
    finally:
        for daemon in (a, b):
            daemon.stop()


def test_a_graphs_concurrency_limit_holds_across_two_daemons_per_key_in_order(
    pair: tuple[DaemonProcess, DaemonProcess], shared: Shared
) -> None:
    """At most `limit` runs of one customer execute at once on both daemons together, each
    customer's runs start in the order they were created, and all of them complete."""
    a, b = pair
    a.start()
    b.start()
    graph = chain("orders", 0.05, ("n1", "n2")) | {"concurrency": {"limit": 2, "key": "customer"}}
    assert a.request("POST", f"{P}/graphs", graph)[0] == 201
    created: dict[str, list[str]] = {c: [] for c in "xyz"}
    for i in range(24):  # through both daemons, customers interleaved
        daemon, customer = (a, b)[i % 2], "xyz"[i % 3]
        body = {"workflow_id": "orders", "input": {"customer": customer, "i": i}}
        status, run = daemon.request("POST", f"{P}/runs", body)
        assert status == 201, run
        created[customer].append(run["id"])
    every = [run_id for ids in created.values() for run_id in ids]
    until(
        lambda: all(status_of(a, r) == "completed" for r in every),
        timeout=60,
        what="every run completed",
    )
    customer_of = {run_id: c for c, ids in created.items() for run_id in ids}
    running: dict[str, set[str]] = {c: set() for c in created}
    most = dict.fromkeys(created, 0)
    started: dict[str, list[str]] = {c: [] for c in created}
    for _, _, event in shared.events():  # in commit order: what the store let run at once
        run = event.get("run")
        if run is None or run["id"] not in customer_of:
            continue
        customer = customer_of[run["id"]]
        if run["status"] == "running" and run["id"] not in running[customer]:
            running[customer].add(run["id"])
            started[customer].append(run["id"])
            most[customer] = max(most[customer], len(running[customer]))
        elif run["status"] == "completed":
            running[customer].discard(run["id"])
    assert max(most.values()) <= 2, most
    print(f"most runs of one customer at once: {most}")
    assert started == created  # first in, first out within each customer
    assert starters(shared) == {instance(a), instance(b)}, "both daemons executed runs"
    assert_gap_free(shared)
