"""The run state machine (DESIGN §3): the legal moves, the timestamps they set, their events."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.domain import EventType, PauseReason, Run
from core.domain import RunStatus as S
from core.errors import InvalidTransition
from core.states import event_type, transition

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=1)
T2 = T0 + timedelta(minutes=2)
T3 = T0 + timedelta(minutes=3)

# Written out from the DESIGN §3 table, not imported: the test is what the table must be.
LEGAL: set[tuple[S, S]] = {
    (S.PENDING, S.RUNNING),
    (S.PENDING, S.CANCELLED),
    (S.PENDING, S.PAUSED),
    (S.RUNNING, S.COMPLETED),
    (S.RUNNING, S.FAILED),
    (S.RUNNING, S.CANCELLED),
    (S.RUNNING, S.PAUSED),
    (S.PAUSED, S.RUNNING),
    (S.PAUSED, S.CANCELLED),
    (S.FAILED, S.PENDING),
    (S.CANCELLED, S.PENDING),
}
ALL_PAIRS = list(itertools.product(S, S))
ILLEGAL = [pair for pair in ALL_PAIRS if pair not in LEGAL]


def make_run(status: S = S.PENDING, **fields: Any) -> Run:
    return Run(
        id="r1",
        workflow_id="wf",
        status=status,
        project_id="p",
        graph_version=1,
        created_at=T0,
        **fields,
    )


def walk(*statuses: S) -> Run:
    """A pending run moved through `statuses`, one minute apart from T1 on."""
    run = make_run()
    for minute, status in enumerate(statuses, start=1):
        run = transition(run, status, T0 + timedelta(minutes=minute))
    return run


@pytest.mark.parametrize(("current", "target"), sorted(LEGAL), ids=lambda s: s.value)
def test_legal_transition_moves_the_run(current: S, target: S) -> None:
    moved = transition(make_run(current), target, T1)

    assert moved.status is target


@pytest.mark.parametrize(("current", "target"), ILLEGAL, ids=lambda s: s.value)
def test_illegal_transition_raises(current: S, target: S) -> None:
    run = make_run(current)

    with pytest.raises(InvalidTransition) as caught:
        transition(run, target, T1)

    assert caught.value.current == current.value
    assert caught.value.target == target.value
    assert run.status is current


def test_illegal_transition_message_names_the_action_and_the_status() -> None:
    with pytest.raises(InvalidTransition, match=r"cannot execute: run 'r1' is 'completed'"):
        transition(make_run(S.COMPLETED), S.PENDING, T1, action="execute")


def test_illegal_transition_without_action_names_the_target() -> None:
    with pytest.raises(InvalidTransition, match=r"move to 'running'.*'completed'"):
        transition(make_run(S.COMPLETED), S.RUNNING, T1)


def test_completed_is_terminal() -> None:
    done = walk(S.RUNNING, S.COMPLETED)

    for target in S:
        with pytest.raises(InvalidTransition):
            transition(done, target, T3)


# -- timestamps ------------------------------------------------------------------------------


def test_entering_running_sets_started_at() -> None:
    run = transition(make_run(), S.RUNNING, T1)

    assert run.started_at == T1
    assert run.finished_at is None


def test_resuming_after_a_pause_keeps_the_first_started_at() -> None:
    run = walk(S.RUNNING, S.PAUSED, S.RUNNING)

    assert run.started_at == T1


def test_running_again_after_a_retry_keeps_the_first_started_at() -> None:
    run = walk(S.RUNNING, S.FAILED, S.PENDING, S.RUNNING)

    assert run.started_at == T1


def test_pending_run_is_not_started_until_it_runs() -> None:
    assert transition(make_run(), S.PAUSED, T1).started_at is None
    assert transition(make_run(), S.CANCELLED, T1).started_at is None


@pytest.mark.parametrize("target", [S.COMPLETED, S.FAILED, S.CANCELLED], ids=str)
def test_finishing_sets_finished_at(target: S) -> None:
    run = transition(walk(S.RUNNING), target, T2)

    assert run.finished_at == T2
    assert run.started_at == T1


def test_cancelling_sets_cancelled_and_finished_at() -> None:
    run = transition(walk(S.RUNNING), S.CANCELLED, T2)

    assert run.cancelled_at == T2
    assert run.finished_at == T2


@pytest.mark.parametrize("target", [S.COMPLETED, S.FAILED], ids=str)
def test_completing_or_failing_does_not_set_cancelled_at(target: S) -> None:
    assert transition(walk(S.RUNNING), target, T2).cancelled_at is None


def test_cancelling_a_paused_run_sets_finished_and_cancelled_at() -> None:
    run = walk(S.RUNNING, S.PAUSED, S.CANCELLED)

    assert run.cancelled_at == T3
    assert run.finished_at == T3


@pytest.mark.parametrize("source", [S.PENDING, S.RUNNING], ids=str)
def test_pausing_sets_paused_at(source: S) -> None:
    run = make_run(source)

    assert transition(run, S.PAUSED, T2).paused_at == T2


def test_pausing_does_not_finish_the_run() -> None:
    assert walk(S.RUNNING, S.PAUSED).finished_at is None


def test_re_executing_a_failed_run_clears_its_outcome() -> None:
    failed = transition(walk(S.RUNNING), S.FAILED, T2, error={"message": "boom"}, output={"x": 1})
    assert failed.error == {"message": "boom"}

    again = transition(failed, S.PENDING, T3)

    assert again.finished_at is None
    assert again.cancelled_at is None
    assert again.error is None
    assert again.output is None
    assert again.started_at == T1


def test_re_executing_a_cancelled_run_clears_its_outcome() -> None:
    cancelled = transition(walk(S.RUNNING), S.CANCELLED, T2, error={"message": "stopped"})

    again = transition(cancelled, S.PENDING, T3)

    assert again.finished_at is None
    assert again.cancelled_at is None
    assert again.error is None
    assert again.output is None


def test_changes_given_with_a_transition_are_recorded() -> None:
    run = transition(walk(S.RUNNING), S.COMPLETED, T2, output={"a": 1}, last_message="done")

    assert run.output == {"a": 1}
    assert run.last_message == "done"


def _paused_for_input() -> Run:
    return transition(
        walk(S.RUNNING),
        S.PAUSED,
        T2,
        pause_reason=PauseReason.INPUT_REQUIRED,
        prompt={"question": "approve?"},
    )


def test_pausing_for_input_records_the_reason_and_prompt() -> None:
    run = _paused_for_input()

    assert run.pause_reason is PauseReason.INPUT_REQUIRED
    assert run.prompt == {"question": "approve?"}


@pytest.mark.parametrize("target", [S.RUNNING, S.CANCELLED], ids=str)
def test_leaving_a_pause_clears_the_reason_and_prompt(target: S) -> None:
    # docs/decisions.md: "leaving a pause clears pause_reason and prompt".
    left = transition(_paused_for_input(), target, T3)

    assert left.pause_reason is None
    assert left.prompt is None


# -- events ----------------------------------------------------------------------------------


EVENT_OF_EVERY_LEGAL_MOVE: dict[tuple[S, S], EventType] = {
    (S.PENDING, S.RUNNING): EventType.RUN_UPDATED,
    (S.PENDING, S.CANCELLED): EventType.RUN_CANCELLED,
    (S.PENDING, S.PAUSED): EventType.RUN_PAUSED,
    (S.RUNNING, S.COMPLETED): EventType.RUN_COMPLETED,
    (S.RUNNING, S.FAILED): EventType.RUN_FAILED,
    (S.RUNNING, S.CANCELLED): EventType.RUN_CANCELLED,
    (S.RUNNING, S.PAUSED): EventType.RUN_PAUSED,
    (S.PAUSED, S.RUNNING): EventType.RUN_RESUMED,
    (S.PAUSED, S.CANCELLED): EventType.RUN_CANCELLED,
    (S.FAILED, S.PENDING): EventType.RUN_UPDATED,
    (S.CANCELLED, S.PENDING): EventType.RUN_UPDATED,
}


def test_every_legal_move_has_an_expected_event() -> None:
    assert set(EVENT_OF_EVERY_LEGAL_MOVE) == LEGAL


@pytest.mark.parametrize(
    ("current", "target", "expected"),
    [(c, t, e) for (c, t), e in EVENT_OF_EVERY_LEGAL_MOVE.items()],
    ids=str,
)
def test_each_move_is_published_under_its_event_name(
    current: S, target: S, expected: EventType
) -> None:
    assert event_type(current, target) is expected


def test_event_names_are_the_original_services() -> None:
    assert event_type(S.PAUSED, S.RUNNING).value == "workflow.run.resumed"
    assert event_type(S.RUNNING, S.PAUSED).value == "workflow.run.paused"
    assert event_type(S.RUNNING, S.CANCELLED).value == "workflow.run.cancelled"
    assert event_type(S.RUNNING, S.COMPLETED).value == "workflow.run.completed"
    assert event_type(S.RUNNING, S.FAILED).value == "workflow.run.failed"
    assert event_type(S.PENDING, S.RUNNING).value == "workflow.run.updated"
