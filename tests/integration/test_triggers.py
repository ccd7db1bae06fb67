"""Inbound webhooks, Idempotency-Key and `Prefer: wait=N` over HTTP on the real app, on SQLite
and PostgreSQL (DESIGN §10), and the run list's `trigger` filter."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any

import pytest

from core.signing import signature, signed_content
from tests.integration.conftest import Api, P, linear

ON_BOTH_STORES = True

H = f"{P}/webhooks"


async def hook(api: Api, **fields: Any) -> dict[str, Any]:
    made: dict[str, Any] = await api.call("POST", H, {"workflow_id": "g"} | fields, 201)
    return made


async def post_hook(
    api: Api,
    made: dict[str, Any],
    body: bytes,
    *,
    secret: str | None = None,
    headers: dict[str, str] | None = None,
    timestamp: str | None = None,
) -> tuple[int, Any, Any]:
    sent = {"Content-Type": "application/json"}
    if secret is not None:
        sent["X-Cortexd-Signature"] = signature(secret.encode(), signed_content(body, timestamp))
    if timestamp is not None:
        sent["X-Cortexd-Timestamp"] = timestamp
    sent |= headers or {}
    response = await api.client.post(f"/api/hooks/{made['id']}", data=body, headers=sent)
    return response.status, await response.json(), response.headers


async def test_a_hook_is_made_once_with_its_secret_and_listed_without_it(api: Api) -> None:
    await api.graph(linear("g", "passthrough"))
    made = await hook(api, id="github")
    assert made["id"] == "github"
    assert made["workflow_id"] == "g"
    assert made["url"].endswith("/api/hooks/github")
    assert made["url"].startswith("http://")
    assert len(made["secret"]) >= 40
    shown = await api.call("GET", f"{H}/github", status=200)
    assert "secret" not in shown
    assert shown["url"] == made["url"]
    assert await api.call("GET", H, status=200) == [shown]
    await api.call("POST", H, {"workflow_id": "g", "id": "github"}, 409)
    await api.call("POST", H, {"workflow_id": "nope"}, 422)
    await api.call("POST", H, {"workflow_id": "g", "tolerance_s": 0}, 422)
    await api.call("POST", H, {"workflow_id": "g", "extra": 1}, 422)
    # Another project sees none of it, and cannot take its id (hook URLs name no project).
    assert await api.call("GET", "/api/projects/other/workflows/webhooks", status=200) == []
    await api.call("GET", "/api/projects/other/workflows/webhooks/github", status=404)
    await api.call("DELETE", "/api/projects/other/workflows/webhooks/github", status=404)
    await api.call("DELETE", f"{H}/github", status=204)
    await api.call("GET", f"{H}/github", status=404)
    status, problem, _ = await post_hook(api, made, b"{}", secret=made["secret"])
    assert status == 404, problem


async def test_a_signed_request_starts_a_run_with_its_body_as_input(api: Api) -> None:
    await api.graph(linear("g", "passthrough"))
    made = await hook(api)
    body = json.dumps({"ref": "main", "n": 3}).encode()
    status, run, _ = await post_hook(api, made, body, secret=made["secret"])
    assert status == 201, run
    assert run["trigger"] == {"type": "webhook", "id": made["id"]}
    assert run["input"] == {"ref": "main", "n": 3}
    await api.idle()
    assert (await api.run(run["id"]))["status"] == "completed"
    # An empty body is an empty input.
    status, run, _ = await post_hook(api, made, b"", secret=made["secret"])
    assert (status, run["input"]) == (201, {})
    metrics = await (await api.client.get("/metrics")).text()
    assert 'cortexd_runs_created_total{trigger="webhook"} 2.0' in metrics


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "needs an X-Cortexd-Signature"),
        ({"X-Cortexd-Signature": "sha256=" + "0" * 64}, "does not match"),
        ({"X-Cortexd-Signature": "md5=abc"}, "64 hex digits"),
        ({"X-Cortexd-Signature": "sha256=" + "g" * 64}, "64 hex digits"),
    ],
)
async def test_a_missing_or_wrong_signature_is_401_and_starts_nothing(
    api: Api, headers: dict[str, str], reason: str
) -> None:
    await api.graph(linear("g", "passthrough"))
    made = await hook(api)
    status, problem, sent = await post_hook(api, made, b'{"a": 1}', headers=headers)
    assert status == 401, problem
    assert reason in problem["detail"]
    assert "WWW-Authenticate" in sent
    assert await api.call("GET", f"{P}/runs", status=200) == []


async def test_a_signature_of_another_body_or_secret_is_refused(api: Api) -> None:
    await api.graph(linear("g", "passthrough"))
    made, other = await hook(api), await hook(api)
    wrong = signature(made["secret"].encode(), b'{"a": 2}')
    status, _, _ = await post_hook(api, made, b'{"a": 1}', headers={"X-Cortexd-Signature": wrong})
    assert status == 401
    status, _, _ = await post_hook(api, made, b'{"a": 1}', secret=other["secret"])
    assert status == 401


async def test_an_unknown_hook_is_404_before_any_signature_check(api: Api) -> None:
    response = await api.client.post("/api/hooks/nothing-here", data=b"{}")
    assert response.status == 404
    assert "webhook 'nothing-here' not found" in (await response.json())["detail"]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"not json", "application/json"),
        (b"[1, 2]", "application/json"),
        (b'{"a": 1}', "text/plain"),
        (b"a=1&b=2", "application/x-www-form-urlencoded"),
        (b'{"a": "\\ud800"}', "application/json"),
    ],
)
async def test_a_signed_body_that_is_not_a_json_object_is_415(
    api: Api, body: bytes, content_type: str
) -> None:
    await api.graph(linear("g", "passthrough"))
    made = await hook(api)
    status, problem, _ = await post_hook(
        api, made, body, secret=made["secret"], headers={"Content-Type": content_type}
    )
    assert status == 415, problem
    assert problem["detail"]
    assert await api.call("GET", f"{P}/runs", status=200) == []


async def test_a_replay_safe_hook_needs_a_fresh_signed_timestamp(api: Api) -> None:
    await api.graph(linear("g", "passthrough"))
    made = await hook(api, tolerance_s=300)
    secret = made["secret"]
    now = str(int(time.time()))
    status, run, _ = await post_hook(api, made, b"{}", secret=secret, timestamp=now)
    assert status == 201, run
    # Without the timestamp; with the body-only signature; an old one; a changed one.
    status, problem, _ = await post_hook(api, made, b"{}", secret=secret)
    assert status == 401
    assert "X-Cortexd-Timestamp" in problem["detail"]
    body_only = {"X-Cortexd-Signature": signature(secret.encode(), b"{}")}
    status, _, _ = await post_hook(
        api, made, b"{}", headers=body_only | {"X-Cortexd-Timestamp": now}
    )
    assert status == 401
    old = str(int(time.time()) - 3600)
    status, problem, _ = await post_hook(api, made, b"{}", secret=secret, timestamp=old)
    assert status == 401
    assert "from the server's clock" in problem["detail"]
    signed_now = signature(secret.encode(), signed_content(b"{}", now))
    later = str(int(now) + 1)
    headers = {"X-Cortexd-Signature": signed_now, "X-Cortexd-Timestamp": later}
    status, _, _ = await post_hook(api, made, b"{}", headers=headers)
    assert status == 401


async def test_hooks_need_no_token_but_their_management_does(make_api: Any) -> None:
    digest = hashlib.sha256(b"t" * 32).hexdigest()
    token = {"name": "ci", "sha256": digest, "projects": ["acme"], "role": "write"}
    api = await make_api(CORTEXD_AUTH__ENABLED="true", CORTEXD_AUTH__TOKENS=json.dumps([token]))
    bearer = {"Authorization": "Bearer " + "t" * 32}
    response = await api.client.post(f"{P}/graphs", json=linear("g", "passthrough"), headers=bearer)
    assert response.status == 201
    response = await api.client.post(H, json={"workflow_id": "g"})
    assert response.status == 401
    response = await api.client.post(H, json={"workflow_id": "g"}, headers=bearer)
    assert response.status == 201
    made = await response.json()
    status, run, _ = await post_hook(api, made, b"{}", secret=made["secret"])
    assert status == 201, run


# -- Idempotency-Key ---------------------------------------------------------------------------


async def start(api: Api, body: dict[str, Any], **headers: str) -> tuple[int, Any, Any]:
    response = await api.client.post(f"{P}/runs", json=body, headers=headers)
    return response.status, await response.json(), response.headers


async def test_the_same_key_and_body_answer_the_first_run(api: Api) -> None:
    await api.graph(linear("g", "passthrough"))
    body = {"workflow_id": "g", "input": {"a": 1, "b": [1, 2]}}
    status, first, _ = await start(api, body, **{"Idempotency-Key": "order-42"})
    assert status == 201
    await api.idle()
    # The same request again (its keys in another order): the first run, as it stands now.
    same = {"input": {"b": [1, 2], "a": 1}, "workflow_id": "g"}
    status, again, _ = await start(api, same, **{"Idempotency-Key": "order-42"})
    assert (status, again["id"], again["status"]) == (200, first["id"], "completed")
    # Another key, or none: new runs.
    status, other, _ = await start(api, body, **{"Idempotency-Key": "order-43"})
    assert status == 201
    assert other["id"] != first["id"]
    status, _, _ = await start(api, body)
    assert status == 201
    runs = await api.call("GET", f"{P}/runs", status=200)
    assert len(runs) == 3


async def test_the_same_key_with_another_body_is_422(api: Api) -> None:
    await api.graph(linear("g", "passthrough"))
    await api.graph(linear("h", "passthrough"))
    key = {"Idempotency-Key": "k-1"}
    status, first, _ = await start(api, {"workflow_id": "g", "input": {"a": 1}}, **key)
    assert status == 201
    for other in ({"workflow_id": "g", "input": {"a": 2}}, {"workflow_id": "h", "input": {"a": 1}}):
        status, problem, _ = await start(api, other, **key)
        assert status == 422, problem
        assert problem["problems"][0]["path"] == "/headers/Idempotency-Key"
        assert first["id"] in problem["problems"][0]["message"]
    # Keys are per project: another project may use the same one.
    await api.graph(linear("g", "passthrough"), project="other")
    response = await api.client.post(
        "/api/projects/other/workflows/runs", json={"workflow_id": "g"}, headers=key
    )
    assert response.status == 201


async def test_concurrent_requests_with_one_key_make_one_run(api: Api) -> None:
    await api.graph(linear("g", "passthrough"))
    body = {"workflow_id": "g", "input": {"x": 1}}
    answers = await asyncio.gather(
        *(start(api, body, **{"Idempotency-Key": "burst"}) for _ in range(20))
    )
    statuses = sorted(status for status, _, _ in answers)
    assert statuses == [200] * 19 + [201]
    assert len({run["id"] for _, run, _ in answers}) == 1
    assert len(await api.call("GET", f"{P}/runs", status=200)) == 1


async def test_a_key_expires_after_its_time_to_live(make_api: Any) -> None:
    api = await make_api(CORTEXD_RUNS__IDEMPOTENCY_TTL_S="0.2")
    await api.graph(linear("g", "passthrough"))
    key = {"Idempotency-Key": "short"}
    status, first, _ = await start(api, {"workflow_id": "g"}, **key)
    assert status == 201
    deadline = time.monotonic() + 20
    while True:  # until the key is older than its 0.2 s (bounded)
        status, again, _ = await start(api, {"workflow_id": "g"}, **key)
        if status == 201 or time.monotonic() > deadline:
            break
        assert (status, again["id"]) == (200, first["id"])
        await asyncio.sleep(0.05)
    assert status == 201
    assert again["id"] != first["id"]
    # An expired key is free for another body, too.
    await asyncio.sleep(0.3)
    status, _, _ = await start(api, {"workflow_id": "g", "input": {"new": True}}, **key)
    assert status == 201


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "a\tb"])
async def test_a_malformed_key_is_400(api: Api, key: str) -> None:
    await api.graph(linear("g", "passthrough"))
    response = await api.client.post(
        f"{P}/runs", json={"workflow_id": "g"}, headers={"Idempotency-Key": key}
    )
    assert response.status == 400, await response.text()
    assert "Idempotency-Key" in (await response.json())["detail"]


async def test_a_hook_request_with_a_key_starts_one_run(api: Api) -> None:
    await api.graph(linear("g", "passthrough"))
    made = await hook(api)
    key = {"Idempotency-Key": "delivery-7"}
    status, first, _ = await post_hook(api, made, b'{"a": 1}', secret=made["secret"], headers=key)
    assert status == 201
    status, again, _ = await post_hook(api, made, b'{"a": 1}', secret=made["secret"], headers=key)
    assert (status, again["id"]) == (200, first["id"])
    status, problem, _ = await post_hook(api, made, b'{"a": 2}', secret=made["secret"], headers=key)
    assert status == 422, problem


# -- Prefer: wait=N ----------------------------------------------------------------------------


async def test_wait_answers_with_the_finished_run(api: Api) -> None:
    await api.graph(linear("g", "passthrough", "passthrough"))
    status, run, headers = await start(
        api, {"workflow_id": "g", "input": {"v": 1}}, Prefer="wait=30"
    )
    assert status == 201
    assert run["status"] == "completed"
    assert run["output"] is not None
    assert headers["Preference-Applied"] == "wait=30"


async def test_wait_answers_when_the_run_pauses_for_input(api: Api) -> None:
    await api.graph(linear("g", "approval", "passthrough"))
    status, run, headers = await start(api, {"workflow_id": "g"}, Prefer="respond-async, wait=30")
    assert (status, run["status"]) == (201, "paused")
    assert headers["Preference-Applied"] == "wait=30"


async def test_wait_answers_after_n_seconds_with_the_run_as_it_stands(api: Api) -> None:
    await api.graph(linear("g", "gate"))
    status, run, headers = await start(api, {"workflow_id": "g"}, Prefer="wait=1")
    assert (status, run["status"]) == (201, "running")
    assert headers["Preference-Applied"] == "wait=1"
    api.kit.gate("default").set()
    await api.idle()


async def test_wait_is_capped_by_max_wait_s(make_api: Any) -> None:
    api = await make_api(CORTEXD_RUNS__MAX_WAIT_S="0.5")
    await api.graph(linear("g", "gate"))
    status, run, headers = await start(api, {"workflow_id": "g"}, Prefer="wait=3600")
    assert (status, run["status"], headers["Preference-Applied"]) == (201, "running", "wait=0.5")
    api.kit.gate("default").set()
    await api.idle()


@pytest.mark.parametrize("prefer", ["wait=abc", "wait=-1", "respond-async", "wait"])
async def test_a_preference_not_understood_is_ignored(api: Api, prefer: str) -> None:
    await api.graph(linear("g", "gate"))
    status, run, headers = await start(api, {"workflow_id": "g"}, Prefer=prefer)
    assert status == 201
    assert run["status"] in ("pending", "running")
    assert "Preference-Applied" not in headers
    api.kit.gate("default").set()
    await api.idle()


# -- ?trigger= ---------------------------------------------------------------------------------


async def test_runs_are_filtered_by_trigger(api: Api) -> None:
    await api.graph(linear("g", "passthrough"))
    await api.graph(linear("h", "passthrough"))
    made = await hook(api)
    by_api = await api.start("g")
    await api.start("h")
    _, by_hook, _ = await post_hook(api, made, b"{}", secret=made["secret"])
    await api.idle()
    hooked = await api.call("GET", f"{P}/runs?trigger=webhook", status=200)
    assert [r["id"] for r in hooked] == [by_hook["id"]]
    of_g = await api.call("GET", f"{P}/runs?trigger=api&workflow_id=g", status=200)
    assert [r["id"] for r in of_g] == [by_api]
    done = await api.call("GET", f"{P}/runs?trigger=api&status=completed,failed", status=200)
    assert len(done) == 2
    assert await api.call("GET", f"{P}/runs?trigger=schedule", status=200) == []
    problem = await api.call("GET", f"{P}/runs?trigger=cron", status=400)
    assert "one of: api, schedule, webhook, subworkflow" in problem["detail"]
