"""The real daemon as a subprocess: start it, wait until ready, signal it, read its log."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

CORTEXD = Path(sys.executable).parent / "cortexd"
# Configuration the test sets itself, and systemd's variables: were the tests run under systemd,
# the daemon must not notify it, nor take sockets meant for the test runner.
_NOT_INHERITED = ("CORTEXD_", "NOTIFY_SOCKET", "WATCHDOG_", "LISTEN_")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class DaemonProcess:
    """One `cortexd serve` process on a config file in a test's directory."""

    def __init__(
        self, workdir: Path, *, executable: Path = CORTEXD, **sections: dict[str, Any]
    ) -> None:
        self.workdir = workdir
        # The `cortexd` script to run: another environment's, to test what is installed there.
        self.executable = executable
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = workdir / "cortexd.db"
        self.config = workdir / "cortexd.toml"
        settings: dict[str, dict[str, Any]] = {
            "server": {"host": "127.0.0.1", "port": self.port},
            "storage": {"path": str(self.db)},
            **sections,
        }
        self.settings = settings
        self.config.write_text(_toml(settings))
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        # Extra environment for the process, and a command it is started through (such as
        # systemd-socket-activate and its options).
        self.env: dict[str, str] = {}
        self.launcher: list[str] = []

    def write_config(self, **sections: dict[str, Any]) -> None:
        """Rewrite the config file with these sections changed (for a reload, or a restart)."""
        self.settings = {**self.settings, **sections}
        self.config.write_text(_toml(self.settings))

    def spawn(self) -> None:
        """Start the process without waiting for it to be ready."""
        self.starts += 1
        log = (self.workdir / f"daemon-{self.starts}.log").open("wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith(_NOT_INHERITED)}
        self.proc = subprocess.Popen(
            [*self.launcher, str(self.executable), "serve", "--config", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env={**env, **self.env},
        )

    def start(self, timeout: float = 30.0) -> None:
        self.spawn()
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait for a spawned process to answer /readyz with 200 (fail if it exits first)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"cortexd exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.request("GET", "/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"cortexd was not ready within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return (self.workdir / f"daemon-{self.starts}.log").read_text(errors="replace")

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """SIGTERM and wait; SIGKILL only if it will not go (teardown)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired as error:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"cortexd ignored SIGTERM:\n{self.log()}") from error

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        timeout: float = 10.0,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            req.add_header(name, value)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as error:
            raw = error.read()
            return error.code, json.loads(raw) if raw else None


def _toml(sections: dict[str, dict[str, Any]]) -> str:
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in values.items())
    return "\n".join(lines) + "\n"


def until(condition: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    """Wait for `condition`, looking every 50 ms; fail once `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.05)
