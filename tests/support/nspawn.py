"""A Debian 12 container booted with systemd as PID 1 (`systemd-nspawn -b`), to run the unit files
under a real systemd rather than check them statically.

Two things are cached outside the repository, in `CACHE` (`/var/cache/cortexd-test`), because
making them takes a minute or more:

- the tree: `debootstrap --variant=minbase` of bookworm with `PACKAGES` (systemd, python3...),
  made once; `bookworm.stamp` says with which packages. The containers boot it with
  `--volatile=overlay`, so every boot starts from the same pristine tree and writes nothing to it.
- a virtual environment made by the tree's own `python3 -m venv` (as docs/operations.md installs
  cortexd), holding cortexd's dependencies at the versions the host's `.venv` has (downloaded by
  the host's pip, so its index and certificates apply) and cortexd itself installed editable
  from `/opt/cortexd`. It is made again when `pyproject.toml` or those versions change.

A container binds the worktree read-only at `/opt/cortexd` and that environment over
`/opt/cortexd/.venv`: it runs the worktree's code as it is, through the unit's own
`ExecStart=/opt/cortexd/.venv/bin/cortexd`. It shares the host's network, so the host reaches the
daemons at 127.0.0.1. Commands run inside through `nsenter` into the leader's namespaces
(`--register=no` leaves nothing for machinectl to find); nspawn's `X_NSPAWN_LEADER_PID`
notification names the leader.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parents[2]
CACHE = Path(os.environ.get("CORTEXD_NSPAWN_CACHE", "/var/cache/cortexd-test"))
SUITE = "bookworm"
MIRROR = os.environ.get("CORTEXD_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# systemd as PID 1 and its bus; libnss-systemd resolves dynamic users' names (systemd's Recommends,
# as on an ordinary Debian install); procps for /bin/kill, which the units' ExecReload= runs
# (priority "important": every Debian install but a minbase has it); python3-venv for the
# environment cortexd runs in.
PACKAGES = ("systemd", "dbus", "libnss-systemd", "procps", "python3", "python3-venv")
# Set by .ci/run: a machine that cannot boot the container fails the test instead of skipping it.
REQUIRE = "CORTEXD_REQUIRE_NSPAWN"
TOOLS_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
DEBOOTSTRAP_TIMEOUT_S = 1800.0
VENV_TIMEOUT_S = 900.0
BOOT_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 60.0
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def unavailable() -> str | None:
    """Why this machine cannot boot the container, or None when it can (or can build it)."""
    if sys.platform != "linux":
        return "systemd-nspawn needs Linux"
    if os.geteuid() != 0:
        return "needs root: systemd-nspawn boots the container (and debootstrap builds its tree)"
    tools = ["systemd-nspawn", "nsenter"]
    if not _tree_ready():
        tools.append("debootstrap")
    missing = [tool for tool in tools if shutil.which(tool, path=TOOLS_PATH) is None]
    if missing:
        return f"needs {' '.join(missing)}: apt-get install debootstrap systemd-container"
    if not (ROOT / ".venv").is_dir():
        return f"needs {ROOT / '.venv'} (make install): the container mounts its venv there"
    return None


# -- the cached tree and environment ----------------------------------------------------------


def _tree_stamp() -> str:
    return json.dumps({"suite": SUITE, "variant": "minbase", "packages": sorted(PACKAGES)})


def _tree_ready() -> bool:
    stamp = CACHE / f"{SUITE}.stamp"
    return (CACHE / SUITE).is_dir() and stamp.is_file() and stamp.read_text() == _tree_stamp()


@contextlib.contextmanager
def _cache_lock(timeout: float) -> Iterator[None]:
    """One builder at a time: test runs of several worktrees may start together."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".lock").open("w") as lock:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{CACHE}/.lock held for {timeout:.0f} s") from None
                time.sleep(0.5)
        yield


def _remove(path: Path) -> None:
    """rm -rf of a cache directory, refusing if anything is mounted below it (a debootstrap that
    failed half-way can leave /proc or /dev mounted in its target)."""
    if not path.exists() and not path.is_symlink():
        return
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as mountinfo:
        points = [line.split()[4] for line in mountinfo]
    below = [p for p in points if p == real or p.startswith(real + "/")]
    if below:
        raise RuntimeError(f"not removing {path}: {below} mounted below it; umount them first")
    subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)], check=True, timeout=600)


def _run_logged(argv: list[str], log: Path, timeout: float, what: str) -> None:
    with log.open("wb") as out:
        result = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=timeout
        )
    if result.returncode != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"{what} failed ({result.returncode}); {log} ends with:\n{tail}")


def ensure_tree() -> Path:
    """The tree, made with debootstrap if it is not in the cache yet (about a minute)."""
    tree = CACHE / SUITE
    with _cache_lock(DEBOOTSTRAP_TIMEOUT_S):
        if _tree_ready():
            return tree
        stamp = CACHE / f"{SUITE}.stamp"
        stamp.unlink(missing_ok=True)
        partial = CACHE / f"{SUITE}.part"
        _remove(partial)
        _remove(tree)
        debootstrap = shutil.which("debootstrap", path=TOOLS_PATH)
        assert debootstrap is not None
        argv = [debootstrap, "--variant=minbase", f"--include={','.join(PACKAGES)}"]
        _run_logged(
            [*argv, SUITE, str(partial), MIRROR],
            CACHE / f"{SUITE}.log",
            DEBOOTSTRAP_TIMEOUT_S,
            "debootstrap",
        )
        partial.rename(tree)
        stamp.write_text(_tree_stamp())
        return tree


def _host_versions() -> str:
    """What the host's environment has installed, as pip constraints (cortexd itself left out)."""
    freeze = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return "".join(
        line + "\n"
        for line in sorted(freeze.stdout.splitlines())
        if line and not line.startswith(("#", "-e ", "cortexd"))
    )


def nspawn_argv(tree: Path, *options: str) -> list[str]:
    nspawn = shutil.which("systemd-nspawn", path=TOOLS_PATH)
    assert nspawn is not None
    # --volatile=overlay: the tree is the lower layer of an overlay whose upper one is a tmpfs,
    # so nothing a container writes outlives it. A unique machine name keeps concurrent
    # containers' scratch paths (/run/systemd/nspawn/propagate/NAME) apart.
    name = f"cortexd-{uuid.uuid4().hex[:8]}"
    return [
        nspawn,
        "--quiet",
        "--register=no",
        "--keep-unit",
        f"--machine={name}",
        f"--directory={tree}",
        "--volatile=overlay",
        *options,
    ]


def ensure_venv(tree: Path) -> Path:
    """The environment for /opt/cortexd/.venv, made in the container if not cached (~15 s)."""
    pyproject = (ROOT / "pyproject.toml").read_bytes()
    constraints = _host_versions()
    key = hashlib.sha256(
        b"\0".join([pyproject, constraints.encode(), _tree_stamp().encode()])
    ).hexdigest()[:16]
    venv = CACHE / f"venv-{key}"
    with _cache_lock(VENV_TIMEOUT_S):
        if (venv / ".complete").is_file():
            return venv
        for old in CACHE.glob("venv-*"):
            _remove(old)
        partial = CACHE / f"venv-{key}.part"
        partial.mkdir()
        project = tomllib.loads(pyproject.decode())
        # The build backend too: the editable install builds cortexd with it, offline.
        wanted = [*project["build-system"]["requires"], *project["project"]["dependencies"]]
        with tempfile.TemporaryDirectory(dir=CACHE, prefix="wheels-") as wheels:
            (Path(wheels) / "constraints.txt").write_text(constraints)
            pip = [sys.executable, "-m", "pip", "download", "--quiet", "--dest", wheels]
            _run_logged(
                [*pip, "--constraint", f"{wheels}/constraints.txt", *wanted],
                CACHE / "venv-download.log",
                VENV_TIMEOUT_S,
                "pip download",
            )
            install = (
                "python3 -m venv /opt/cortexd/.venv && "
                "/opt/cortexd/.venv/bin/pip install --quiet --no-index --find-links /run/wheels "
                "--constraint /run/wheels/constraints.txt --editable /opt/cortexd"
            )
            # An overlay with a throw-away upper layer at /opt/cortexd: the editable install
            # writes cortexd.egg-info into the source, which must not touch the worktree.
            argv = nspawn_argv(
                tree,
                f"--overlay={ROOT}::/opt/cortexd",
                f"--bind={partial}:/opt/cortexd/.venv",
                f"--bind-ro={wheels}:/run/wheels",
                "--setenv=PIP_DISABLE_PIP_VERSION_CHECK=1",
                "/bin/sh",
                "-c",
                install,
            )
            _run_logged(argv, CACHE / "venv-build.log", VENV_TIMEOUT_S, "the venv's pip install")
        (partial / ".complete").write_text(key + "\n")
        partial.rename(venv)
        return venv


# -- a booted container -----------------------------------------------------------------------


class Container:
    """One boot of the tree: `systemd-nspawn -b`, commands inside by nsenter, files inside
    through /proc/LEADER/root, and an orderly poweroff."""

    def __init__(self, tree: Path, venv: Path, workdir: Path) -> None:
        self.tree = tree
        self.venv = venv
        self.workdir = workdir
        self.console = workdir / "console.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.leader = 0

    def boot(self, timeout: float = BOOT_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        name = f"@cortexd-nspawn-{uuid.uuid4().hex}"  # abstract: no path length to mind
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind("\0" + name[1:])
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("NOTIFY_SOCKET", "WATCHDOG_", "LISTEN_"))
        }
        argv = nspawn_argv(
            self.tree,
            "--boot",
            "--notify-ready=yes",
            "--console=read-only",
            f"--bind-ro={ROOT}:/opt/cortexd",
            f"--bind-ro={self.venv}:/opt/cortexd/.venv",
        )
        try:
            with self.console.open("wb") as console:
                self.proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=console,
                    stderr=subprocess.STDOUT,
                    env={**env, "NOTIFY_SOCKET": name},
                )
            ready = False
            while not (ready and self.leader):
                if self.proc.poll() is not None:
                    raise AssertionError(f"nspawn exited with {self.proc.returncode}: {self.log()}")
                left = deadline - time.monotonic()
                assert left > 0, f"the container was not ready in {timeout} s: {self.log()}"
                notify.settimeout(min(left, 0.5))
                try:
                    datagram = notify.recv(4096).decode()
                except TimeoutError:
                    continue
                fields = dict(line.split("=", 1) for line in datagram.splitlines() if "=" in line)
                self.leader = int(fields.get("X_NSPAWN_LEADER_PID", self.leader))
                ready = ready or fields.get("READY") == "1"
        finally:
            notify.close()
        # READY=1 is the container's systemd up; the boot transaction may still be running.
        state = self.run(
            "systemctl",
            "is-system-running",
            "--wait",
            check=False,
            timeout=max(deadline - time.monotonic(), 1.0),
        ).stdout.strip()
        if state not in ("running", "degraded"):
            failed = self.run("systemctl", "--failed", "--no-legend", check=False).stdout
            raise AssertionError(f"the container's systemd is {state!r}; failed: {failed}")

    def log(self) -> str:
        return self.console.read_text(errors="replace")[-4000:]

    def run(
        self, *argv: str, check: bool = True, timeout: float = 60.0, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """A command inside the container: in all the leader's namespaces, as its root."""
        assert self.leader, "not booted"
        result = subprocess.run(
            ["nsenter", f"--target={self.leader}", "--all", *argv],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={"PATH": CONTAINER_PATH, "LANG": "C.UTF-8", "SYSTEMD_COLORS": "0"},
            check=False,
        )
        if check and result.returncode != 0:
            message = f"{' '.join(argv)} exited with {result.returncode}:\n"
            message += result.stdout + result.stderr
            if argv[0] == "systemctl":
                message += (
                    "\nthe journal ends with:\n"
                    + self.run(
                        "journalctl", "--boot", "--lines=40", "--no-pager", check=False
                    ).stdout
                )
            raise AssertionError(message)
        return result

    def path(self, inside: str) -> Path:
        """A path in the container's file system, as the host reaches it."""
        return Path(f"/proc/{self.leader}/root") / inside.lstrip("/")

    def install(self, inside: str, text: str, mode: int = 0o644) -> None:
        target = self.path(inside)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        out = self.run("systemctl", "show", unit, *(f"--property={p}" for p in properties)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str) -> list[dict[str, Any]]:
        """cortexd's JSON lines in the journal of `unit`, this boot."""
        out = self.run("journalctl", "--boot", f"--unit={unit}", "--output=cat", "--no-pager")
        lines = []
        for line in out.stdout.splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    lines.append(json.loads(line))
        return lines

    def shutdown(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM to nspawn powers the container off in order; a container that does not go in
        time has its PID 1 killed, which ends every process in it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            if self.leader:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.leader, signal.SIGKILL)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            raise AssertionError(
                f"the container did not power off in {timeout} s: {self.log()}"
            ) from None


def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.05)
