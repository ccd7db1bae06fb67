"""Waking the other daemons on one SQLite file when this one commits events: a datagram to each,
on an abstract Unix socket named by its instance id (Linux; no file, gone with the process).

The datagram carries nothing the receiver needs (it reads the log from the store); it only
saves the receiver's tail its next poll. A lost or refused datagram costs latency, never an
event. Sends never block: a full receiver buffer is a skipped wake-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Sequence

import structlog

log = structlog.get_logger("cortexd.sqlite")


def address(instance: str) -> str:
    return "\0cortexd-wake/" + instance


class Wakeups:
    def __init__(self, instance: str, on_wake: Callable[[], None]) -> None:
        self.address = address(instance)
        self._on_wake = on_wake
        self._socket: socket.socket | None = None
        self._peers: tuple[bytes, ...] = ()
        self.sent = 0
        self.received = 0

    def open(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.bind(self.address)
        self._socket = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)

    def close(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._socket.fileno())
            self._socket.close()
            self._socket = None

    def set_peers(self, addresses: Sequence[str]) -> None:
        self._peers = tuple(a.encode() for a in addresses if a != self.address)

    def notify(self) -> None:
        """This daemon committed events: wake every other daemon's tail."""
        sock = self._socket
        if sock is None:
            return
        for peer in self._peers:
            try:
                sock.sendto(b"!", peer)
                self.sent += 1
            except OSError:  # gone (refused), or its buffer is full: it polls anyway
                pass

    def _readable(self) -> None:
        sock = self._socket
        if sock is None:
            return
        woke = False
        for _ in range(1024):  # bounded: a flood cannot hold the loop
            try:
                sock.recv(16)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            woke = True
            self.received += 1
        if woke:
            self._on_wake()
