"""Idempotent starts (DESIGN §10): an `Idempotency-Key` makes a retried request find the run
its first attempt made instead of making another.

The key is stored with the run, in the transaction that creates it, under a unique key on
(project, key): two requests racing with one key make one run whatever the daemon each
reaches. With the key goes a fingerprint of what the request asked for (its target and its
body), so a key reused for a different request is an error and not a silent replay.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from core.errors import CortexdError

# As Stripe's and the IETF draft's keys: at most 255 characters, visible ASCII and spaces.
MAX_KEY_CHARS = 255
_KEY = re.compile(r"[\x20-\x7e]{1,255}")
DEFAULT_TTL_S = 86_400.0


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """A request's key, the fingerprint of the request, and how long the key is remembered
    (counted from the creation of the run it made)."""

    key: str
    fingerprint: str
    ttl_s: float = DEFAULT_TTL_S


class KeyTaken(CortexdError):
    """The key already made a run within its time to live (the store's answer; the service
    turns it into that run, or into a 422 when the fingerprints differ)."""

    def __init__(self, run_id: str, fingerprint: str) -> None:
        super().__init__(f"the idempotency key already made run {run_id!r}")
        self.run_id = run_id
        self.fingerprint = fingerprint


def valid_key(raw: str) -> bool:
    return _KEY.fullmatch(raw) is not None and raw.strip() == raw


def fingerprint(target: str, body: bytes) -> str:
    """What identifies a request for its key: the run's target (a graph, a hook) and the body
    (canonical JSON for runs, the raw bytes for hooks, which are signed as they are)."""
    digest = hashlib.sha256(target.encode())
    digest.update(b"\0")
    digest.update(body)
    return digest.hexdigest()
