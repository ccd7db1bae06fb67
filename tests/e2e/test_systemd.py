"""The real daemon as systemd runs it: a fake notify socket records what it is told, Debian's
systemd-socket-activate passes it a socket, and systemd-analyze checks the unit files."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.config import ExecutionSettings
from adapters.serve import HTTP_SHUTDOWN_TIMEOUT_S
from core.engine import EngineSettings
from tests.support.process import DaemonProcess, free_port

pytestmark = pytest.mark.e2e
P = "/api/projects/acme/workflows"
UNITS = Path(__file__).parents[2] / "config"
SOCKET_ACTIVATE = "/usr/bin/systemd-socket-activate"
# Debian's systemd package has both; neither needs systemd running as PID 1.
needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="needs systemd-analyze"
)
Message = dict[str, str]


class NotifySocket:
    """A fake ``$NOTIFY_SOCKET``: a real datagram socket whose messages a thread records as they
    arrive (a kernel queue of a few datagrams would overflow while a test is busy elsewhere)."""

    def __init__(self, name: str) -> None:
        self.name = name  # as systemd spells it: a path, or @name for an abstract socket
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind("\0" + name[1:] if name.startswith("@") else name)
        self._sock.settimeout(0.1)
        self._received: list[tuple[float, Message]] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._record, daemon=True)
        self._thread.start()

    def _record(self) -> None:
        while not self._closing.is_set():
            try:
                datagram = self._sock.recv(4096)
            except TimeoutError:
                continue
            message = dict(line.split("=", 1) for line in datagram.decode().split("\n"))
            with self._lock:
                self._received.append((time.monotonic(), message))

    def close(self) -> None:
        self._closing.set()
        self._thread.join(5)
        self._sock.close()

    def received(self) -> list[tuple[float, Message]]:
        with self._lock:
            return list(self._received)

    def messages(self) -> list[Message]:
        return [message for _, message in self.received()]

    def wait_for(
        self,
        key: str,
        value: str | None = None,
        after: int = 0,
        daemon: DaemonProcess | None = None,
        timeout: float = 30.0,
    ) -> int:
        """Index of the first message from ``after`` on with ``key`` (set to ``value``)."""
        deadline = time.monotonic() + timeout
        while True:
            for index, message in enumerate(self.messages()[after:], start=after):
                if key in message and value in (None, message[key]):
                    return index
            if daemon is not None and daemon.proc is not None and daemon.proc.poll() is not None:
                raise AssertionError(f"cortexd exited before {key}={value}:\n{daemon.log()}")
            assert time.monotonic() < deadline, f"no {key}={value} in {self.messages()[after:]}"
            time.sleep(0.02)


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(str(tmp_path / "notify"))
    yield sock
    sock.close()


@pytest.fixture
def daemon(tmp_path: Path, notify: NotifySocket) -> Iterator[DaemonProcess]:
    process = DaemonProcess(tmp_path, execution={"shutdown_grace_s": 1})
    process.env["NOTIFY_SOCKET"] = notify.name
    yield process
    process.stop()


def until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.02)


def log_lines(daemon: DaemonProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in daemon.log().splitlines() if line.startswith("{")]


def logged(daemon: DaemonProcess, event: str) -> list[dict[str, Any]]:
    return [line for line in log_lines(daemon) if line["event"] == event]


def one_node_graph(node_type: str, config: dict[str, Any]) -> dict[str, Any]:
    node = {"id": "n", "label": "n", "x": 0.0, "y": 0.0, "type": node_type, "config": config}
    edges = [
        {"id": "e1", "source": "__start__", "target": "n"},
        {"id": "e2", "source": "n", "target": "__end__"},
    ]
    return {"id": node_type, "name": node_type, "nodes": [node], "edges": edges}


def start_run(daemon: DaemonProcess, workflow_id: str) -> str:
    status, run = daemon.request("POST", f"{P}/runs", {"workflow_id": workflow_id})
    assert status == 201, run
    run_id: str = run["id"]
    return run_id


def monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def stop_and_expect_stopping(daemon: DaemonProcess, notify: NotifySocket) -> None:
    ready = notify.wait_for("READY", "1")
    daemon.signal(signal.SIGTERM)
    notify.wait_for("STOPPING", "1", after=ready + 1)
    assert daemon.wait(30) == 0, daemon.log()


# -- sd_notify ------------------------------------------------------------------------------------

SLOW_START_PLUGIN = """
import asyncio

import pluggy

hookimpl = pluggy.HookimplMarker("cortexd")


@hookimpl
async def cortexd_startup(ctx):
    await asyncio.sleep(1)  # start-up work, during which the daemon is not ready yet
"""


@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_ready_when_serving_and_stopping_at_sigterm(tmp_path: Path, kind: str) -> None:
    name = str(tmp_path / "notify") if kind == "path" else f"@cortexd-{uuid.uuid4().hex}"
    notify = NotifySocket(name)
    (tmp_path / "slow_start_plugin.py").write_text(SLOW_START_PLUGIN)
    daemon = DaemonProcess(tmp_path, plugins={"modules": ["slow_start_plugin"]})
    daemon.env.update(NOTIFY_SOCKET=name, PYTHONPATH=str(tmp_path))
    try:
        daemon.spawn()
        notify.wait_for("READY", "1", daemon=daemon)
        # Told "ready": migrations, plugins, listening socket and recovery are all done.
        assert daemon.request("GET", "/readyz")[0] == 200
        notify.wait_for("STATUS", "0 running, 0 queued")
        stop_and_expect_stopping(daemon, notify)
        assert '"stopped"' in daemon.log()
    finally:
        daemon.stop()
        notify.close()


def test_status_follows_the_run_counts(daemon: DaemonProcess, notify: NotifySocket) -> None:
    daemon.write_config(execution={"max_concurrent_runs": 1, "shutdown_grace_s": 1})
    daemon.start()
    # Each state lasts two seconds, longer than the one second between STATUS samples.
    assert daemon.request("POST", f"{P}/graphs", one_node_graph("delay", {"seconds": 2}))[0] == 201
    for _ in range(3):
        start_run(daemon, "delay")
    busy = notify.wait_for("STATUS", "1 running, 2 queued")
    notify.wait_for("STATUS", "1 running, 1 queued", after=busy)
    notify.wait_for("STATUS", "0 running, 0 queued", after=busy)  # all three done, one at a time


BLOCKING_PLUGIN = '''
import time

import pluggy

hookimpl = pluggy.HookimplMarker("cortexd")


class Block:
    """A badly written node: it blocks the event loop."""

    name = "block"
    title = "Block"
    description = "test: blocks the event loop"
    config_schema = {"type": "object"}

    async def execute(self, ctx, config, state):
        time.sleep(config["seconds"])
        return {}


@hookimpl
def cortexd_node_types():
    return [Block()]
'''


def test_watchdog_pings_every_half_period_and_a_blocked_loop_misses_them(
    tmp_path: Path, daemon: DaemonProcess, notify: NotifySocket
) -> None:
    (tmp_path / "blocking_plugin.py").write_text(BLOCKING_PLUGIN)
    daemon.write_config(plugins={"modules": ["blocking_plugin"]})
    daemon.env.update(WATCHDOG_USEC="200000", PYTHONPATH=str(tmp_path))  # a ping every 0.1 s
    daemon.start()

    def pings() -> list[float]:
        return [at for at, message in notify.received() if message.get("WATCHDOG") == "1"]

    until(lambda: len(pings()) >= 11)
    first_ten = pings()[:11]
    # Ten intervals of 0.1 s: never faster; slower only as much as a loaded machine makes it.
    assert 0.8 <= first_ten[-1] - first_ten[0] <= 5.0, first_ten

    graph = one_node_graph("block", {"seconds": 1.5})
    assert daemon.request("POST", f"{P}/graphs", graph)[0] == 201
    run_id = start_run(daemon, "block")
    until(lambda: daemon.request("GET", f"{P}/runs/{run_id}")[1]["status"] == "completed")
    count = len(pings())
    until(lambda: len(pings()) >= count + 3)  # pinging again once the loop is free
    times = pings()
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert max(gaps) >= 1.2, "the pings went on while the event loop was blocked"


# -- SIGHUP ------------------------------------------------------------------------------------


def test_sighup_reloads_the_log_level_and_the_concurrency_limit(
    daemon: DaemonProcess, notify: NotifySocket
) -> None:
    daemon.write_config(
        logging={"level": "warning"},
        # The 60 s delays hold their slots (not parked): what the counts are about.
        execution={"max_concurrent_runs": 1, "shutdown_grace_s": 1, "park_after_s": 3600},
    )
    daemon.start()
    assert not logged(daemon, "ready")  # an info line, below the level
    assert daemon.request("POST", f"{P}/graphs", one_node_graph("delay", {"seconds": 60}))[0] == 201
    for _ in range(3):
        start_run(daemon, "delay")
    notify.wait_for("STATUS", "1 running, 2 queued")

    daemon.write_config(
        logging={"level": "info"},
        execution={"max_concurrent_runs": 3, "shutdown_grace_s": 1, "park_after_s": 3600},
        limits={"max_request_bytes": 4096},
    )
    before = monotonic_usec()
    mark = len(notify.messages())
    daemon.signal(signal.SIGHUP)
    reloading = notify.wait_for("RELOADING", "1", after=mark, daemon=daemon)
    assert before <= int(notify.messages()[reloading]["MONOTONIC_USEC"]) <= monotonic_usec()
    ready = notify.wait_for("READY", "1", after=reloading + 1, daemon=daemon)

    notify.wait_for("STATUS", "3 running, 0 queued", after=ready)  # the queued runs started
    [reloaded] = logged(daemon, "reloaded")  # logged at info: the new level is in effect
    assert reloaded["applied"] == ["execution.max_concurrent_runs", "logging.level"]
    [restart] = logged(daemon, "restart_required")
    assert restart["keys"] == ["limits.max_request_bytes"]
    stop_and_expect_stopping(daemon, notify)


def test_sighup_with_a_broken_config_keeps_the_daemon_serving(
    daemon: DaemonProcess, notify: NotifySocket
) -> None:
    daemon.start()
    good = daemon.config.read_text()
    zero_runs = good.replace("[execution]\n", "[execution]\nmax_concurrent_runs = 0\n")
    for broken, reason in [
        ("[server\nport = 1\n", str(daemon.config)),  # not TOML: the file is named
        (zero_runs, "execution.max_concurrent_runs"),  # invalid: the key is named
    ]:
        daemon.config.write_text(broken)
        mark = len(notify.messages())
        daemon.signal(signal.SIGHUP)
        reloading = notify.wait_for("RELOADING", "1", after=mark, daemon=daemon)
        notify.wait_for("READY", "1", after=reloading + 1, daemon=daemon)
        [failure] = [
            f for f in logged(daemon, "reload_failed") if reason in " ".join(f["problems"])
        ]
        assert failure["level"] == "error"
        assert daemon.request("GET", "/readyz")[0] == 200
    assert not logged(daemon, "reloaded")

    daemon.config.write_text(good)  # mended: the next reload goes through
    mark = len(notify.messages())
    daemon.signal(signal.SIGHUP)
    notify.wait_for("READY", "1", after=notify.wait_for("RELOADING", "1", after=mark))
    until(lambda: bool(logged(daemon, "reloaded")))
    stop_and_expect_stopping(daemon, notify)


# -- where it listens ---------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which(SOCKET_ACTIVATE) is None, reason="needs systemd-socket-activate")
def test_socket_activation_serves_on_the_inherited_socket(
    daemon: DaemonProcess, notify: NotifySocket
) -> None:
    configured_port = free_port()  # what [server] says; activation must override it
    daemon.write_config(server={"host": "127.0.0.1", "port": configured_port})
    daemon.launcher = [
        SOCKET_ACTIVATE,
        f"--listen=127.0.0.1:{daemon.port}",
        "--fdname=http",
        # It passes on only the variables it is told to.
        f"--setenv=NOTIFY_SOCKET={notify.name}",
    ]
    daemon.spawn()

    def first_request() -> int | None:
        # The connection that gets through starts the daemon and waits in the backlog meanwhile;
        # until systemd-socket-activate listens, connections are refused.
        try:
            return daemon.request("GET", "/readyz", timeout=30)[0]
        except urllib.error.URLError as error:
            if isinstance(error.reason, ConnectionRefusedError):
                return None
            raise

    deadline = time.monotonic() + 30
    while (status := first_request()) is None:
        assert daemon.proc is not None
        assert daemon.proc.poll() is None, daemon.log()
        assert time.monotonic() < deadline, "systemd-socket-activate never listened"
        time.sleep(0.05)
    assert status == 200
    [ready] = logged(daemon, "ready")
    assert ready["socket_activated"] == ["http"]
    assert ready["urls"] == [f"http://127.0.0.1:{daemon.port}"]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", configured_port), timeout=5).close()
    stop_and_expect_stopping(daemon, notify)


async def get_over_unix_socket(path: Path, url_path: str) -> int:
    async with (
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(path))) as session,
        session.get(f"http://localhost{url_path}") as response,
    ):
        return response.status


def test_a_unix_socket_is_served_instead_of_tcp(
    tmp_path: Path, daemon: DaemonProcess, notify: NotifySocket
) -> None:
    path = tmp_path / "http.sock"
    daemon.write_config(server={"host": "127.0.0.1", "port": daemon.port, "unix_socket": str(path)})
    daemon.spawn()
    notify.wait_for("READY", "1", daemon=daemon)
    assert asyncio.run(get_over_unix_socket(path, "/readyz")) == 200
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", daemon.port), timeout=5).close()
    stop_and_expect_stopping(daemon, notify)


def test_a_non_loopback_host_without_auth_is_refused(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path)
    daemon.write_config(server={"host": "0.0.0.0", "port": daemon.port})
    daemon.spawn()
    try:
        assert daemon.wait(30) == 2
    finally:
        daemon.stop()
    assert "'0.0.0.0'" in daemon.log()
    assert "set [auth] enabled = true" in daemon.log()


# -- the unit files -----------------------------------------------------------------------------


def unit_setting(unit: str, key: str) -> str:
    [value] = re.findall(rf"^{key}=(.*)$", (UNITS / unit).read_text(), flags=re.MULTILINE)
    return str(value)


def verify_tree(
    root: Path, units: list[Path], names: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify` of ``units`` installed into a tree laid out as a Debian host
    with cortexd in /opt.

    Verified in place, the units would warn that /opt/cortexd/.venv/bin/cortexd does not exist:
    it does not on a test machine. Rewriting ExecStart= to something that does would verify a
    different file. So the files are verified verbatim under --root, in a tree holding the host's
    own system units (the targets every service depends on), /usr/bin/kill (ExecReload=), and an
    executable where the install puts cortexd.
    """
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "usr/bin").mkdir(parents=True)
    shutil.copy2("/usr/bin/kill", root / "usr/bin/kill")
    (root / "bin").symlink_to("usr/bin")  # merged /usr, as on Debian 12
    stub = root / "opt/cortexd/.venv/bin/cortexd"
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    installed = root / "etc/systemd/system"
    installed.mkdir(parents=True)
    for unit in units:
        shutil.copy2(unit, installed / unit.name)
    return subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", *(names or [u.name for u in units])],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@needs_systemd_analyze
def test_the_units_verify_without_a_warning(tmp_path: Path) -> None:
    result = verify_tree(tmp_path, [UNITS / "cortexd.service", UNITS / "cortexd.socket"])
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@needs_systemd_analyze
def test_the_template_unit_verifies_without_a_warning_for_two_instances(tmp_path: Path) -> None:
    template = UNITS / "cortexd@.service"
    result = verify_tree(tmp_path, [template], ["cortexd@8765.service", "cortexd@8766.service"])
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@needs_systemd_analyze
def test_the_verify_tree_reports_what_is_wrong_with_a_unit(tmp_path: Path) -> None:
    # The check above is only worth something if this way of running it does complain.
    broken = tmp_path / "cortexd-broken.service"
    text = (UNITS / "cortexd.service").read_text()
    broken.write_text(text.replace("Type=notify", "Type=notify\nWatchdogSecs=1s"))
    result = verify_tree(tmp_path / "root", [broken])
    assert "Unknown key 'WatchdogSecs'" in result.stderr


@needs_systemd_analyze
@pytest.mark.parametrize("unit", ["cortexd.service", "cortexd@.service"])
def test_the_service_hardening_rates_ok_or_better(unit: str) -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(UNITS / unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    match = re.search(
        r"Overall exposure level for cortexd(?:@\w*)?\.service: ([\d.]+) (\w+)", result.stdout
    )
    assert match is not None, result.stdout
    assert match[2] in ("PERFECT", "SAFE", "OK"), match[0]


def test_the_stop_timeout_covers_the_slowest_graceful_stop() -> None:
    # Sequential at stop: requests in flight, then running nodes, then cancelled ones.
    worst_s = (
        HTTP_SHUTDOWN_TIMEOUT_S
        + ExecutionSettings().shutdown_grace_s
        + EngineSettings().cancel_grace_s
    )
    timeout = unit_setting("cortexd.service", "TimeoutStopSec")
    assert timeout.endswith("s")
    assert worst_s + 10 <= float(timeout.removesuffix("s"))  # room for closing the rest
    assert unit_setting("cortexd.service", "Type") == "notify"
    assert unit_setting("cortexd.service", "ExecReload") == "/bin/kill -HUP $MAINPID"
