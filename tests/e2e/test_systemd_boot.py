"""The unit files under a real systemd as PID 1: a Debian 12 container booted with
`systemd-nspawn --register=no --keep-unit -b` (tests/support/nspawn.py) runs config/cortexd.service
and two instances of config/cortexd@.service, installed verbatim, on one SQLite store, and one of
them survives the other's `systemctl kill -s KILL`.

Skipped, with the reason, where the container cannot boot (not root, no systemd-nspawn or
debootstrap); CORTEXD_REQUIRE_NSPAWN=1 (set by .ci/run) makes that a failure instead.
"""

from __future__ import annotations

import itertools
import json
import os
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import nspawn
from tests.support.nspawn import Container, until
from tests.support.process import free_port

pytestmark = pytest.mark.e2e
P = "/api/projects/acme/workflows"
UNITS = Path(__file__).parents[2] / "config"
NODES = ("n1", "n2", "n3", "n4", "n5")
LEASE_S = 3
SLOTS = 5  # per daemon: ten runs then need both
CONFIG = f"""\
[execution]
lease_s = {LEASE_S}
max_concurrent_runs = {SLOTS}
shutdown_grace_s = 2
[logging]
format = "json"
"""


@pytest.fixture(scope="module")
def container(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    reason = nspawn.unavailable()
    if reason is not None:
        if os.environ.get(nspawn.REQUIRE) == "1":
            pytest.fail(f"{nspawn.REQUIRE}=1, but {reason}")
        pytest.skip(reason)
    tree = nspawn.ensure_tree()
    venv = nspawn.ensure_venv(tree)
    booted = Container(tree, venv, tmp_path_factory.mktemp("nspawn"))
    try:
        booted.boot()
        assert booted.run("cat", "/proc/1/comm").stdout == "systemd\n"  # PID 1 in there
        booted.install("/etc/cortexd/cortexd.toml", CONFIG)
        for unit in ("cortexd.service", "cortexd@.service"):
            booted.install(f"/etc/systemd/system/{unit}", (UNITS / unit).read_text())
        booted.run("systemctl", "daemon-reload")
        yield booted
    finally:
        booted.shutdown()


def request(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        raw = error.read()
        return error.code, json.loads(raw) if raw else None


def serving(port: int) -> str | None:
    """The instance answering /readyz on the port, or None while nothing does."""
    try:
        status, body = request(port, "GET", "/readyz")
    except OSError:
        return None
    return str(body["instance"]) if status == 200 else None


def chain(graph_id: str, seconds: float) -> dict[str, Any]:
    return {
        "id": graph_id,
        "name": graph_id,
        "nodes": [
            {"id": n, "x": i * 100.0, "y": 0.0, "type": "delay", "config": {"seconds": seconds}}
            for i, n in enumerate(NODES)
        ],
        "edges": [{"source": x, "target": y} for x, y in itertools.pairwise(NODES)],
    }


def submit(port: int, graph_id: str, count: int) -> list[str]:
    ids = []
    for i in range(count):
        status, run = request(
            port, "POST", f"{P}/runs", {"workflow_id": graph_id, "input": {"i": i}}
        )
        assert status == 201, run
        ids.append(run["id"])
    return ids


def events(port: int, run_id: str) -> list[dict[str, Any]]:
    status, body = request(port, "GET", f"{P}/runs/{run_id}/events")
    assert status == 200, body
    return list(body)


def completed_nodes(run_events: list[dict[str, Any]]) -> Counter[str]:
    return Counter(
        e["nodeState"]["node_id"]
        for e in run_events
        if e["type"] == "workflow.node_state.updated" and e["nodeState"]["status"] == "completed"
    )


def executors(run_events: list[dict[str, Any]]) -> set[str]:
    """The instances that began executing the run (their claims' pending -> running)."""
    return {
        e["run"]["owner"]
        for e in run_events
        if e["type"] == "workflow.run.updated" and e["run"]["status"] == "running"
    }


def logged(container: Container, unit: str, event: str) -> list[dict[str, Any]]:
    return [line for line in container.journal(unit) if line.get("event") == event]


def active_running(container: Container, unit: str) -> bool:
    state = container.show(unit, "ActiveState", "SubState")
    return (state["ActiveState"], state["SubState"]) == ("active", "running")


def test_the_single_unit_starts_notifies_pings_reloads_and_stops(container: Container) -> None:
    unit, port = "cortexd.service", free_port()
    # The documented way to change a unit: a drop-in. A short watchdog, to see pings arrive.
    container.install(
        "/etc/systemd/system/cortexd.service.d/test.conf",
        f"[Service]\nEnvironment=CORTEXD_SERVER__PORT={port}\nWatchdogSec=4s\n",
    )
    container.run("systemctl", "daemon-reload")
    try:
        container.run("systemctl", "start", unit, timeout=90)  # returns at READY=1
        assert active_running(container, unit)
        assert serving(port) is not None
        until(
            lambda: container.show(unit, "StatusText")["StatusText"] == "0 running, 0 queued",
            timeout=10,
            what="STATUS= sent",
        )
        shown = container.show(unit, "UID", "WatchdogUSec")
        assert shown["WatchdogUSec"] == "4s"
        assert 61184 <= int(shown["UID"]) <= 65519, shown  # a dynamic user's uid

        def pinged() -> int:
            value = container.show(unit, "WatchdogTimestampMonotonic")
            return int(value["WatchdogTimestampMonotonic"])

        first = pinged()
        until(lambda: pinged() > first, timeout=15, what="a watchdog ping systemd took")

        container.run("systemctl", "reload", unit)
        until(
            lambda: bool(logged(container, unit, "reloaded")),
            timeout=15,
            what="the reload logged",
        )
        assert active_running(container, unit)

        # A stopped daemon (SIGSTOP, or a loop blocked for good; stopped inside a write on
        # SQLite it holds the file's write lock) misses its pings: the watchdog ends it, and
        # systemd starts it again.
        stalled = container.show(unit, "MainPID")["MainPID"]
        container.run("kill", "-STOP", stalled)
        until(
            lambda: (
                container.show(unit, "NRestarts")["NRestarts"] == "1"
                and active_running(container, unit)
            ),
            timeout=60,
            what="the watchdog ended the stopped daemon and systemd started it again",
        )
        assert container.show(unit, "MainPID")["MainPID"] != stalled
        assert serving(port) is not None
    finally:
        container.run("systemctl", "stop", unit, timeout=90)
    stopped = container.show(unit, "ActiveState", "Result", "ExecMainStatus")
    assert stopped == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}
    assert logged(container, unit, "stopped")


def test_two_instances_share_one_store_and_one_survives_the_others_kill(
    container: Container,
) -> None:
    victim_port, survivor_port = free_port(), free_port()
    victim, survivor = f"cortexd@{victim_port}.service", f"cortexd@{survivor_port}.service"
    container.run("systemctl", "start", victim, survivor, timeout=90)
    try:
        assert active_running(container, victim)
        assert active_running(container, survivor)
        # One dynamic user for both (User=cortexd), hence one state directory and one database.
        uids = {container.show(unit, "UID")["UID"] for unit in (victim, survivor)}
        assert len(uids) == 1, uids
        [victim_ready] = logged(container, victim, "ready")
        [survivor_ready] = logged(container, survivor, "ready")
        assert victim_ready["database"] == survivor_ready["database"]
        assert victim_ready["database"] == "/var/lib/private/cortexd/cortexd.db"
        assert container.path("/var/lib/cortexd/cortexd.db").exists()
        victim_id, survivor_id = serving(victim_port), serving(survivor_port)
        assert victim_id is not None
        assert survivor_id is not None
        assert victim_id != survivor_id

        assert request(victim_port, "POST", f"{P}/graphs", chain("five", 0.3))[0] == 201
        runs = submit(victim_port, "five", 5) + submit(survivor_port, "five", 5)

        def victim_mid_run() -> bool:
            """The victim executes a run of which some, not all, nodes completed."""
            for run_id in runs:
                if request(survivor_port, "GET", f"{P}/runs/{run_id}")[1]["owner"] == victim_id:
                    done = len(completed_nodes(events(survivor_port, run_id)))
                    if 0 < done < len(NODES):
                        return True
            return False

        until(victim_mid_run, timeout=60, what="the victim part-way through a run")
        container.run("systemctl", "kill", "--signal=KILL", victim)
        killed_at = time.monotonic()

        def all_completed() -> bool:
            statuses = {request(survivor_port, "GET", f"{P}/runs/{r}")[1]["status"] for r in runs}
            assert not statuses & {"failed", "cancelled"}, statuses
            return statuses == {"completed"}

        until(all_completed, timeout=LEASE_S + 60, what="every run completed after the kill")
        took = time.monotonic() - killed_at
        executed_by: set[str] = set()
        for run_id in runs:
            run_events = events(survivor_port, run_id)
            assert completed_nodes(run_events) == Counter(NODES), (run_id, "a node ran again")
            executed_by |= executors(run_events)
        assert {victim_id, survivor_id} <= executed_by, executed_by
        # Taken back at once, not after the lease: the survivor took the dead instance's lock
        # file, which it can open only as the same user.
        taken_over = logged(container, survivor, "recovering_runs")
        assert any(victim_id in line["dead_instances"] for line in taken_over), taken_over

        # systemd restarts the killed instance (Restart=on-failure): a new process, serving.
        until(
            lambda: (
                int(container.show(victim, "NRestarts")["NRestarts"]) >= 1
                and active_running(container, victim)
            ),
            timeout=60,
            what="the killed instance restarted",
        )
        restarted = container.show(victim, "NRestarts", "UID")
        assert restarted["NRestarts"] == "1"
        assert {restarted["UID"]} == uids
        until(lambda: serving(victim_port) is not None, timeout=30, what="the restart serving")
        assert serving(victim_port) not in (None, victim_id)
        again = submit(victim_port, "five", 2)
        until(
            lambda: all(
                request(victim_port, "GET", f"{P}/runs/{r}")[1]["status"] == "completed"
                for r in again
            ),
            timeout=60,
            what="runs submitted through the restarted instance completed",
        )
        assert active_running(container, survivor)
        assert container.show(survivor, "NRestarts")["NRestarts"] == "0"

        # Stopping one instance leaves the other's runtime directory (RuntimeDirectory=) alone.
        container.run("systemctl", "stop", victim, timeout=90)
        runtime = container.show(survivor, "RuntimeDirectory")["RuntimeDirectory"]
        assert container.path(f"/run/{runtime}").is_dir(), f"/run/{runtime} went with {victim}"
        assert serving(survivor_port) == survivor_id
        print(f"every run completed {took:.1f} s after the kill (lease_s = {LEASE_S})")
    finally:
        container.run("systemctl", "stop", victim, survivor, timeout=90)
