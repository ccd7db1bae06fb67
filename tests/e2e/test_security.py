"""Tokens on the real daemon: SIGHUP lets a new token in and an old one out, and no token ever
reaches the daemon's log, not even one given in a WebSocket URL."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.process import DaemonProcess

pytestmark = pytest.mark.e2e
P = "/api/projects/acme/workflows"
FIRST = "first-token-value-0123456789"
SECOND = "second-token-value-9876543210"


def tables(*tokens: tuple[str, str, str]) -> str:
    return "".join(
        "[[auth.tokens]]\n"
        f'name = "{name}"\n'
        f'sha256 = "{hashlib.sha256(secret.encode()).hexdigest()}"\n'
        'projects = ["acme"]\n'
        f'role = "{role}"\n'
        for name, secret, role in tokens
    )


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    process = DaemonProcess(tmp_path, auth={"enabled": True}, logging={"format": "json"})
    yield process
    process.stop()


def configure(daemon: DaemonProcess, *tokens: tuple[str, str, str]) -> None:
    """The daemon's config file with exactly these [[auth.tokens]]."""
    daemon.write_config()
    daemon.config.write_text(daemon.config.read_text() + tables(*tokens))


def get(daemon: DaemonProcess, path: str, token: str | None) -> int:
    request = urllib.request.Request(daemon.url + path)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def until_status(daemon: DaemonProcess, token: str, status: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while get(daemon, f"{P}/graphs", token) != status:
        assert daemon.proc is not None
        assert daemon.proc.poll() is None, daemon.log()
        assert time.monotonic() < deadline, f"never {status}:\n{daemon.log()}"
        time.sleep(0.05)


def logged(daemon: DaemonProcess, event: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in daemon.log().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == event]


async def open_socket(daemon: DaemonProcess, token: str) -> str:
    url = f"{daemon.url}/api/projects/acme/ws?since=0&access_token={token}"
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        await ws.send_str("not json")
        reply = await asyncio.wait_for(ws.receive(), 10)
        return str(json.loads(reply.data)["type"])


def test_sighup_lets_a_new_token_in_and_the_removed_one_out(daemon: DaemonProcess) -> None:
    configure(daemon, ("first", FIRST, "read"))
    daemon.start()
    assert get(daemon, f"{P}/graphs", FIRST) == 200
    assert get(daemon, f"{P}/graphs", SECOND) == 401
    assert get(daemon, f"{P}/graphs", None) == 401
    assert get(daemon, "/healthz", None) == 200

    configure(daemon, ("second", SECOND, "write"))
    daemon.signal(signal.SIGHUP)

    until_status(daemon, SECOND, 200)
    assert get(daemon, f"{P}/graphs", FIRST) == 401
    [reloaded] = logged(daemon, "reloaded")
    assert reloaded["applied"] == ["auth.tokens"]
    assert not logged(daemon, "restart_required")
    assert daemon.proc is not None
    assert daemon.proc.poll() is None


def test_no_token_reaches_the_log(daemon: DaemonProcess) -> None:
    configure(daemon, ("first", FIRST, "read"))
    daemon.start()

    assert asyncio.run(open_socket(daemon, FIRST)) == "error"  # connected, and answered
    assert get(daemon, f"{P}/graphs", FIRST) == 200
    assert get(daemon, f"{P}/graphs", SECOND) == 401
    daemon.stop()

    log = daemon.log()
    assert any(line["path"] == "/api/projects/acme/ws" for line in logged(daemon, "request"))
    assert FIRST not in log
    assert SECOND not in log
