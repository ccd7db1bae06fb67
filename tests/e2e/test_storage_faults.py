"""The store's file system fails under a real daemon (DESIGN §12, issue 18): a small tmpfs
filled up while runs execute and clients submit more, a file system that turns read-only,
and a database file replaced under the daemon (its writer cannot go on).

PostgreSQL's own faults (a server killed under load) are tests/e2e/test_postgres_faults.py.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.filesystems import break_ext4, ext4, fill, repair_ext4, tmpfs
from tests.support.process import DaemonProcess, until

pytestmark = pytest.mark.e2e
P = "/api/projects/acme/workflows"
ROOT = Path(__file__).resolve().parents[2]
NODES = ("n1", "n2", "n3")
IN_FLIGHT = 6
LEASE_S = 4  # upkeep every second: a run the store interrupted is released soon after


def gated_graph(tally: Path, gate: Path) -> dict[str, Any]:
    """n1 -> n2 -> n3; n2 waits for the gate file. Each node notes its start and end."""
    nodes = [
        {
            "id": n,
            "label": n,
            "x": i * 100.0,
            "y": 0.0,
            "type": "tally",
            "config": {"tally": str(tally), **({"gate": str(gate)} if n == "n2" else {})},
        }
        for i, n in enumerate(NODES)
    ]
    edges = [
        {"id": f"e{i}", "source": a, "target": b}
        for i, (a, b) in enumerate(itertools.pairwise(NODES))
    ]
    return {"id": "gated", "name": "gated", "nodes": nodes, "edges": edges}


def fault_daemon(workdir: Path, db: Path) -> DaemonProcess:
    """A daemon whose database is `db` (on the file system under test) while its config and
    log stay in `workdir` (a file system the test leaves alone)."""
    workdir.mkdir(parents=True, exist_ok=True)
    daemon = DaemonProcess(
        workdir,
        storage={"path": str(db)},
        execution={"max_concurrent_runs": 8, "shutdown_grace_s": 2, "lease_s": LEASE_S},
        plugins={"modules": ["tests.support.fault_nodes"]},
        logging={"format": "json"},
    )
    daemon.env["PYTHONPATH"] = str(ROOT)
    return daemon


def logged(daemon: DaemonProcess, event: str) -> list[dict[str, Any]]:
    lines = []
    for line in daemon.log().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("event") == event:
                lines.append(entry)
    return lines


def tallies(tally: Path) -> Counter[tuple[str, str, str]]:
    """(start|end, run id, node id) -> how many times."""
    if not tally.exists():
        return Counter()
    return Counter(tuple(line.split()) for line in tally.read_text().splitlines())  # type: ignore[misc]


def node_status(daemon: DaemonProcess, run_id: str, node_id: str) -> str:
    status, body = daemon.request("GET", f"{P}/runs/{run_id}/status")
    assert status == 200, body
    return next(s["status"] for s in body["node_states"] if s["node_id"] == node_id)


def hold_runs(daemon: DaemonProcess, count: int) -> list[str]:
    """`count` runs of the gated graph, acknowledged and each waiting at its gate (n1 done)."""
    held = []
    for _ in range(count):
        status, run = daemon.request("POST", f"{P}/runs", {"workflow_id": "gated"})
        assert status == 201, run
        held.append(run["id"])
    until(
        lambda: all(node_status(daemon, r, "n2") == "running" for r in held),
        30,
        "every run at its gate, n1 completed",
    )
    return held


def not_ready_but_readable(daemon: DaemonProcess, why: str, runs: list[str]) -> None:
    """/readyz is 503 because writes fail (saying `why`), and the runs can still be listed."""
    status, ready = daemon.request("GET", "/readyz")
    assert status == 503, ready
    assert ready["checks"]["writes"] is False, ready
    assert why in ready["detail"], ready
    status, listed = daemon.request("GET", f"{P}/runs")
    assert status == 200
    assert {r["id"] for r in listed} == set(runs)


def run_statuses(daemon: DaemonProcess, run_ids: list[str]) -> Counter[str]:
    statuses: Counter[str] = Counter()
    for run_id in run_ids:
        status, body = daemon.request("GET", f"{P}/runs/{run_id}")
        assert status == 200, body
        statuses[body["status"]] += 1
    return statuses


def query(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of a query on the database, as an operator would run it (closed at once: an open
    connection would keep the test's file system busy)."""
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        return [tuple(row) for row in conn.execute(sql, params).fetchall()]


def completions(db: Path) -> Counter[tuple[str, str]]:
    """(run id, node id) -> how many `completed` node-state events the log holds."""
    rows = query(
        db,
        "SELECT run_id, json_extract(body, '$.nodeState.node_id') FROM events "
        "WHERE type = 'workflow.node_state.updated' "
        "AND json_extract(body, '$.nodeState.status') = 'completed'",
    )
    return Counter((run_id, node_id) for run_id, node_id in rows)


def seqs(db: Path) -> list[int]:
    return [seq for (seq,) in query(db, "SELECT seq FROM events ORDER BY seq")]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "disk", "16m") as mounted:
        yield mounted


def test_a_full_disk_is_507_never_500_and_runs_in_flight_continue_once_space_is_back(
    tmp_path: Path, small_disk: Path
) -> None:
    db, tally, gate = small_disk / "cortexd.db", tmp_path / "tally", tmp_path / "gate"
    daemon = fault_daemon(tmp_path / "daemon", db)
    try:
        daemon.start()
        assert daemon.request("POST", f"{P}/graphs", gated_graph(tally, gate))[0] == 201
        acknowledged = hold_runs(daemon, IN_FLIGHT)
        in_flight = list(acknowledged)

        filler = fill(small_disk)
        answers: Counter[int] = Counter()
        refused = 0
        for _ in range(200):  # until the disk has no room left even for a small write
            status, body = daemon.request("POST", f"{P}/runs", {"workflow_id": "gated"})
            answers[status] += 1
            if status == 201:
                acknowledged.append(body["id"])
                continue
            assert status == 507, body
            assert "disk is full" in body["detail"], body
            refused += 1
            if refused == 5:
                break
        assert refused == 5, answers
        assert set(answers) <= {201, 507}, answers
        other = {**gated_graph(tally, gate), "id": "g2"}
        status, body = daemon.request("POST", f"{P}/graphs", other)
        assert status == 507, body

        not_ready_but_readable(daemon, "disk is full", acknowledged)
        assert daemon.request("GET", "/readyz")[1]["checks"]["store"] is True

        # The runs in flight finish their node while nothing can be written: the node's
        # completion is not durable, so the run is interrupted (not failed) and waits.
        gate.touch()
        until(
            lambda: all(tallies(tally)[("end", r, "n2")] >= 1 for r in in_flight),
            30,
            "every held node ended",
        )
        until(
            lambda: len(logged(daemon, "run_interrupted_by_store")) >= IN_FLIGHT,
            30,
            "every run in flight interrupted by the store",
        )
        assert run_statuses(daemon, acknowledged)["failed"] == 0
        assert daemon.request("GET", "/readyz")[0] == 503

        filler.unlink()
        # No request writes anything now: the writer's own probe finds the store back.
        until(lambda: daemon.request("GET", "/readyz")[0] == 200, 15, "ready again")
        until(
            lambda: run_statuses(daemon, acknowledged) == Counter({"completed": len(acknowledged)}),
            60,
            "every acknowledged run completed",
        )
        assert daemon.proc is not None
        assert daemon.proc.poll() is None  # it never exited

        status, listed = daemon.request("GET", f"{P}/runs")
        assert {r["id"] for r in listed} == set(acknowledged)  # none lost, none of the 507s kept
        done = completions(db)
        assert {key: done[key] for key in done if done[key] != 1} == {}
        assert set(done) == {(r, n) for r in acknowledged for n in NODES}
        events = seqs(db)
        assert events == list(range(1, len(events) + 1))
        ran = tallies(tally)
        for run_id in acknowledged:  # nodes that had completed never ran again
            assert ran[("start", run_id, "n1")] == 1, ran
            assert ran[("start", run_id, "n3")] == 1, ran
        for run_id in in_flight:  # the node in flight: at least once (twice, here)
            assert ran[("start", run_id, "n2")] == 2, ran
        assert len(logged(daemon, "store_writes_failing")) >= 1
        assert len(logged(daemon, "store_writes_recovered")) >= 1
        assert not logged(daemon, "request_failed")
    finally:
        daemon.stop()
        if os.path.exists(small_disk / "filler"):
            os.unlink(small_disk / "filler")


@pytest.fixture
def ext4_disk(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    image = tmp_path / "disk.img"
    with ext4(image, tmp_path / "disk", "64M") as mounted:
        yield image, mounted


def test_a_file_system_turned_read_only_is_503_reads_go_on_and_a_restart_after_repair_loses_nothing(
    tmp_path: Path, ext4_disk: tuple[Path, Path]
) -> None:
    """Linux refuses `mount -o remount,ro` while a process has files open for writing (the
    daemon always has), so the file system is made read-only the way the kernel does it to a
    failing disk: an ext4 error with `errors=remount-ro`. It stays read-only until unmounted;
    the operator stops the daemon, repairs, and starts it again."""
    image, disk = ext4_disk
    db, tally, gate = disk / "cortexd.db", tmp_path / "tally", tmp_path / "gate"
    daemon = fault_daemon(tmp_path / "daemon", db)
    try:
        daemon.start()
        assert daemon.request("POST", f"{P}/graphs", gated_graph(tally, gate))[0] == 201
        acknowledged = hold_runs(daemon, IN_FLIGHT)

        # What the kernel has not written out yet is lost with a file system that fails (the
        # store commits with synchronous=NORMAL: as after a power loss, the last commits may
        # go). Written out first, what was acknowledged is on the disk, as after any moment
        # of writeback; from then on nothing can be acknowledged (every write is refused).
        os.sync()
        break_ext4(disk)
        for _ in range(5):
            status, body = daemon.request("POST", f"{P}/runs", {"workflow_id": "gated"})
            assert status == 503, body
            assert "cannot take writes" in body["detail"], body
        not_ready_but_readable(daemon, "cannot take writes", acknowledged)

        gate.touch()
        until(
            lambda: len(logged(daemon, "run_interrupted_by_store")) >= IN_FLIGHT,
            30,
            "every run in flight interrupted by the store",
        )
        assert run_statuses(daemon, acknowledged) == Counter({"running": IN_FLIGHT})
        assert daemon.request("GET", "/readyz")[0] == 503  # the probe keeps failing
        assert daemon.proc is not None
        assert daemon.proc.poll() is None  # serving reads, not exited

        daemon.signal(signal.SIGTERM)
        assert daemon.wait(30) == 0, daemon.log()
        repair_ext4(image, disk)
        daemon.start()
        until(
            lambda: run_statuses(daemon, acknowledged) == Counter({"completed": IN_FLIGHT}),
            60,
            "every acknowledged run completed",
        )
        done = completions(db)
        assert done == Counter({(r, n): 1 for r in acknowledged for n in NODES})
        events = seqs(db)
        assert events == list(range(1, len(events) + 1))
        ran = tallies(tally)
        for run_id in acknowledged:
            assert ran[("start", run_id, "n1")] == 1, ran
            assert ran[("start", run_id, "n2")] == 2, ran
            assert ran[("start", run_id, "n3")] == 1, ran
    finally:
        daemon.stop()


def test_a_database_file_replaced_under_the_daemon_makes_it_exit_non_zero(
    tmp_path: Path,
) -> None:
    """A writer that can never write again: its database file was replaced (a backup
    "restored" by copying it over the live file). SQLite in WAL mode would go on writing to the
    replaced file, which nobody will read; the daemon stops and exits 1 instead (systemd
    starts it again, on the file the path now names), never serving with a dead writer."""
    db, tally, gate = tmp_path / "cortexd.db", tmp_path / "tally", tmp_path / "gate"
    gate.touch()
    daemon = fault_daemon(tmp_path / "daemon", db)
    try:
        daemon.start()
        assert daemon.request("POST", f"{P}/graphs", gated_graph(tally, gate))[0] == 201
        status, run = daemon.request("POST", f"{P}/runs", {"workflow_id": "gated"})
        assert status == 201, run
        until(
            lambda: run_statuses(daemon, [run["id"]]) == Counter({"completed": 1}),
            30,
            "the run completed",
        )
        copy = tmp_path / "copy.db"
        with (
            contextlib.closing(sqlite3.connect(db)) as source,
            contextlib.closing(sqlite3.connect(copy)) as target,
        ):
            source.backup(target)
        os.replace(copy, db)

        assert daemon.proc is not None
        code = daemon.wait(20)
        assert code == 1, daemon.log()
        died = logged(daemon, "store_writer_died")
        assert len(died) == 1, daemon.log()
        assert "was replaced or deleted" in died[0]["error"]
        assert "cortexd: stopped: the database file" in daemon.log()

        daemon.start()  # on what the path holds now: the copy, with the run
        assert run_statuses(daemon, [run["id"]]) == Counter({"completed": 1})
        status, created = daemon.request("POST", f"{P}/runs", {"workflow_id": "gated"})
        assert status == 201, created
    finally:
        daemon.stop()
