"""Proving a daemon on this host dead: each instance holds an exclusive `flock` on a file of its
own beside the database for as long as its process lives. The kernel lets go of it when the
process ends, however it ends (kill -9 included), so a lock that can be taken is a dead
instance; a stopped (SIGSTOP) or busy one still holds it, and only its lease expiring frees
its runs. The files live in `<database>.instances/`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

import structlog

log = structlog.get_logger("cortexd.sqlite")


def instances_dir(database: Path) -> Path:
    return database.with_name(database.name + ".instances")


class InstanceLock:
    """This instance's own lock, held from `acquire()` to `release()` (or the process's end)."""

    def __init__(self, folder: Path, instance: str) -> None:
        self._path = folder / f"{instance}.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        # O_CLOEXEC (Python's default): a child process never inherits the lock.
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            try:
                self._path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                # A read-only or failing file system: the file stays, but the lock goes with
                # the descriptor, and a lock anyone can take is a dead instance's anyway.
                log.warning("instance_lock_not_removed", path=str(self._path), error=str(exc))
            os.close(self._fd)
            self._fd = None


class FileLiveness:
    def __init__(self, folder: Path) -> None:
        self._folder = folder

    async def is_dead(self, instance: str) -> bool:
        if "/" in instance or instance.startswith("."):
            return False  # not a name this daemon ever makes; nothing to prove
        path = self._folder / f"{instance}.lock"
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return True  # it stopped and removed its lock, or it was proven dead before
        except OSError:
            log.warning("instance_lock_unreadable", instance=instance, exc_info=True)
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its process holds it: alive, stopped or stalled
        finally:
            os.close(fd)  # also lets go of the lock, if this took it
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return True
