"""systemd without libsystemd: sd_notify (one datagram to ``$NOTIFY_SOCKET``), the watchdog and
status pings, and socket activation (``$LISTEN_PID``, ``$LISTEN_FDS``, ``$LISTEN_FDNAMES``).

Outside systemd none of the variables is set and every function here does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping

import structlog

log = structlog.get_logger("cortexd.systemd")

# SD_LISTEN_FDS_START: passed sockets follow stdin, stdout and stderr.
LISTEN_FDS_START = 3
# Meant for this process alone: taken out of the environment once read, so that a subprocess a
# plugin starts can neither notify on the daemon's behalf nor take its sockets for its own.
VARIABLES = (
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
)


class SystemdError(Exception):
    """A systemd variable is malformed, or a passed descriptor is not a listening stream socket."""


def take_environment(environ: MutableMapping[str, str]) -> dict[str, str]:
    """Remove the systemd variables from ``environ`` and return them."""
    return {name: environ.pop(name) for name in VARIABLES if name in environ}


def notify_socket(env: Mapping[str, str]) -> str | None:
    """``$NOTIFY_SOCKET`` once checked, or None outside systemd."""
    value = env.get("NOTIFY_SOCKET", "")
    if not value:
        return None
    if not value.startswith(("/", "@")):
        raise SystemdError(f"NOTIFY_SOCKET={value!r}: not an absolute path or @abstract name")
    return value


def watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds between pings (half of ``WATCHDOG_USEC``, as sd_watchdog_enabled advises), or
    None when there is no watchdog or it watches another process (``WATCHDOG_PID``)."""
    usec = _integer(env, "WATCHDOG_USEC")
    if usec is None:
        return None
    if usec <= 0:
        raise SystemdError(f"WATCHDOG_USEC={usec}: must be positive")
    watched = _integer(env, "WATCHDOG_PID")
    if watched is not None and watched != pid:
        return None
    return usec / 2 / 1_000_000


def listen_fds(env: Mapping[str, str], pid: int) -> list[tuple[int, str]]:
    """The passed file descriptors with their names, as sd_listen_fds_with_names reads them:
    none when ``LISTEN_PID`` is unset or names another process."""
    listen_pid = _integer(env, "LISTEN_PID")
    if listen_pid is None or listen_pid != pid:
        return []
    count = _integer(env, "LISTEN_FDS") or 0
    if count < 0:
        raise SystemdError(f"LISTEN_FDS={count}: must not be negative")
    names = env["LISTEN_FDNAMES"].split(":") if "LISTEN_FDNAMES" in env else ["unknown"] * count
    if len(names) != count:
        raise SystemdError(f"LISTEN_FDNAMES has {len(names)} names for {count} descriptors")
    return [(LISTEN_FDS_START + i, name) for i, name in enumerate(names)]


def inherited_sockets(fds: list[tuple[int, str]]) -> list[socket.socket]:
    """Listening stream sockets (TCP or Unix) for the passed descriptors, not inherited further."""
    sockets = []
    for fd, name in fds:
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            raise SystemdError(f"passed fd {fd} ({name}): {exc.strerror}") from exc
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        if sock.type != socket.SOCK_STREAM or not listening:
            sock.detach()  # not ours to close: the error ends the process anyway
            raise SystemdError(f"passed fd {fd} ({name}): not a listening stream socket")
        sock.set_inheritable(False)
        sockets.append(sock)
    return sockets


def _integer(env: Mapping[str, str], name: str) -> int | None:
    if name not in env:
        return None
    try:
        return int(env[name])
    except ValueError:
        raise SystemdError(f"{name}={env[name]!r}: not an integer") from None


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock systemd compares MONOTONIC_USEC= against."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """sd_notify: each message is one datagram of ``KEY=value`` lines; a no-op without a socket.

    ``socket_name`` is ``$NOTIFY_SOCKET`` as systemd spells it: a path, or ``@name`` for a socket in
    the abstract namespace, whose address starts with a NUL byte instead.
    """

    def __init__(self, socket_name: str | None) -> None:
        self.socket_name = socket_name
        self._address = socket_name
        if socket_name is not None and socket_name.startswith("@"):
            self._address = "\0" + socket_name[1:]
        self._failing = False

    def send(self, *fields: str) -> None:
        if self._address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                # Never block the event loop: systemd reads promptly, and a message it could
                # not take is better lost than a stalled daemon.
                sock.setblocking(False)
                sock.sendto("\n".join(fields).encode(), self._address)
        except OSError as exc:
            if not self._failing:  # once per outage, not once per watchdog ping
                log.warning("sd_notify_failed", socket=self.socket_name, error=str(exc))
            self._failing = True
            return
        if self._failing:
            log.info("sd_notify_recovered", socket=self.socket_name)
            self._failing = False

    def ready(self) -> None:
        self.send("READY=1")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def reloading(self) -> None:
        self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def status(self, text: str) -> None:
        self.send("STATUS=" + " ".join(text.splitlines()))


async def watchdog_pings(notifier: Notifier, interval_s: float) -> None:
    """Ping from the event loop itself: a loop blocked past WatchdogSec misses its pings, and
    systemd restarts the daemon, which is the point of the watchdog."""
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval_s)


async def status_updates(
    notifier: Notifier,
    text: Callable[[], str],
    interval_s: float,
    refresh: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """STATUS= whenever the text changes, at most once per interval: run counts change with
    every run, and each update is work for systemd. `refresh`, awaited before each look,
    brings what the text reads up to date (a failed refresh leaves it as it was)."""
    sent = None
    while True:
        if refresh is not None:
            with contextlib.suppress(Exception):
                await refresh()
        current = text()
        if current != sent:
            notifier.status(current)
            sent = current
        await asyncio.sleep(interval_s)
