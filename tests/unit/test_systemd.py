"""systemd's variables read as libsystemd reads them, and sd_notify's datagrams, on real sockets."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from adapters import systemd
from adapters.config import AuthSettings, Settings
from adapters.serve import StartupError, _refuse_unauthenticated_exposure, is_loopback
from adapters.systemd import SystemdError


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(5)
    with sock:
        yield str(tmp_path / "notify"), sock


def fields(datagram: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in datagram.decode().split("\n"))


# -- NOTIFY_SOCKET -------------------------------------------------------------------------------


def test_no_notify_socket_means_notifying_does_nothing() -> None:
    assert systemd.notify_socket({}) is None
    assert systemd.notify_socket({"NOTIFY_SOCKET": ""}) is None
    systemd.Notifier(None).ready()  # no socket, no error


def test_a_notify_socket_must_be_a_path_or_an_abstract_name() -> None:
    assert systemd.notify_socket({"NOTIFY_SOCKET": "/run/systemd/notify"}) == "/run/systemd/notify"
    assert systemd.notify_socket({"NOTIFY_SOCKET": "@cortexd"}) == "@cortexd"
    with pytest.raises(SystemdError, match="NOTIFY_SOCKET"):
        systemd.notify_socket({"NOTIFY_SOCKET": "run/notify"})


def test_each_message_is_one_datagram_of_key_value_lines(
    receiver: tuple[str, socket.socket],
) -> None:
    path, sock = receiver
    notifier = systemd.Notifier(path)
    notifier.ready()
    assert sock.recv(4096) == b"READY=1"
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    reloading = fields(sock.recv(4096))
    assert reloading["RELOADING"] == "1"
    assert before <= int(reloading["MONOTONIC_USEC"]) <= after
    notifier.status("2 running\n1 queued")  # a newline would end the STATUS field early
    assert sock.recv(4096) == b"STATUS=2 running 1 queued"


def test_an_abstract_socket_is_reached_by_its_name() -> None:
    name = f"cortexd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        systemd.Notifier("@" + name).stopping()
        assert sock.recv(4096) == b"STOPPING=1"


def test_an_unreachable_socket_is_logged_once_per_outage(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    notifier = systemd.Notifier(path)
    with capture_logs() as logs:
        notifier.watchdog()
        notifier.watchdog()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            notifier.watchdog()
    assert [entry["event"] for entry in logs] == ["sd_notify_failed", "sd_notify_recovered"]


# -- WATCHDOG_USEC, WATCHDOG_PID -----------------------------------------------------------------


def test_the_watchdog_is_pinged_every_half_period() -> None:
    assert systemd.watchdog_interval({}, 42) is None
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "30000000"}, 42) == 15.0


def test_a_watchdog_for_another_process_is_not_ours_to_ping() -> None:
    env = {"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "42"}
    assert systemd.watchdog_interval(env, 42) == 0.1
    assert systemd.watchdog_interval(env, 43) is None


@pytest.mark.parametrize(
    "env",
    [
        {"WATCHDOG_USEC": "soon"},
        {"WATCHDOG_USEC": "0"},
        {"WATCHDOG_USEC": "1", "WATCHDOG_PID": "x"},
    ],
)
def test_a_malformed_watchdog_variable_is_an_error(env: dict[str, str]) -> None:
    with pytest.raises(SystemdError, match="WATCHDOG_"):
        systemd.watchdog_interval(env, 42)


# -- LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES -------------------------------------------------------


def test_passed_descriptors_start_at_3_with_their_names() -> None:
    env = {"LISTEN_PID": "42", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "http:admin"}
    assert systemd.listen_fds(env, 42) == [(3, "http"), (4, "admin")]
    assert systemd.listen_fds({"LISTEN_PID": "42", "LISTEN_FDS": "1"}, 42) == [(3, "unknown")]


def test_descriptors_passed_to_another_process_are_not_ours() -> None:
    assert systemd.listen_fds({}, 42) == []
    assert systemd.listen_fds({"LISTEN_PID": "41", "LISTEN_FDS": "1"}, 42) == []


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LISTEN_PID": "me", "LISTEN_FDS": "1"}, "LISTEN_PID"),
        ({"LISTEN_PID": "42", "LISTEN_FDS": "one"}, "LISTEN_FDS"),
        ({"LISTEN_PID": "42", "LISTEN_FDS": "-1"}, "LISTEN_FDS"),
        ({"LISTEN_PID": "42", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "http"}, "1 names for 2"),
    ],
)
def test_malformed_listen_variables_are_an_error(env: dict[str, str], message: str) -> None:
    with pytest.raises(SystemdError, match=message):
        systemd.listen_fds(env, 42)


def test_the_variables_are_taken_out_of_the_environment_children_inherit() -> None:
    environ = {"NOTIFY_SOCKET": "@x", "LISTEN_FDS": "1", "LISTEN_PID": "42", "HOME": "/root"}
    taken = systemd.take_environment(environ)
    assert taken == {"NOTIFY_SOCKET": "@x", "LISTEN_FDS": "1", "LISTEN_PID": "42"}
    assert environ == {"HOME": "/root"}


def test_a_passed_listening_socket_is_served_and_not_inherited_further() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        fd = os.dup(listener.fileno())
        os.set_inheritable(fd, True)  # as systemd passes it
        [sock] = systemd.inherited_sockets([(fd, "http")])
        with sock:
            assert sock.getsockname() == listener.getsockname()
            assert not sock.get_inheritable()


def test_a_passed_descriptor_that_is_not_a_listening_stream_socket_is_refused() -> None:
    read_end, write_end = os.pipe()
    with socket.socket() as unbound, socket.socket(type=socket.SOCK_DGRAM) as datagram:
        try:
            for fd in (read_end, unbound.fileno(), datagram.fileno()):
                with pytest.raises(SystemdError, match=f"fd {fd} \\(http\\)"):
                    systemd.inherited_sockets([(fd, "http")])
        finally:
            os.close(read_end)
            os.close(write_end)


# -- STATUS= ---------------------------------------------------------------------------------------


class RecordingNotifier(systemd.Notifier):
    def __init__(self) -> None:
        super().__init__(None)
        self.sent: list[str] = []

    def status(self, text: str) -> None:
        self.sent.append(text)


async def test_status_is_sent_only_when_it_changes() -> None:
    texts = iter(["0 running", "0 running", "1 running", "1 running", "0 running"])
    done = asyncio.Event()

    def text() -> str:
        current = next(texts, None)
        if current is None:
            done.set()
            return "0 running"
        return current

    notifier = RecordingNotifier()
    task = asyncio.create_task(systemd.status_updates(notifier, text, 0))
    await asyncio.wait_for(done.wait(), timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert notifier.sent == ["0 running", "1 running", "0 running"]


# -- who may listen without [auth] ---------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.8.9.10", "::1", "localhost", "::ffff:127.0.0.1"]
)
def test_loopback_addresses(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "", "::", "192.168.1.10", "example.com"])
def test_addresses_reachable_from_elsewhere(host: str) -> None:
    assert not is_loopback(host)


def test_a_passed_socket_on_every_interface_is_refused_without_auth() -> None:
    # Never bound: an unbound socket's address is 0.0.0.0, as one systemd bound to all would be.
    with socket.socket() as everywhere, socket.create_server(("127.0.0.1", 0)) as loopback:
        with pytest.raises(StartupError, match=r"'0\.0\.0\.0'.*enabled = true"):
            _refuse_unauthenticated_exposure(Settings(), [loopback, everywhere])
        _refuse_unauthenticated_exposure(Settings(), [loopback])
        _refuse_unauthenticated_exposure(Settings(auth=AuthSettings(enabled=True)), [everywhere])
