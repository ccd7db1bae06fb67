"""Answers to runs waiting for input: kept in the store from the resume on, across a restart,
and never given to a question they were not the answer to."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from core.domain import GraphSpec, PauseReason, Run, RunStatus
from core.engine import Engine, EngineSettings
from core.nodes import NodeContext, NodeType
from core.ports import PendingAnswer
from core.service import ServiceLimits, WorkflowService
from plugins.approval import Approval
from tests.support.nodes import TestKit
from tests.unit.fakes import FakeCheckpoints, FakeClock, FakeStore


class TwoQuestions:
    """Asks twice in one node: both questions are asked at the same checkpoint."""

    name = "two-questions"
    title = "Two questions"
    description = "Asks first?, then second?"
    config_schema: dict[str, Any] = {"type": "object"}

    async def execute(self, ctx: NodeContext, config: Any, state: Any) -> dict[str, Any]:
        return {"first": ctx.interrupt("first?"), "second": ctx.interrupt("second?")}


class Daemon:
    """One daemon lifetime: an engine and service over a store and checkpoints that outlive it."""

    def __init__(
        self, store: FakeStore, checkpoints: FakeCheckpoints, kit: TestKit, **settings: Any
    ) -> None:
        types: list[Any] = [*kit.cortexd_node_types(), Approval(), TwoQuestions()]
        node_types: dict[str, NodeType] = {t.name: t for t in types}
        clock = FakeClock()
        self.engine = Engine(store, checkpoints, clock, node_types, EngineSettings(**settings))
        self.service = WorkflowService(store, self.engine, clock, node_types, ServiceLimits())

    async def idle(self) -> None:
        await asyncio.wait_for(self.engine.wait_idle(), 20)


Start = Callable[..., Awaitable[Daemon]]


@pytest.fixture
async def daemon(
    store: FakeStore, checkpoints: FakeCheckpoints, kit: TestKit
) -> AsyncIterator[Start]:
    """Starts daemons on the shared store; stops every one at the end of the test."""
    made: list[Daemon] = []

    async def start(**settings: Any) -> Daemon:
        made.append(Daemon(store, checkpoints, kit, **settings))
        await made[-1].engine.start()
        return made[-1]

    yield start
    kit.gate("default").set()
    for d in made:
        await d.engine.stop()


async def put_graph(store: FakeStore, graph_id: str, *nodes: dict[str, Any]) -> None:
    edges = [{"source": a["id"], "target": b["id"]} for a, b in itertools.pairwise(nodes)]
    spec = {"id": graph_id, "name": graph_id, "nodes": list(nodes), "edges": edges}
    await store.put_graph(
        "p", graph_id, GraphSpec.model_validate(spec), FakeClock().now(), create=True
    )


def ask(node_id: str, prompt: str) -> dict[str, Any]:
    return {"id": node_id, "type": "approval", "config": {"prompt": prompt}}


def pauses(store: FakeStore, run_id: str) -> int:
    return sum(e["type"] == "workflow.run.paused" and e["run_id"] == run_id for e in store.events)


async def asked_and_queued(d: Daemon, store: FakeStore, kit: TestKit) -> Run:
    """A run waiting for input, then answered "yes" while another run holds the only slot."""
    await put_graph(store, "ask", ask("ok", "Ship it?"))
    await put_graph(store, "hold", {"id": "g", "type": "gate"})
    run = await d.service.create_run("p", "ask")
    await d.idle()
    assert store.runs[run.id].pause_reason is PauseReason.INPUT_REQUIRED
    await d.service.create_run("p", "hold")
    await asyncio.wait_for(kit.arrived("default").wait(), 20)
    await d.service.resume("p", run.id, "yes")
    assert (await d.engine.counts()).claimable == 1  # acknowledged, waiting for the slot
    return run


async def test_an_answer_acknowledged_before_a_stop_is_used_after_the_restart(
    daemon: Start, store: FakeStore, kit: TestKit
) -> None:
    first = await daemon(max_concurrent_runs=1, shutdown_grace_s=0)
    run = await asked_and_queued(first, store, kit)
    await first.engine.stop()
    assert store.runs[run.id].status is RunStatus.RUNNING

    kit.gate("default").set()
    second = await daemon(max_concurrent_runs=1)
    await second.idle()
    done = store.runs[run.id]
    assert done.status is RunStatus.COMPLETED  # not asked again
    assert done.output is not None
    assert done.output["outputs"]["ok"] == {"value": "yes"}
    assert pauses(store, run.id) == 1
    assert store.answers == {}


async def test_an_answer_past_its_checkpoint_does_not_answer_the_next_question(
    daemon: Start, store: FakeStore, checkpoints: FakeCheckpoints
) -> None:
    first = await daemon()
    await put_graph(store, "two", ask("first", "first?"), ask("second", "second?"))
    run = await first.service.create_run("p", "two")
    await first.idle()
    asked_at = await checkpoints.latest_id(run.id)
    resumed = await first.service.resume("p", run.id, "one")
    await first.idle()
    assert store.runs[run.id].prompt == {"prompt": "second?"}
    assert store.answers == {}  # used: dropped with the pause it led to
    await first.engine.stop()

    # What a crash leaves after LangGraph's checkpoint past "first" but before the run's pause
    # was recorded: the run running, and its answer kept for the checkpoint it answered.
    store.runs[run.id] = resumed
    store.answers[run.id] = PendingAnswer(asked_at, "one")
    second = await daemon()
    await second.idle()
    again = store.runs[run.id]
    assert (again.status, again.prompt) == (RunStatus.PAUSED, {"prompt": "second?"})
    assert store.answers == {}

    await second.service.resume("p", run.id, "two")
    await second.idle()
    done = store.runs[run.id]
    assert done.output is not None
    assert done.output["outputs"] == {"first": {"value": "one"}, "second": {"value": "two"}}


async def test_a_pause_before_the_run_got_its_slot_keeps_the_answer(
    daemon: Start, store: FakeStore, kit: TestKit
) -> None:
    d = await daemon(max_concurrent_runs=1)
    run = await asked_and_queued(d, store, kit)
    await d.service.pause("p", run.id)
    assert store.runs[run.id].pause_reason is PauseReason.REQUESTED
    assert run.id in store.answers

    kit.gate("default").set()
    await d.service.resume("p", run.id)
    await d.idle()
    done = store.runs[run.id]
    assert done.status is RunStatus.COMPLETED
    assert done.output is not None
    assert done.output["outputs"]["ok"] == {"value": "yes"}
    assert store.answers == {}


async def test_cancelling_a_run_drops_its_answer(
    daemon: Start, store: FakeStore, kit: TestKit
) -> None:
    d = await daemon(max_concurrent_runs=1)
    run = await asked_and_queued(d, store, kit)
    await d.service.cancel("p", run.id)
    assert store.answers == {}


async def test_a_failed_run_drops_its_answer_and_its_retry_is_not_asked_again(
    daemon: Start, store: FakeStore
) -> None:
    d = await daemon()
    flaky = {"id": "after", "type": "fail", "config": {"fail_times": 1}}
    await put_graph(store, "g", ask("ok", "Ship it?"), flaky)
    run = await d.service.create_run("p", "g")
    await d.idle()
    await d.service.resume("p", run.id, "yes")
    await d.idle()
    assert store.runs[run.id].status is RunStatus.FAILED
    assert store.answers == {}  # LangGraph took it before any node ran
    await d.service.execute("p", run.id)
    await d.idle()
    done = store.runs[run.id]
    assert done.status is RunStatus.COMPLETED
    assert done.output is not None
    assert done.output["outputs"]["ok"] == {"value": "yes"}
    assert pauses(store, run.id) == 1


async def test_an_answer_is_never_given_to_the_next_question_of_the_same_node(
    daemon: Start, store: FakeStore, checkpoints: FakeCheckpoints, kit: TestKit
) -> None:
    d = await daemon()
    await put_graph(store, "g", {"id": "q", "type": "two-questions"})
    run = await d.service.create_run("p", "g")
    await d.idle()
    asked = store.answers.copy()
    resumed = await d.service.resume("p", run.id, "one")
    first_answer = store.answers[run.id]
    await d.idle()
    assert store.runs[run.id].prompt == "second?"
    assert await checkpoints.latest_id(run.id) == first_answer.checkpoint_id  # the same one
    assert asked == {}
    # What a pause requested while the node ran again (or a crash before its pause was
    # recorded) leaves: the first answer still kept, at the checkpoint both questions share.
    store.runs[run.id] = resumed.model_copy(
        update={"status": RunStatus.PAUSED, "pause_reason": PauseReason.REQUESTED}
    )
    store.answers[run.id] = first_answer
    await d.engine.stop()
    again = await daemon()
    await again.service.resume("p", run.id)
    await again.idle()
    waiting = store.runs[run.id]
    assert (waiting.status, waiting.prompt) == (RunStatus.PAUSED, "second?")  # asked, not answered
    await again.service.resume("p", run.id, "two")
    await again.idle()
    done = store.runs[run.id]
    assert done.output is not None
    assert done.output["outputs"]["q"] == {"first": "one", "second": "two"}


async def test_executing_from_the_start_drops_a_kept_answer(
    daemon: Start, store: FakeStore
) -> None:
    d = await daemon()
    await put_graph(store, "g", ask("ok", "Ship it?"), {"id": "after", "type": "fail"})
    run = await d.service.create_run("p", "g")
    await d.idle()
    await d.service.resume("p", run.id, "yes")
    await d.idle()
    assert store.runs[run.id].status is RunStatus.FAILED
    store.answers[run.id] = PendingAnswer(None, "yes")  # as if one had been kept

    await d.service.execute("p", run.id, from_start=True)
    await d.idle()
    assert store.runs[run.id].pause_reason is PauseReason.INPUT_REQUIRED  # asked anew
    assert store.answers == {}
