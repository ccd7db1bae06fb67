"""Pages and filters over HTTP (DESIGN §12): the JSON arrays of `GET .../runs` and
`GET .../graphs` a page at a time, `Link: <...>; rel="next"` while more exist, filters that
combine, and every bad parameter a 400 with a `detail`."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest

from tests.integration.conftest import Api, P, linear

ON_BOTH_STORES = True  # every test here runs on SQLite and on PostgreSQL

_LINK = re.compile(r'<([^>]*)>\s*;\s*rel="next"')


async def page(api: Api, path: str) -> tuple[list[Any], str | None]:
    """One answer of a list: its items and the URL its Link rel="next" names (resolved)."""
    response = await api.client.get(path)
    body = await response.json()
    assert response.status == 200, body
    link = response.headers.get("Link")
    if link is None:
        return body, None
    found = _LINK.fullmatch(link)
    assert found, link
    return body, urljoin(path, found.group(1))


async def every_page(api: Api, path: str) -> list[list[Any]]:
    pages: list[list[Any]] = []
    following: str | None = path
    for _ in range(100):
        assert following is not None
        items, following = await page(api, following)
        pages.append(items)
        if following is None:
            return pages
    raise AssertionError("more than 100 pages")


async def started(api: Api, count: int, graph_id: str = "g") -> list[str]:
    """`count` runs of `graph_id` (created and done), oldest first."""
    ids = [await api.start(graph_id) for _ in range(count)]
    await api.idle()
    return ids


async def test_runs_come_a_page_at_a_time_with_a_link_to_the_next(api: Api) -> None:
    await api.graph(linear("g", "passthrough"))
    newest_first = list(reversed(await started(api, 5)))

    pages = await every_page(api, f"{P}/runs?limit=2")

    assert [[r["id"] for r in p] for p in pages] == [
        newest_first[:2],
        newest_first[2:4],
        newest_first[4:],
    ]
    items, following = await page(api, f"{P}/runs")  # the default limit: 1000
    assert [r["id"] for r in items] == newest_first
    assert following is None


async def test_the_next_link_keeps_the_filters_and_the_limit(api: Api) -> None:
    await api.graph(linear("g", "passthrough"))
    await api.graph(linear("h", "fail"))
    g_runs = await started(api, 3, "g")
    await started(api, 2, "h")

    first = f"{P}/runs?workflow_id=g&status=completed,failed&limit=2"
    _, following = await page(api, first)

    assert following is not None
    parts = urlsplit(following)
    assert parts.path == P + "/runs"
    query = parse_qs(parts.query)
    assert query["workflow_id"] == ["g"]
    assert query["status"] == ["completed,failed"]
    assert query["limit"] == ["2"]
    assert len(query["cursor"]) == 1
    pages = await every_page(api, first)
    assert [r["id"] for p in pages for r in p] == list(reversed(g_runs))


async def test_status_takes_a_list_and_filters_combine(api: Api) -> None:
    await api.graph(linear("g", "passthrough"))
    await api.graph(linear("h", "fail"))
    g_run = (await started(api, 1, "g"))[0]
    h_run = (await started(api, 1, "h"))[0]

    both = await api.call("GET", f"{P}/runs?status=failed,completed", status=200)
    spaced = await api.call("GET", f"{P}/runs?status=failed,%20completed", status=200)
    h_completed = await api.call("GET", f"{P}/runs?status=completed&workflow_id=h", status=200)

    assert [r["id"] for r in both] == [h_run, g_run]
    assert spaced == both
    assert h_completed == []


async def test_runs_are_filtered_by_creation_time_bounds_exclusive(api: Api) -> None:
    await api.graph(linear("g", "passthrough"))
    ids = await started(api, 3)
    times = [(await api.run(run_id))["created_at"] for run_id in ids]

    after = await api.call("GET", f"{P}/runs?created_after={times[0]}", status=200)
    before = await api.call("GET", f"{P}/runs?created_before={times[2]}", status=200)
    between = await api.call(
        "GET", f"{P}/runs?created_after={times[0]}&created_before={times[2]}", status=200
    )
    offset = times[1].replace("Z", "+00:00").replace("+", "%2B")
    same_in_another_spelling = await api.call(
        "GET", f"{P}/runs?created_before={offset}", status=200
    )

    assert [r["id"] for r in after] == [ids[2], ids[1]]
    assert [r["id"] for r in before] == [ids[1], ids[0]]
    assert [r["id"] for r in between] == [ids[1]]
    assert [r["id"] for r in same_in_another_spelling] == [ids[0]]


async def test_graphs_come_a_page_at_a_time_by_id(api: Api) -> None:
    for graph_id in ("c", "a", "b"):
        await api.graph(linear(graph_id, "passthrough"))

    pages = await every_page(api, f"{P}/graphs?limit=2")

    assert [[g["id"] for g in p] for p in pages] == [["a", "b"], ["c"]]


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("limit=0", "'limit'"),
        ("limit=1001", "'limit'"),
        ("limit=ten", "'limit'"),
        ("limit=1&limit=2", "'limit'"),
        ("cursor=bogus", "'cursor'"),
        ("cursor=", "'cursor'"),
        ("cursor=WyJnIiwiYSJd", "'cursor'"),  # a graph list's cursor
        ("status=bogus", "'bogus'"),
        ("status=running,bogus", "'bogus'"),
        ("status=", "status"),
        ("status=running,,failed", "status"),
        ("workflow_id=not%20an%20id", "'workflow_id'"),
        ("created_after=yesterday", "'created_after'"),
        ("created_after=2026-01-01", "'created_after'"),
        ("created_after=2026-01-01T00:00:00", "'created_after'"),  # no offset
        ("created_before=2026-13-01T00:00:00Z", "'created_before'"),
        ("created_before=2026-W01-1T00:00:00Z", "'created_before'"),
        ("created_before=" + "9" * 5000, "'created_before'"),
    ],
)
async def test_a_bad_parameter_of_the_runs_list_is_a_400_naming_it(
    api: Api, query: str, named: str
) -> None:
    response = await api.client.get(f"{P}/runs?{query}")
    body = await response.json()

    assert response.status == 400, body
    assert response.content_type == "application/problem+json"
    assert named in body["detail"]
    assert len(body["detail"]) < 400


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "cursor=bogus", "cursor=W10"])
async def test_a_bad_parameter_of_the_graphs_list_is_a_400(api: Api, query: str) -> None:
    response = await api.client.get(f"{P}/graphs?{query}")
    body = await response.json()

    assert response.status == 400, body
    assert body["detail"]
