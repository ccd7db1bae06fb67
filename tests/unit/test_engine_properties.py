"""Property test: random sequences of run commands and restarts against the engine.

Hypothesis drives create / execute / pause / resume / cancel / restart / let-it-run, on fake
ports that outlive each engine (a restart is a new engine on the same store and checkpoints),
for three graphs: plain nodes, one that waits on a timer (parked: `park_after_s = 0`), and one
whose `subworkflow` node runs the first as a child. After every sequence it checks the
invariants a user relies on: every run and child settles (no deadlock, no lost wake-up), and
no completed node ran twice.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.domain import GraphSpec, NodeStatus, RunStatus
from core.engine import Engine, EngineSettings
from core.errors import Conflict, InvalidTransition
from core.service import ServiceLimits, WorkflowService
from core.states import TERMINAL, TRANSITIONS
from plugins.basic import Delay
from plugins.subworkflow import Subworkflow
from tests.support.nodes import TestKit
from tests.unit.fakes import FakeCheckpoints, FakeClock, FakeStore

NODES = ("a", "b", "c")
GRAPHS: dict[str, list[dict[str, Any]]] = {
    "g": [{"id": n, "type": "count"} for n in NODES],
    "timed": [
        {"id": "a", "type": "count"},
        {"id": "t", "type": "delay", "config": {"seconds": 0.002}},
        {"id": "b", "type": "count"},
    ],
    "parent": [
        {"id": "a", "type": "count"},
        {"id": "s", "type": "subworkflow", "config": {"workflow_id": "g"}},
        {"id": "b", "type": "count"},
    ],
}

command = st.one_of(
    st.tuples(st.just("create"), st.sampled_from(sorted(GRAPHS))),
    st.tuples(st.just("execute"), st.integers(0, 5), st.booleans()),
    st.tuples(st.sampled_from(["pause", "resume", "cancel"]), st.integers(0, 5)),
    st.tuples(st.just("step"), st.integers(1, 30)),
    st.just(("restart",)),
)


class World:
    def __init__(self) -> None:
        self.store = FakeStore()
        self.checkpoints = FakeCheckpoints(self.store)
        self.kit = TestKit()
        self.node_types = {t.name: t for t in self.kit.cortexd_node_types()}  # type: ignore[attr-defined]
        self.node_types |= {"delay": Delay(), "subworkflow": Subworkflow()}
        self.run_ids: list[str] = []
        self.clock = FakeClock()  # one clock for every engine: time never goes back
        self.restarted_fresh: set[str] = set()
        self.engine, self.service = self._new_engine()

    def _new_engine(self) -> tuple[Engine, WorkflowService]:
        clock = self.clock
        engine = Engine(
            self.store,
            self.checkpoints,
            clock,
            self.node_types,
            EngineSettings(max_concurrent_runs=2, shutdown_grace_s=5, park_after_s=0.0),
        )
        service = WorkflowService(self.store, engine, clock, self.node_types, ServiceLimits())
        return engine, service

    async def setup(self) -> None:
        for graph_id, nodes in GRAPHS.items():
            ids = [n["id"] for n in nodes]
            spec = {
                "id": graph_id,
                "name": graph_id,
                "nodes": nodes,
                "edges": [{"source": a, "target": b} for a, b in itertools.pairwise(ids)],
            }
            await self.store.put_graph(
                "p", graph_id, GraphSpec.model_validate(spec), FakeClock().now(), create=True
            )
        await self.engine.start()

    async def apply(self, cmd: tuple[Any, ...]) -> None:
        name = cmd[0]
        if name == "create":
            self.run_ids.append((await self.service.create_run("p", cmd[1])).id)
        elif name == "step":
            for _ in range(cmd[1]):
                await asyncio.sleep(0)
        elif name == "restart":
            await self.engine.stop()
            self.engine, self.service = self._new_engine()
            await self.engine.start()
        elif self.run_ids:
            run_id = self.run_ids[cmd[1] % len(self.run_ids)]
            before = self.store.runs[run_id].status
            try:
                if name == "execute":
                    await self.service.execute("p", run_id, from_start=cmd[2])
                    if cmd[2] or before is RunStatus.CANCELLED:
                        self.restarted_fresh.add(run_id)
                else:
                    await getattr(self.service, name)("p", run_id)
            except (InvalidTransition, Conflict):
                pass  # refused as the state machine says; checked below from the events

    async def settle(self) -> None:
        for run_id in self.run_ids:
            if self.store.runs[run_id].status is RunStatus.PAUSED:
                await self.service.resume("p", run_id)  # and the children it paused
        # Idle is not settled while a run is parked: a wake-up comes from a timer or a child.
        for _ in range(1000):
            await asyncio.wait_for(self.engine.wait_idle(), 30)
            if all(run.status in TERMINAL for run in self.store.runs.values()):
                break
            await asyncio.sleep(0.01)
        await self.engine.stop()


def check_invariants(world: World) -> None:
    store = world.store
    children = [r.id for r in store.runs.values() if r.parent_run_id is not None]
    for run_id in [*world.run_ids, *children]:
        run = store.runs[run_id]
        history = [
            RunStatus(e["run"]["status"])
            for e in store.events
            if e.get("run_id") == run_id and "run" in e
        ]
        assert history[0] is RunStatus.PENDING
        for previous, following in itertools.pairwise(history):
            # The same status twice is not a transition but an update of the run as it stands:
            # a change of hands (running, released at a stop for the next engine to claim, a
            # park, a wake-up), or a note on a child (failed or cancelled: its failure seen,
            # its reruns granted by an execute of its parent).
            update = previous is following
            assert update or following in TRANSITIONS[previous], (run_id, history)

        # Settled: every run ran to an end (nothing left running without a task).
        assert run.status in TERMINAL, (run_id, run.status)
        assert run.finished_at is not None
        assert (run.cancelled_at is not None) == (run.status is RunStatus.CANCELLED)
        if run.started_at is not None:
            assert run.finished_at >= run.started_at

        states = store.node_states.get(run_id, {})
        assert all(s.status is not NodeStatus.RUNNING for s in states.values()), states
        nodes = GRAPHS[run.workflow_id]
        if run.status is RunStatus.COMPLETED:
            assert {n["id"]: states[n["id"]].status for n in nodes} == {
                n["id"]: NodeStatus.COMPLETED for n in nodes
            }
            # A child started afresh (cancelled with its parent, executed again) may repeat.
            fresh = run_id in world.restarted_fresh or RunStatus.CANCELLED in history
            if not fresh:
                counted = [n["id"] for n in nodes if n["type"] == "count"]
                counts = [world.kit.count(run_id, n) for n in counted]
                assert counts == [1] * len(counted), (run_id, counts)
        if run.workflow_id == "parent" and run.status is RunStatus.COMPLETED:
            # One child per execution of its node (a start over makes another): the output
            # is a completed one's.
            mine = [store.runs[c] for c in children if store.runs[c].parent_run_id == run_id]
            assert run.output is not None
            outputs = [c.output for c in mine if c.status is RunStatus.COMPLETED]
            assert run.output["outputs"]["s"] in outputs, (run_id, mine)

    seqs = [e["seq"] for e in store.events]
    assert seqs == list(range(1, len(seqs) + 1))


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(command, min_size=1, max_size=25))
def test_random_command_sequences_keep_the_invariants(commands: list[tuple[Any, ...]]) -> None:
    async def scenario() -> None:
        world = World()
        await world.setup()
        for cmd in commands:
            await world.apply(cmd)
        await world.settle()
        check_invariants(world)

    asyncio.run(scenario())
