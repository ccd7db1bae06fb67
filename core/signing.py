"""The signature of cortexd's webhooks, both ways (the sink's deliveries, and requests to an
inbound hook): `sha256=` and the hex HMAC-SHA256 of the raw body, keyed by the secret; for a
replay-safe hook, of `<timestamp>.<raw body>`. Standard library only: the CLI signs with it
without loading the rest of cortexd."""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Cortexd-Signature"
TIMESTAMP_HEADER = "X-Cortexd-Timestamp"


def signature(secret: bytes, body: bytes) -> str:
    """The `X-Cortexd-Signature` value: `sha256=` and the hex HMAC-SHA256 of `body`."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def signed_content(body: bytes, timestamp: str | None) -> bytes:
    """What a signature covers: the body, or `<timestamp>.<body>` for a replay-safe hook."""
    return body if timestamp is None else timestamp.encode() + b"." + body
