"""`cortexd backup` of a live store under load, and a daemon started on the copy (DESIGN §12,
issue 18): it serves every run and event the copy holds, and the runs that were running when
the copy was taken continue (the copy has their leases, from an instance that is dead to it),
with no node that had completed running again."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from collections import Counter
from pathlib import Path

import pytest

from tests.e2e.test_storage_faults import (
    NODES,
    completions,
    fault_daemon,
    gated_graph,
    hold_runs,
    logged,
    query,
    run_statuses,
    seqs,
    tallies,
)
from tests.support.process import CORTEXD, DaemonProcess, until

pytestmark = pytest.mark.e2e
P = "/api/projects/acme/workflows"
HELD = 4


class Load:
    """A client creating runs of `workflow` one after another until stopped."""

    def __init__(self, daemon: DaemonProcess, workflow: str) -> None:
        self.daemon = daemon
        self.workflow = workflow
        self.acknowledged: list[str] = []
        self.answers: Counter[int] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            status, body = self.daemon.request("POST", f"{P}/runs", {"workflow_id": self.workflow})
            self.answers[status] += 1
            if status == 201:
                self.acknowledged.append(body["id"])

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive()


def run_backup(config: Path, target: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CORTEXD), "backup", str(target), "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def backup(config: Path, target: Path) -> dict[str, object]:
    done = run_backup(config, target)
    assert done.returncode == 0, done.stderr
    report: dict[str, object] = json.loads(done.stdout)
    return report


def test_a_backup_taken_under_load_serves_everything_it_holds_and_its_running_runs_continue(
    tmp_path: Path,
) -> None:
    tally, gate = tmp_path / "tally", tmp_path / "gate"
    source = fault_daemon(tmp_path / "a", tmp_path / "a" / "cortexd.db")
    restored = fault_daemon(tmp_path / "b", tmp_path / "b" / "cortexd.db")
    try:
        source.start()
        held_graph = gated_graph(tally, gate)
        quick = {**gated_graph(tally, tmp_path / "open"), "id": "quick"}
        (tmp_path / "open").touch()
        for graph in (held_graph, quick):
            assert source.request("POST", f"{P}/graphs", graph)[0] == 201
        held = hold_runs(source, HELD)

        with Load(source, "quick") as load:
            until(lambda: len(load.acknowledged) >= 20, 30, "some load")
            before = list(load.acknowledged)
            report = backup(source.config, tmp_path / "copy.db")
            until(lambda: len(load.acknowledged) >= len(before) + 20, 30, "load after it")
        assert set(load.answers) == {201}, load.answers
        assert (tmp_path / "copy.db").exists()
        instance = source.request("GET", "/readyz")[1]["instance"]
        # A lost machine: the daemon that made the leases in the copy is gone.
        source.signal(signal.SIGKILL)
        source.wait(10)

        copy = tmp_path / "copy.db"
        stored_runs = dict(query(copy, "SELECT id, status FROM runs"))
        stored_events: dict[str, list[int]] = {}
        for run_id, seq in query(
            copy, "SELECT run_id, seq FROM events WHERE run_id IS NOT NULL ORDER BY seq"
        ):
            stored_events.setdefault(run_id, []).append(seq)
        assert report["runs"] == len(stored_runs)
        assert report["last_event_seq"] == max(seqs(copy))
        assert set(before) | set(held) <= stored_runs.keys()  # acknowledged before it began
        assert {stored_runs[r] for r in held} == {"running"}
        marks = ",".join("?" * len(held))
        owners = query(copy, f"SELECT DISTINCT owner FROM runs WHERE id IN ({marks})", tuple(held))
        assert owners == [(instance,)]  # their leases, as the dead daemon held them

        copy.rename(restored.db)
        restored.start()
        status, listed = restored.request("GET", f"{P}/runs")
        assert status == 200
        assert {r["id"] for r in listed} == stored_runs.keys()
        for run_id, held_seqs in stored_events.items():
            status, events = restored.request("GET", f"{P}/runs/{run_id}/events")
            assert status == 200
            served = [e["seq"] for e in events]
            assert served[: len(held_seqs)] == held_seqs, run_id  # then what happened since

        gate.touch()
        until(
            lambda: (
                run_statuses(restored, list(stored_runs))
                == Counter({"completed": len(stored_runs)})
            ),
            90,
            "every run of the copy completed",
        )
        assert logged(restored, "recovering_runs")
        done = completions(restored.db)
        assert done == Counter({(r, n): 1 for r in stored_runs for n in NODES})
        events = seqs(restored.db)
        assert events == list(range(1, len(events) + 1))
        ran = tallies(tally)
        for run_id in held:
            assert ran[("start", run_id, "n1")] == 1, ran  # completed before the copy
            assert ran[("start", run_id, "n2")] == 2, ran  # in flight: again on the copy
            assert ran[("start", run_id, "n3")] == 1, ran
    finally:
        source.stop()
        restored.stop()


def test_backup_never_overwrites_a_file_and_sends_postgresql_to_pg_dump(tmp_path: Path) -> None:
    existing = tmp_path / "existing.db"
    existing.write_bytes(b"keep me")
    daemon = DaemonProcess(tmp_path)  # a config on a SQLite file, no daemon needed
    config = daemon.config
    done = run_backup(config, existing)
    assert done.returncode == 1
    assert "there is no database" in done.stderr  # nothing at [storage] path yet
    daemon.start()
    try:
        done = run_backup(config, existing)
        assert done.returncode == 1
        assert "exists already" in done.stderr
        assert existing.read_bytes() == b"keep me"
    finally:
        daemon.stop()

    pg = tmp_path / "pg.toml"
    pg.write_text('[storage]\nurl = "postgresql://cortexd:secret@db.internal:5432/cortexd"\n')
    done = run_backup(pg, tmp_path / "dump")
    assert done.returncode == 2
    assert "pg_dump" in done.stderr
    assert "secret" not in done.stderr
    assert not (tmp_path / "dump").exists()
