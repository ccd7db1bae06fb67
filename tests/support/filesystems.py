"""Small file systems a test mounts for the store, to fill up or to make fail (root only).

Without root (or without `mount`) a test that needs one skips and says why; with
``CORTEXD_REQUIRE_TMPFS=1`` (what ``.ci/run`` sets) it fails instead, so CI cannot pass
without having run it. Whatever is mounted is unmounted when the test ends.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

REQUIRE_TMPFS = "CORTEXD_REQUIRE_TMPFS"
CHUNKS = (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1)


def cannot_mount(why: str) -> NoReturn:
    if os.environ.get(REQUIRE_TMPFS) == "1":
        pytest.fail(f"{REQUIRE_TMPFS}=1 but {why}", pytrace=False)
    pytest.skip(why)


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin"}
    return subprocess.run(command, capture_output=True, text=True, env=env, check=False)


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        cannot_mount(f"mounting {what} needs root (this test runs as uid {os.geteuid()})")


@contextlib.contextmanager
def _mounted(path: Path) -> Iterator[Path]:
    try:
        yield path
    finally:
        done = _run("umount", str(path))
        if done.returncode != 0:  # a process of the test still holds it: detach it anyway
            _run("umount", "-l", str(path))
            raise AssertionError(f"umount {path} failed: {done.stderr.strip()}")


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (as mount's size= option) at `path`."""
    _need_root("a tmpfs")
    path.mkdir(parents=True, exist_ok=True)
    done = _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path))
    if done.returncode != 0:
        cannot_mount(f"mount -t tmpfs failed: {done.stderr.strip()}")
    with _mounted(path):
        yield path


def fill(directory: Path) -> Path:
    """Fill the file system of `directory` to the last byte; the file that fills it."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in CHUNKS:
            block = b"\0" * size
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, block)
    finally:
        os.close(fd)
    return filler


@contextlib.contextmanager
def ext4(image: Path, path: Path, size: str) -> Iterator[Path]:
    """An ext4 file system in the file `image` (on a loop device), mounted at `path` with
    `errors=remount-ro`: the kernel turns it read-only at its first error."""
    _need_root("an ext4 image")
    done = _run("truncate", "-s", size, str(image))
    if done.returncode == 0:
        done = _run("mkfs.ext4", "-q", "-F", str(image))
    if done.returncode != 0:
        cannot_mount(f"cannot make an ext4 image: {done.stderr.strip()}")
    path.mkdir(parents=True, exist_ok=True)
    done = _run("mount", "-o", "loop,errors=remount-ro", str(image), str(path))
    if done.returncode != 0:
        cannot_mount(f"cannot mount an ext4 image on a loop device: {done.stderr.strip()}")
    with _mounted(path):
        yield path


def break_ext4(path: Path) -> None:
    """Make the kernel record an error on the ext4 file system mounted at `path` (its sysfs
    `trigger_fs_error`, meant for testing): with `errors=remount-ro` it goes read-only at
    once, under every open file, as it does after a real I/O error or corruption."""
    source = _run("findmnt", "-n", "-o", "SOURCE", str(path)).stdout.strip()
    trigger = Path("/sys/fs/ext4") / Path(source).name / "trigger_fs_error"
    if not trigger.exists():
        cannot_mount(f"this kernel has no {trigger}")
    trigger.write_text("cortexd test: the store's file system fails\n")
    options = _run("findmnt", "-n", "-o", "OPTIONS", str(path)).stdout.strip().split(",")
    # Linux 6.15 and later show `rw,...,emergency_ro`; earlier ones `ro`.
    assert "ro" in options or "emergency_ro" in options, f"{path} is still writable: {options}"


def repair_ext4(image: Path, path: Path) -> None:
    """What an operator does once the daemon is stopped: unmount, check, mount again."""
    for command in (
        ("umount", str(path)),
        ("e2fsck", "-f", "-y", str(image)),
        ("mount", "-o", "loop,errors=remount-ro", str(image), str(path)),
    ):
        done = _run(*command)
        # e2fsck: 1 means errors were corrected.
        assert done.returncode in ((0, 1) if command[0] == "e2fsck" else (0,)), (
            f"{' '.join(command)}: {done.stdout}{done.stderr}"
        )
