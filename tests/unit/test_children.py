"""Starting a node's child (`core.children`), on the fake store."""

from __future__ import annotations

import pytest

from core.children import Children, ChildStartFailed
from core.domain import Graph, GraphSpec, Run, RunStatus
from tests.unit.fakes import FakeClock, FakeStore


class DeletedOnceRead(FakeStore):
    """A store whose graph is deleted by someone else right after it is read: the window
    between the read of a child's graph and the creation of the child."""

    async def get_graph(
        self, project_id: str, graph_id: str, version: int | None = None
    ) -> Graph | None:
        found = await super().get_graph(project_id, graph_id, version)
        if graph_id == "child" and found is not None and version is None:
            await self.delete_graph(project_id, graph_id, FakeClock().now())
        return found


def stored_run(run_id: str, workflow_id: str, status: RunStatus, clock: FakeClock) -> Run:
    return Run(
        id=run_id,
        workflow_id=workflow_id,
        status=status,
        project_id="p",
        graph_version=1,
        created_at=clock.now(),
    )


async def test_a_child_whose_graph_is_deleted_as_it_starts_fails_its_node_for_good() -> None:
    store, clock = DeletedOnceRead(), FakeClock()
    for graph_id in ("parent", "child"):
        spec = GraphSpec.model_validate({"name": graph_id, "nodes": [{"id": "a"}]})
        await store.put_graph("p", graph_id, spec, clock.now(), create=True)
    parent = stored_run("parent-run", "parent", RunStatus.PENDING, clock)
    await store.create_run(parent)
    children = Children(store, clock, wake=lambda: None)
    with pytest.raises(ChildStartFailed, match="no graph 'child'"):
        await children.ensure(parent, "a", "task-1", "child", {})
    assert [run.id for run in (await store.list_runs("p")).items] == [parent.id]


async def test_a_failed_child_whose_graph_was_deleted_is_not_executed_again() -> None:
    store, clock = FakeStore(), FakeClock()
    spec = GraphSpec.model_validate({"name": "child", "nodes": [{"id": "a"}]})
    await store.put_graph("p", "child", spec, clock.now(), create=True)
    child = stored_run("child-run", "child", RunStatus.FAILED, clock)
    await store.create_run(child)
    await store.delete_graph("p", "child", clock.now())
    children = Children(store, clock, wake=lambda: None)
    with pytest.raises(ChildStartFailed, match="was deleted"):
        await children.again(child)
    stored = await store.get_run("p", child.id)
    assert stored is not None
    assert stored.status is RunStatus.FAILED
