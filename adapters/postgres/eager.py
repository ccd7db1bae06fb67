"""The writer's connection: while its transaction waits for or holds the event log's head,
it waits for the server on the spot for a moment rather than through the event loop.

Every daemon's write transactions are serialised by the head's lock (`adapters.postgres.
writer`). Awaiting an answer through the loop lets every task that is ready run first (HTTP
requests, other runs' steps): on a busy daemon each wait costs milliseconds, all of them with
the lock held, and the other daemons wait that long too. A pipelined transaction waits on the
server a few times (the head, an operation's read, the COMMIT), a fraction of a millisecond
each on a near server: `eager` polls the socket for up to `EAGER_S` before it gives the loop
its turn, so a slow answer (a far server, a stalled one) still costs the loop at most that.
"""

from __future__ import annotations

import select
import time
from collections.abc import Generator
from typing import Any, TypeVar

import psycopg
from psycopg.waiting import Ready, Wait

from adapters.postgres.db import conninfo

RV = TypeVar("RV")

EAGER_S = 0.002  # a round trip or two to a server on the same network


class EagerConnection(psycopg.AsyncConnection[Any]):
    # Set by the writer while its transaction holds the head.
    eager = False

    async def wait(self, gen: Generator[Any, Any, RV], *args: Any, **kwargs: Any) -> RV:
        if not self.eager:
            return await super().wait(gen, *args, **kwargs)
        fileno = self.pgconn.socket
        deadline = time.monotonic() + EAGER_S
        try:
            state = next(gen)
            while True:
                ready = _poll(fileno, state, deadline - time.monotonic())
                if ready == Ready.NONE:  # slow: the rest through the loop
                    return await super().wait(_rest(state, gen), *args, **kwargs)
                state = gen.send(ready)
        except StopIteration as done:
            result: RV = done.value
            return result
        except OSError as exc:
            raise psycopg.OperationalError("connection socket closed") from exc


async def connect_eager(url: str) -> EagerConnection:
    return await EagerConnection.connect(conninfo(url), autocommit=True)


def _poll(fileno: int, state: int, timeout_s: float) -> int:
    poller = select.poll()
    events = (select.POLLIN if state & Wait.R else 0) | (select.POLLOUT if state & Wait.W else 0)
    poller.register(fileno, events)
    ready: int = Ready.NONE
    for _, event in poller.poll(max(0, int(timeout_s * 1000))):
        if event & (select.POLLIN | select.POLLERR | select.POLLHUP):
            ready |= Ready.R
        if event & select.POLLOUT:
            ready |= Ready.W
    return ready


def _rest(state: Any, gen: Generator[Any, Any, RV]) -> Generator[Any, Any, RV]:
    """`gen` from its pending `state` on: what the loop's wait takes over."""
    while True:
        ready = yield state
        try:
            state = gen.send(ready)
        except StopIteration as done:
            result: RV = done.value
            return result
