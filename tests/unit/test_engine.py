"""The engine against fake ports: queueing, draining, recovery, retries, timeouts."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import structlog.testing

from core import changes
from core.domain import GraphSpec, NodeStatus, Run, RunStatus
from core.engine import Engine, EngineSettings
from core.events import Published
from core.ports import Claim
from core.service import ServiceLimits, WorkflowService
from tests.support.nodes import TestKit
from tests.unit.fakes import FakeCheckpoints, FakeClock, FakeExecution, FakeLiveness, FakeStore


class Harness:
    """One 'daemon lifetime': an engine and service over a store and checkpoints that outlive it."""

    def __init__(
        self,
        store: FakeStore,
        checkpoints: FakeCheckpoints,
        kit: TestKit,
        instance: str = "local",
        liveness: FakeLiveness | None = None,
        **settings: Any,
    ) -> None:
        self.store = store
        self.kit = kit
        node_types = {t.name: t for t in kit.cortexd_node_types()}  # type: ignore[attr-defined]
        clock = FakeClock()
        self.engine = Engine(
            store,
            checkpoints,
            clock,
            node_types,
            EngineSettings(**settings),
            instance=instance,
            liveness=liveness,
        )
        self.service = WorkflowService(store, self.engine, clock, node_types, ServiceLimits())

    async def graph(self, *nodes: dict[str, Any]) -> str:
        edges = [{"source": a["id"], "target": b["id"]} for a, b in itertools.pairwise(nodes)]
        spec = {"id": "g", "name": "g", "nodes": list(nodes), "edges": edges}
        await self.store.put_graph(
            "p", "g", GraphSpec.model_validate(spec), FakeClock().now(), create=True
        )
        return "g"

    async def idle(self) -> None:
        await asyncio.wait_for(self.engine.wait_idle(), 20)

    def run(self, run_id: str) -> Run:
        return self.store.runs[run_id]

    def state(self, run_id: str, node_id: str) -> Any:
        return self.store.node_states[run_id][node_id]


@pytest.fixture
async def harness(
    store: FakeStore, checkpoints: FakeCheckpoints, kit: TestKit
) -> AsyncIterator[Callable[..., Harness]]:
    """Makes harnesses on the shared store; stops every engine at the end of the test."""
    made: list[Harness] = []

    def make(**settings: Any) -> Harness:
        made.append(Harness(store, checkpoints, kit, **settings))
        return made[-1]

    yield make
    kit.gate("default").set()
    for h in made:
        await h.engine.stop()


def node(node_id: str, node_type: str, **extra: Any) -> dict[str, Any]:
    return {"id": node_id, "type": node_type, **extra}


async def test_stop_drains_and_the_next_start_finishes_without_repeating_nodes(
    harness: Callable[..., Harness], kit: TestKit, store: FakeStore
) -> None:
    first = harness()
    await first.engine.start()
    await first.graph(node("a", "count"), node("b", "gate"), node("c", "count"))
    run = await first.service.create_run("p", "g")
    await asyncio.wait_for(kit.arrived("default").wait(), 20)

    stopping = asyncio.create_task(first.engine.stop())
    kit.gate("default").set()  # the node in flight finishes within the grace period
    await stopping
    assert first.run(run.id).status is RunStatus.RUNNING  # left for the next start
    assert first.state(run.id, "b").status is NodeStatus.COMPLETED
    assert kit.count(run.id, "c") == 0

    second = harness()
    assert await second.engine.start() == 1
    await second.idle()
    assert second.run(run.id).status is RunStatus.COMPLETED
    assert [kit.count(run.id, n) for n in "abc"] == [1, 1, 1]


async def test_a_node_cut_off_by_shutdown_runs_again_at_the_next_start(
    harness: Callable[..., Harness], kit: TestKit, store: FakeStore
) -> None:
    first = harness(shutdown_grace_s=0)
    await first.engine.start()
    await first.graph(node("a", "count"), node("b", "gate"))
    run = await first.service.create_run("p", "g")
    await asyncio.wait_for(kit.arrived("default").wait(), 20)
    await first.engine.stop()
    assert first.run(run.id).status is RunStatus.RUNNING

    kit.gate("default").set()
    second = harness()
    await second.engine.start()
    await second.idle()
    assert second.run(run.id).status is RunStatus.COMPLETED
    assert kit.count(run.id, "a") == 1  # completed before the stop: never again
    assert kit.count(run.id, "b") == 2  # in flight at the stop: at least once
    assert second.state(run.id, "b").attempts == 2


async def test_recovery_resumes_running_runs_first_and_keeps_the_limit(
    harness: Callable[..., Harness], kit: TestKit, store: FakeStore
) -> None:
    first = harness(shutdown_grace_s=0)
    await first.graph(node("a", "count"))
    pending = [await first.service.create_run("p", "g") for _ in range(3)]
    # Two runs were running, claimed by a daemon that died (before any checkpoint).
    crashed = [await first.service.create_run("p", "g") for _ in range(2)]
    for run in crashed:
        row = store.rows[run.id]
        row.run = run.model_copy(update={"status": RunStatus.RUNNING})
        row.owner, row.epoch, row.lease_expires_at = "gone", 1, float("inf")
    liveness = FakeLiveness()
    liveness.dead.add("gone")

    second = harness(instance="new", liveness=liveness, max_concurrent_runs=1)
    assert await second.engine.start() == 5
    assert second.engine.running == 1
    await second.idle()
    started = [run_id for run_id, _ in kit.started]
    assert started == [r.id for r in crashed] + [r.id for r in pending]
    assert all(second.run(r.id).status is RunStatus.COMPLETED for r in pending + crashed)
    assert [second.run(r.id).recoveries for r in crashed] == [1, 1]
    assert all(second.run(r.id).owner is None for r in pending + crashed)


async def test_retry_policy_retries_and_records_each_attempt(
    harness: Callable[..., Harness], kit: TestKit, store: FakeStore
) -> None:
    h = harness()
    await h.engine.start()
    retry = {"max_attempts": 3, "backoff_s": 0}
    await h.graph(node("a", "fail", config={"fail_times": 2, "message": "flaky"}, retry=retry))
    run = await h.service.create_run("p", "g")
    await h.idle()
    assert h.run(run.id).status is RunStatus.COMPLETED
    state = h.state(run.id, "a")
    assert state.status is NodeStatus.COMPLETED
    assert state.attempts == 3
    assert state.messages == ["attempt 1 failed: flaky", "attempt 2 failed: flaky"]
    assert h.run(run.id).output["outputs"]["a"] == {"attempt": 3}  # type: ignore[index]


async def test_exhausted_retries_fail_the_run_with_the_nodes_error(
    harness: Callable[..., Harness], kit: TestKit, store: FakeStore
) -> None:
    h = harness()
    await h.engine.start()
    await h.graph(node("a", "fail", retry={"max_attempts": 2, "backoff_s": 0}))
    run = await h.service.create_run("p", "g")
    await h.idle()
    failed = h.run(run.id)
    assert failed.status is RunStatus.FAILED
    assert failed.error == {"type": "RuntimeError", "message": "boom", "node_id": "a", "attempt": 2}
    assert h.state(run.id, "a").status is NodeStatus.FAILED
    assert h.state(run.id, "a").attempts == 2


async def test_a_node_over_its_timeout_fails_with_a_clear_error(
    harness: Callable[..., Harness], kit: TestKit, store: FakeStore
) -> None:
    h = harness()
    await h.engine.start()
    await h.graph(node("a", "gate", config={"gate": "never"}, timeout_s=0.05))
    run = await h.service.create_run("p", "g")
    await h.idle()
    failed = h.run(run.id)
    assert failed.status is RunStatus.FAILED
    assert failed.error is not None
    assert failed.error["message"] == "node 'a' timed out after 0.05s"
    assert h.state(run.id, "a").status is NodeStatus.FAILED


async def test_progress_reports_become_node_state_events_in_order(
    harness: Callable[..., Harness], kit: TestKit, store: FakeStore
) -> None:
    h = harness()
    await h.engine.start()
    await h.graph(node("a", "gate"))
    kit.gate("default").set()
    run = await h.service.create_run("p", "g")
    await h.idle()
    updates = [
        (e["nodeState"]["status"], e["nodeState"]["progress"], e["nodeState"]["message"])
        for e in store.events
        if e["type"] == "workflow.node_state.updated" and e["run_id"] == run.id
    ]
    assert updates == [
        ("running", 0.0, "started"),
        ("running", 0.5, "waiting at the gate"),
        ("completed", 1.0, "completed"),
    ]


async def test_one_summary_line_per_run_with_status_duration_and_nodes(
    harness: Callable[..., Harness], kit: TestKit, store: FakeStore
) -> None:
    h = harness()
    await h.engine.start()
    await h.graph(node("a", "count"), node("b", "count"))
    with structlog.testing.capture_logs() as logs:
        run = await h.service.create_run("p", "g")
        await h.idle()
    (line,) = [entry for entry in logs if entry["event"] == "run_finished"]
    assert line["run_id"] == run.id
    assert line["project_id"] == "p"
    assert line["status"] == "completed"
    assert line["nodes_completed"] == 2
    assert line["duration_s"] > 0


class BrokenExecution(FakeExecution):
    """Node-state writes fail (a disk error, say)."""

    def record(self, states: Any, now: Any) -> asyncio.Future[None]:
        failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        failed.set_exception(OSError("disk I/O error"))
        return failed


class BrokenStore(FakeStore):
    def execution(self, claim: Claim) -> FakeExecution:
        return BrokenExecution(self, claim)


async def test_a_store_error_outside_the_graph_fails_the_run_instead_of_stranding_it(
    checkpoints: FakeCheckpoints, kit: TestKit
) -> None:
    h = Harness(BrokenStore(), checkpoints, kit)
    await h.engine.start()
    await h.graph(node("a", "count"))
    run = await h.service.create_run("p", "g")
    await h.idle()
    failed = h.run(run.id)
    assert failed.status is RunStatus.FAILED
    assert failed.error is not None
    assert "disk I/O error" in failed.error["message"]
    await h.engine.stop()


async def test_an_event_from_before_a_claim_does_not_act_on_its_execution(
    harness: Callable[..., Harness], kit: TestKit, store: FakeStore
) -> None:
    """With several daemons the bus can hand on an event late (past a gap): a cancel or a
    recovery older than the execution's claim must not stop it."""
    h = harness()
    await h.engine.start()
    await h.graph(node("a", "gate"), node("b", "count"))
    run = await h.service.create_run("p", "g")
    await asyncio.wait_for(kit.arrived("default").wait(), 20)
    created = next(e for e in store.events if e["type"] == "workflow.run.created")
    stale = {**created, "type": "workflow.run.cancelled"}
    stale["run"] = {**created["run"], "status": "cancelled"}
    h.engine.offer(Published(stale, ""))
    assert h.engine.executing() == {run.id}  # older than the claim: ignored
    kit.gate("default").set()
    await h.idle()
    assert h.run(run.id).status is RunStatus.COMPLETED
    assert kit.count(run.id, "b") == 1


async def test_a_run_resumed_before_its_drain_ended_is_taken_again_at_once(
    harness: Callable[..., Harness], kit: TestKit, store: FakeStore
) -> None:
    h = harness(lease_s=600)  # no upkeep comes to the rescue within this test
    await h.engine.start()
    await h.graph(node("a", "gate"), node("b", "count"))
    run = await h.service.create_run("p", "g")
    await asyncio.wait_for(kit.arrived("default").wait(), 20)
    await h.service.pause("p", run.id)
    await h.service.resume("p", run.id)  # the node of the pause is still in flight
    kit.gate("default").set()
    await h.idle()
    assert h.run(run.id).status is RunStatus.COMPLETED
    assert [kit.count(run.id, n) for n in "ab"] == [1, 1]


async def test_a_run_taken_back_by_another_daemon_is_stopped_here_at_its_event(
    harness: Callable[..., Harness], kit: TestKit, store: FakeStore
) -> None:
    """This daemon stalled past its lease and another daemon took its run back: the event of
    that recovery stops the execution here (its writes are fenced out already), also when this
    daemon claims the run again at once, so that one run never has two executions here."""
    h = harness(instance="a", lease_s=600, max_concurrent_runs=2)
    store.on_commit = lambda items: [h.engine.offer(item) for item in items]  # the bus
    await h.engine.start()
    await h.graph(node("s", "stubborn"))
    run = await h.service.create_run("p", "g")
    await asyncio.wait_for(kit.arrived("stubborn").wait(), 20)
    now = FakeClock().now()
    await store.recover_runs(["a"], 3, changes.recover(now), changes.give_up(now, 3))
    for _ in range(100):  # bounded: the stop is the event's own doing, on this loop
        if kit.executions[("cancel-ignored", "s")]:
            break
        await asyncio.sleep(0)
    assert kit.executions[("cancel-ignored", "s")] == 1  # the old execution was stopped
    kit.gate("stubborn").set()
    await h.idle()
    assert h.run(run.id).status is RunStatus.COMPLETED
    assert h.run(run.id).recoveries == 1
