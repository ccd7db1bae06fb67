"""What a request may carry: JSON bodies, read safely and validated strictly (no `false` for a
number, no "1" for an integer), query parameters range-checked, and the form of the ids in
paths. The routes parse with these, and the OpenAPI document describes them."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Annotated, Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, Strict, StrictBool, ValidationError

from adapters.http.problems import BadRequest
from core.domain import ID_PATTERN, TRIGGER_TYPES, RunStatus
from core.errors import Problem, ValidationFailed
from core.idempotency import MAX_KEY_CHARS, IdempotencyKey, fingerprint, valid_key
from core.validation import problems_from_pydantic

# Run ids are made by cortexd: lowercase UUIDs, as str(uuid4()) spells them.
RUN_ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"

# The largest `since` a client may give (what the OpenAPI document says): seq is a SQLite
# INTEGER, 2**63 - 1 at most, and a larger number would reach SQLite as an OverflowError.
MAX_SEQ = 2**62
# ASCII digits only: int() also takes " 7", "1_0" and digits of other scripts.
_QUERY_INT = re.compile(r"-?[0-9]{1,20}")
MAX_STATUSES = 20
# RFC 3339 §5.6 date-time (Python's fromisoformat alone takes week dates, no offset, ...).
_DATE_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,30})?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})",
    re.ASCII,
)

# Numbers a run's state can hold: LangGraph's checkpoints store integers in 64 bits.
_INT_RANGE = (-(2**63), 2**64 - 1)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]", re.IGNORECASE)

GraphId = Annotated[str, Field(pattern=ID_PATTERN)]
JsonObject = Annotated[dict[str, Any], Strict()]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class CreateRunBody(Body):
    workflow_id: GraphId
    input: JsonObject | None = None


class ExecuteBody(Body):
    input: JsonObject | None = None
    from_start: StrictBool = False


class ResumeBody(Body):
    value: Any = None


BodyT = TypeVar("BodyT", bound=Body)


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter in `low..high`, or `default` when absent; else a 400."""
    value = optional_query_int(request, name, low, high)
    return default if value is None else value


def optional_query_int(request: web.Request, name: str, low: int, high: int) -> int | None:
    raw = query_value(request, name)
    if raw is None:
        return None
    if not _QUERY_INT.fullmatch(raw) or not low <= int(raw) <= high:
        raise BadRequest(
            f"query parameter {name!r} must be an integer from {low} to {high}, not {_shown(raw)}"
        )
    return int(raw)


def query_value(request: web.Request, name: str) -> str | None:
    """The one value of a query parameter, or None; given twice it is ambiguous: a 400."""
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise BadRequest(f"query parameter {name!r} is given {len(values)} times; give it once")
    return values[0] if values else None


def query_time(request: web.Request, name: str) -> datetime | None:
    """An RFC 3339 date-time with its offset (`2026-05-01T12:00:00Z`), or None; else a 400."""
    raw = query_value(request, name)
    if raw is None:
        return None
    try:
        if not _DATE_TIME.fullmatch(raw):
            raise ValueError
        # Digits past the sixth (below a microsecond) are dropped.
        return datetime.fromisoformat(raw.upper())
    except ValueError:
        raise BadRequest(
            f"query parameter {name!r} must be an RFC 3339 date-time with an offset, "
            f"such as 2026-05-01T12:00:00Z, not {_shown(raw)}"
        ) from None


def query_statuses(request: web.Request, name: str = "status") -> frozenset[RunStatus]:
    """One run status or a comma-separated list of them (empty: any); else a 400."""
    raw = query_value(request, name)
    if raw is None:
        return frozenset()
    items = raw.split(",")
    if len(items) > MAX_STATUSES:
        listed = f"lists {len(items)} statuses; at most {MAX_STATUSES}"
        raise BadRequest(f"query parameter {name!r} {listed}")
    wanted = set()
    for item in items:
        try:
            wanted.add(RunStatus(item.strip()))
        except ValueError:
            choices = ", ".join(s.value for s in RunStatus)
            raise BadRequest(
                f"unknown status {_shown(item)}; one of: {choices} "
                f"(several: a comma-separated list in query parameter {name!r})"
            ) from None
    return frozenset(wanted)


def query_trigger(request: web.Request, name: str = "trigger") -> str | None:
    """A trigger type (what started a run), or None; else a 400."""
    raw = query_value(request, name)
    if raw is None or raw in TRIGGER_TYPES:
        return raw
    raise BadRequest(f"unknown trigger {_shown(raw)}; one of: {', '.join(TRIGGER_TYPES)}")


def _shown(raw: str) -> str:
    return repr(raw if len(raw) <= 24 else raw[:24] + "...")


async def read_json(request: web.Request, *, required: bool = True) -> Any:
    return parse_json(await request.read(), required=required)


def parse_json(raw: bytes, *, required: bool = True) -> Any:
    """A body as JSON (`{}` when empty and not required), with the limits on what cortexd
    keeps: BadRequest for what is not JSON, ValidationFailed for a number it cannot keep."""
    if not raw.strip():
        if required:
            raise BadRequest("the request needs a JSON body")
        return {}
    try:
        # Decoded here: json.loads(bytes) would guess UTF-16/32 from the first bytes.
        data = json.loads(
            raw.decode("utf-8"),
            parse_int=_integer,
            parse_float=_finite,
            parse_constant=_no_constant,
        )
    except UnicodeDecodeError:
        raise BadRequest("the body is not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise BadRequest(f"malformed JSON: {exc.msg} ({where})") from None
    except RecursionError:
        raise BadRequest("the JSON body is nested too deeply") from None
    except _NumberRefused as exc:
        raise ValidationFailed("the body has a number cortexd cannot keep", [exc.problem]) from None
    if _SURROGATE_ESCAPE.search(raw) and not _encodable(data):
        raise BadRequest("the body has a lone UTF-16 surrogate escape (\\ud800-\\udfff)")
    return data


class _NumberRefused(Exception):
    def __init__(self, message: str) -> None:
        self.problem = Problem("", message)


def _integer(text: str) -> int:
    # Checked on the text first: int() of thousands of digits is slow, or refused outright.
    if len(text.lstrip("-")) > 20 or not _INT_RANGE[0] <= int(text) <= _INT_RANGE[1]:
        shown = text if len(text) <= 24 else text[:24] + "..."
        raise _NumberRefused(f"integer {shown} is out of range; integers must fit in 64 bits")
    return int(text)


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _NumberRefused(f"number {text[:24]} is too large for a 64-bit float")
    return value


def _no_constant(text: str) -> float:
    raise _NumberRefused(f"{text} is not a JSON number")


def _encodable(data: Any) -> bool:
    """Whether every string (and key) can be written as UTF-8, as storage needs."""
    stack = [data]
    while stack:
        item = stack.pop()
        try:
            if isinstance(item, str):
                item.encode()
            elif isinstance(item, dict):
                stack.extend(item.keys())
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
        except UnicodeEncodeError:
            return False
    return True


async def read_body(request: web.Request, model: type[BodyT], *, required: bool) -> BodyT:
    data = await read_json(request, required=required)
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(
            "the request body is not valid", problems_from_pydantic(exc)
        ) from None


# -- headers of the triggers (DESIGN §10) ------------------------------------------------------

IDEMPOTENCY_KEY = "Idempotency-Key"
PREFER = "Prefer"
PREFERENCE_APPLIED = "Preference-Applied"
_DELTA_SECONDS = re.compile(r"[0-9]{1,10}")


def one_header(request: web.Request, name: str) -> str | None:
    """A header that may be given once, or None; given twice it is ambiguous: a 400."""
    values = request.headers.getall(name, [])
    if len(values) > 1:
        raise BadRequest(f"header {name!r} is given {len(values)} times; give it once")
    return values[0] if values else None


def idempotency_key(
    request: web.Request, target: str, body: bytes, ttl_s: float
) -> IdempotencyKey | None:
    """The request's `IdempotencyKey` (its fingerprint: `target` and `body`), or None."""
    raw = one_header(request, IDEMPOTENCY_KEY)
    if raw is None:
        return None
    if not valid_key(raw):
        raise BadRequest(
            f"header {IDEMPOTENCY_KEY!r} must be 1 to {MAX_KEY_CHARS} visible ASCII characters "
            "(spaces inside only), such as a UUID"
        )
    return IdempotencyKey(raw, fingerprint(target, body), ttl_s)


def canonical_json(value: Any) -> bytes:
    """The same JSON value always as the same bytes (keys sorted): what a run's key hashes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def wait_preference(request: web.Request) -> int | None:
    """The seconds of a `wait=N` preference (RFC 7240 §4.3), or None. Preferences are a
    comma-separated list in one or more `Prefer` headers, each `token[=value]` and parameters
    after `;`; as the RFC asks, a preference not understood (or a malformed `wait`) is ignored."""
    found = None
    for header in request.headers.getall(PREFER, []):
        for preference in header.split(","):
            token, _, value = preference.split(";", 1)[0].partition("=")
            if token.strip().lower() != "wait":
                continue
            value = value.strip().strip('"')
            if _DELTA_SECONDS.fullmatch(value) and found is None:
                found = int(value)
    return found
