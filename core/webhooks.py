"""Inbound webhooks (DESIGN §10): a hook starts a run of its graph for whoever signs the
request with the hook's secret.

The signature is the credential: `X-Cortexd-Signature: sha256=<hex HMAC-SHA256(secret, raw
body)>`, the scheme of the webhook sink's outbound deliveries, compared in constant time. A hook
made with `tolerance_s` is replay-safe: a request must also carry `X-Cortexd-Timestamp` (Unix
seconds) within that many seconds of the daemon's clock, and the signature then covers
`<timestamp>.<raw body>` (as Stripe's and Slack's do), so a captured request stops working.
"""

from __future__ import annotations

import hmac
import re
import secrets
from datetime import datetime

from pydantic import Field

from core.domain import ID_PATTERN, Model
from core.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature, signed_content

MAX_TOLERANCE_S = 86_400
_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


class WebhookSpec(Model):
    """What a client sends to create a hook."""

    id: str | None = Field(default=None, pattern=ID_PATTERN)
    workflow_id: str = Field(pattern=ID_PATTERN)
    tolerance_s: int | None = Field(
        default=None,
        ge=1,
        le=MAX_TOLERANCE_S,
        description="Replay safety: requests must carry X-Cortexd-Timestamp within this many "
        "seconds, and the signature covers '<timestamp>.<body>'. None: the body alone.",
    )


class Webhook(Model):
    """A hook as stored; `secret` is shown once, in the answer that creates it."""

    id: str
    project_id: str
    workflow_id: str
    tolerance_s: int | None = None
    created_at: datetime
    secret: str | None = None


def new_secret() -> str:
    return secrets.token_urlsafe(32)


class BadSignature(Exception):
    """Why a request's signature is refused (the message is safe to show the caller)."""


def verify(
    hook: Webhook,
    secret: str,
    body: bytes,
    presented: str | None,
    timestamp: str | None,
    now: datetime,
) -> None:
    """Accept the request or raise BadSignature. The comparison takes the same time however
    many characters match."""
    if presented is None:
        raise BadSignature(f"the request needs an {SIGNATURE_HEADER}: sha256=<hex> header")
    if not _SIGNATURE.fullmatch(presented.strip()):
        raise BadSignature(f"{SIGNATURE_HEADER} must be sha256= and 64 hex digits")
    if hook.tolerance_s is not None:
        if timestamp is None or not _TIMESTAMP.fullmatch(timestamp.strip()):
            raise BadSignature(f"this hook needs an {TIMESTAMP_HEADER} header (Unix seconds)")
        timestamp = timestamp.strip()
        if abs(now.timestamp() - int(timestamp)) > hook.tolerance_s:
            raise BadSignature(
                f"{TIMESTAMP_HEADER} is more than {hook.tolerance_s} s from the server's clock"
            )
    else:
        timestamp = None
    expected = signature(secret.encode(), signed_content(body, timestamp))
    if not hmac.compare_digest(expected.encode(), presented.strip().lower().encode()):
        raise BadSignature("the signature does not match the body and the hook's secret")
