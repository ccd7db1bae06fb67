"""A run's concurrency group (DESIGN §11): from the graph version's `concurrency` and the run's
input, decided once, when the run is created."""

from __future__ import annotations

from core.concurrency import MAX_READABLE, group_of
from core.domain import Concurrency

PER_CUSTOMER = Concurrency(limit=1, key="customer")


def test_the_keys_value_names_the_group_whatever_the_order_of_its_fields() -> None:
    one = group_of("p", "g", PER_CUSTOMER, {"customer": {"id": 7, "region": "eu"}})
    other = group_of("p", "g", PER_CUSTOMER, {"x": 1, "customer": {"region": "eu", "id": 7}})
    assert one is not None
    assert one == other
    assert one.limit == 1
    assert group_of("p", "g", PER_CUSTOMER, {"customer": "b"}) != one


def test_a_missing_value_and_a_failing_expression_are_the_null_group() -> None:
    missing = group_of("p", "g", PER_CUSTOMER, {})
    failing = group_of("p", "g", Concurrency(limit=1, key="abs(customer)"), {"customer": "x"})
    assert missing is not None
    assert failing is not None
    assert missing.key == failing.key == '["p","g",null]'


def test_without_a_key_every_run_of_the_graph_is_one_group_per_project() -> None:
    graph_wide = Concurrency(limit=3)
    assert group_of("p", "g", graph_wide, {"customer": "a"}) == group_of("p", "g", graph_wide, {})
    assert group_of("p", "g", graph_wide, {}) != group_of("q", "g", graph_wide, {})
    assert group_of("p", "g", None, {"customer": "a"}) is None


def test_a_long_value_is_stored_as_its_digest() -> None:
    group = group_of("p", "g", Concurrency(limit=1, key="@"), {"blob": "x" * 5000})
    assert group is not None
    assert group.key.startswith("sha256:")
    assert len(group.key) <= MAX_READABLE
