"""Per-graph concurrency over HTTP (DESIGN §11): at most `limit` runs of a graph, per value of
its key, execute at once; the others wait in order; other graphs' runs are not held back."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from tests.integration.conftest import Api, P, linear, until

ON_BOTH_STORES = True  # every test here runs on SQLite and on PostgreSQL


DOUBLES_SEVEN_TIMES = " | ".join(["[@, @][]"] * 7)


def limited(graph_id: str, gate: str, concurrency: dict[str, Any]) -> dict[str, Any]:
    graph = linear(graph_id, "gate", n1={"gate": gate})
    return graph | {"concurrency": concurrency}


@pytest.mark.parametrize(
    ("concurrency", "path", "says"),
    [
        ({"limit": 1, "key": "customer["}, "/concurrency/key", "invalid JMESPath"),
        ({"limit": 1, "key": DOUBLES_SEVEN_TIMES}, "/concurrency/key", "multiply"),
        ({"limit": 1, "key": "a" * 1001}, "/concurrency/key", "at most 1000"),
        ({"limit": 0}, "/concurrency/limit", "greater than or equal to 1"),
        ({"limit": 10_001}, "/concurrency/limit", "less than or equal to 10000"),
        ({"limit": True}, "/concurrency/limit", "integer"),
        ({"key": "customer"}, "/concurrency/limit", "required"),
        ({"limit": 1, "per": "customer"}, "/concurrency/per", "not permitted"),
    ],
)
async def test_a_bad_concurrency_is_refused_with_its_path(
    api: Api, concurrency: dict[str, Any], path: str, says: str
) -> None:
    body = await api.call("POST", f"{P}/graphs", limited("g", "x", concurrency), 422)
    problems = {p["path"]: p["message"] for p in body["problems"]}
    assert says in problems[path], problems
    assert await api.call("GET", f"{P}/graphs", status=200) == []


async def test_a_graph_keeps_its_concurrency_and_an_edit_changes_it(api: Api) -> None:
    created = await api.graph(limited("g", "x", {"limit": 2, "key": "customer.id"}))
    assert created["concurrency"] == {"limit": 2, "key": "customer.id"}
    replaced = await api.call("PUT", f"{P}/graphs/g", limited("g", "x", {"limit": 3}), 200)
    assert (replaced["version"], replaced["concurrency"]) == (2, {"limit": 3, "key": None})
    plain = await api.graph(linear("plain", "passthrough"))
    assert plain["concurrency"] is None


async def spans(api: Api, run_ids: list[str]) -> list[tuple[int, int]]:
    """(seq it started running, seq it finished) of each run, from its stored events."""
    found = []
    for run_id in run_ids:
        events = await api.call("GET", f"{P}/runs/{run_id}/events", status=200)
        statuses = [(e["seq"], e["run"]["status"]) for e in events if "run" in e]
        began = min(seq for seq, status in statuses if status == "running")
        ended = max(seq for seq, status in statuses if status == "completed")
        found.append((began, ended))
    return found


async def test_one_run_per_customer_at_a_time_without_holding_back_the_others(api: Api) -> None:
    await api.graph(limited("orders", "orders", {"limit": 1, "key": "customer"}))
    await api.graph(linear("other", "gate", n1={"gate": "other"}))
    first_a = await api.start("orders", {"customer": "a"})
    later_a = [await api.start("orders", {"customer": "a"}) for _ in range(2)]
    first_b = await api.start("orders", {"customer": "b"})
    other = await api.start("other")
    held = {first_a, first_b, other}
    # Customer b's run and the other graph's run execute beside customer a's first one...
    await until(lambda: held <= {run_id for run_id, _ in api.kit.executions})
    # ... while the rest of customer a's runs wait, in order.
    for run_id in later_a:
        assert (await api.run(run_id))["status"] == "pending"
    status = await api.call("GET", f"{P}/runs/{later_a[0]}/status", status=200)
    assert status["status"] == "pending"

    api.kit.gate("orders").set()  # every run of `orders` passes its gate from now on
    await until(lambda: all((r, "n1") in api.kit.executions for r in later_a))
    api.kit.gate("other").set()
    await api.idle()
    for run_id in [first_a, *later_a, first_b, other]:
        assert (await api.run(run_id))["status"] == "completed"
    a_spans = await spans(api, [first_a, *later_a])
    assert a_spans == sorted(a_spans)  # first in, first out
    for (_, ended), (began, _) in itertools.pairwise(a_spans):
        assert ended < began  # one customer's runs never overlap
    [(b_began, _)] = await spans(api, [first_b])
    assert b_began < a_spans[0][1]  # customer b's run started while customer a's first ran


async def test_a_limit_without_a_key_holds_every_run_of_the_graph(api: Api) -> None:
    await api.graph(limited("g", "g", {"limit": 2}))
    run_ids = [await api.start("g", {"customer": c}) for c in "abc"]
    await until(lambda: {r for r, _ in api.kit.executions} == set(run_ids[:2]))
    assert (await api.run(run_ids[2]))["status"] == "pending"
    api.kit.gate("g").set()
    await api.idle()
    assert [(await api.run(r))["status"] for r in run_ids] == ["completed"] * 3
