"""The `daemon` fixture: the real `cortexd serve` console script as a subprocess, on a config
file, a database and log files in the test's own directory, listening on 127.0.0.1 only."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.process import CORTEXD, free_port

READY_TIMEOUT_S = 20.0
SHUTDOWN_GRACE_S = 2.0
# Beyond the engine's grace: aiohttp's stop, the store's close and interpreter exit.
STOP_MARGIN_S = 10.0
# The test runner's own cortexd settings and systemd variables must not reach the daemon.
_NOT_INHERITED = ("CORTEXD_", "NOTIFY_SOCKET", "WATCHDOG_", "LISTEN_")


def daemon_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(_NOT_INHERITED)}


class Daemon:
    """One daemon's files, and its current process (a restart keeps the files)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db_path = workdir / "cortexd.db"
        self.config_path = workdir / "cortexd.toml"
        self.shutdown_grace_s = SHUTDOWN_GRACE_S
        self.config_path.write_text(
            "[server]\n"
            'host = "127.0.0.1"\n'
            f"port = {self.port}\n"
            "[storage]\n"
            f"path = {json.dumps(str(self.db_path))}\n"
            "[execution]\n"
            f"shutdown_grace_s = {self.shutdown_grace_s}\n"
            "[logging]\n"
            'format = "json"\n'
        )
        self.starts = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        assert self._proc is not None, "the daemon was never started"
        return self._proc

    def _log_path(self, stream: str) -> Path:
        return self.workdir / f"daemon-{self.starts}.{stream}.log"

    def log_text(self) -> str:
        """stdout then stderr of the current (or last) process."""
        return "\n".join(
            self._log_path(stream).read_text(errors="replace")
            for stream in ("stdout", "stderr")
            if self._log_path(stream).exists()
        )

    def start(self) -> None:
        self.starts += 1
        with (
            self._log_path("stdout").open("wb") as out,
            self._log_path("stderr").open("wb") as err,
        ):
            self._proc = subprocess.Popen(
                [str(CORTEXD), "serve", "--config", str(self.config_path)],
                stdout=out,
                stderr=err,
                cwd=self.workdir,
                env=daemon_env(),
            )
        try:
            self._wait_ready()
        except BaseException:
            self._kill()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._ready():
                return
            try:
                # The pause between polls, cut short if the process exits.
                code = self.proc.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                continue
            pytest.fail(f"cortexd exited with {code} before it was ready:\n{self.log_text()}")
        pytest.fail(f"cortexd was not ready within {READY_TIMEOUT_S}s:\n{self.log_text()}")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=1.0) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def terminate(self) -> int:
        """SIGTERM and wait for the exit code; SIGKILL (and fail) if it does not go in time."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=self.shutdown_grace_s + STOP_MARGIN_S)
        except subprocess.TimeoutExpired:
            self._kill()
            pytest.fail(
                f"cortexd still ran {self.shutdown_grace_s + STOP_MARGIN_S}s after SIGTERM "
                f"and was killed:\n{self.log_text()}"
            )

    def _kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        """Stop (SIGTERM, must exit 0) and start again on the same config and database."""
        code = self.terminate()
        assert code == 0, f"cortexd exited with {code} on SIGTERM:\n{self.log_text()}"
        self.start()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    process = Daemon(tmp_path)
    process.start()
    yield process
    process.terminate()
