"""The soak's invariant checker (bench/soak_check.py) on made-up evidence: a clean history
passes, and each kind of fault planted in it is reported."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from bench.soak_check import (
    COMMIT_WINDOW_NS,
    Evidence,
    FinalRun,
    Line,
    Receipt,
    Stored,
    check,
    digest,
    parse_tally,
    summarize,
)

A, B = "run-a", "run-b"
MS = 1_000_000


def events() -> dict[str, list[Stored]]:
    """Two runs of one node `s`, their events interleaved in the log (seq 1 is a graph's)."""

    def run(seq: int, run_id: str, status: str) -> Stored:
        body = {"seq": seq, "type": f"workflow.run.{status}", "run_id": run_id}
        return Stored(seq, digest(body), body["type"], gen=0)

    def node(seq: int, run_id: str, status: str) -> Stored:
        body = {"seq": seq, "type": "workflow.node_state.updated", "run_id": run_id, "s": status}
        return Stored(seq, digest(body), body["type"], node_id="s", node_status=status)

    return {
        A: [run(2, A, "created"), node(4, A, "running"), node(6, A, "completed")],
        B: [run(3, B, "created"), node(5, B, "running"), node(7, B, "completed")],
    }


def evidence(**changes: Any) -> Evidence:
    stored = events()
    watcher = Receipt("w", "watcher")
    watcher.frames = [
        (1, None, "graph"),
        *sorted((e.seq, run_id, e.digest) for run_id, run in stored.items() for e in run),
    ]
    follower = Receipt("f", "follower")
    follower.frames = [(e.seq, A, e.digest) for e in stored[A]]
    made = Evidence(
        log_seqs=[1, 2, 3, 4, 5, 6, 7],
        stored=stored,
        acknowledged={A, B},
        keys_sent={"ka", "kb"},
        final={A: FinalRun("completed", None, "ka"), B: FinalRun("completed", None, "kb")},
        live_owners={"vm-1"},
        tally=[
            Line("start", A, "s", 0, 100, 1 * MS),
            Line("end", A, "s", 0, 100, 5 * MS),
            Line("start", B, "s", 0, 100, 2 * MS),
            Line("end", B, "s", 0, 100, 6 * MS),
        ],
        tally_nodes={"s"},
        deaths={},
        receipts=[watcher, follower],
    )
    for name, value in changes.items():
        setattr(made, name, value)
    return made


def kinds(made: Evidence) -> list[str]:
    return [v["kind"] for v in check(made).violations]


def test_a_clean_history_has_no_violation() -> None:
    report = check(evidence())
    assert report.violations == []
    assert report.figures["events_checked"] == 7
    assert report.figures["executions_checked"] == 2


def test_a_gap_and_a_duplicate_in_the_log_are_reported() -> None:
    assert "log_gap" in kinds(evidence(log_seqs=[1, 2, 3, 5, 6, 7]))
    assert "log_duplicate" in kinds(evidence(log_seqs=[1, 2, 3, 4, 4, 5, 6, 7]))


def test_a_client_missing_a_frame_or_getting_one_twice_is_reported() -> None:
    made = evidence()
    made.receipts[0].frames.pop(3)  # the watcher's seq 4
    assert "watcher_gap" in kinds(made)
    made = evidence()
    made.receipts[1].frames.insert(1, made.receipts[1].frames[0])  # the follower's seq 2 again
    assert "follower_differs_from_run_log" in kinds(made)
    made = evidence()
    made.receipts[0].frames.insert(2, made.receipts[0].frames[1])
    assert "watcher_duplicate" in kinds(made)


def test_a_frame_unlike_the_stored_event_is_reported() -> None:
    made = evidence()
    seq, run_id, _ = made.receipts[0].frames[2]
    made.receipts[0].frames[2] = (seq, run_id, "0000")
    assert kinds(made) == ["frame_differs_from_store"]


def test_an_event_no_client_got_is_reported() -> None:
    made = evidence()
    made.receipts = [made.receipts[1]]  # only the follower of run A: B's events never arrived
    assert kinds(made) == ["never_delivered"] * 4  # seq 1 (the graph's), 3, 5, 7


def test_a_completed_node_running_again_is_reported() -> None:
    made = evidence()
    made.tally += [Line("start", A, "s", 0, 100, 9 * MS), Line("end", A, "s", 0, 100, 10 * MS)]
    assert kinds(made) == ["completed_node_ran_again"]


def test_a_node_again_after_a_kill_right_after_it_ended_is_at_least_once() -> None:
    made = evidence(deaths={100: 5 * MS + COMMIT_WINDOW_NS // 2})
    made.tally += [Line("start", A, "s", 0, 200, 9 * MS), Line("end", A, "s", 0, 200, 10 * MS)]
    report = check(made)
    assert report.violations == []
    assert report.figures["reruns_after_kill_before_commit"] == 1


def test_a_fresh_start_may_run_its_nodes_again() -> None:
    """An execute of a cancelled run starts it from scratch (the log says when): its nodes run
    again, with or without a new input (a sub-workflow's child is started afresh without)."""
    made = evidence()
    made.stored[A] += [
        Stored(8, "c", "workflow.run.cancelled", status="cancelled", at_ns=7 * MS),
        Stored(9, "p", "workflow.run.updated", status="pending", at_ns=8 * MS),
        Stored(10, "r", "workflow.node_state.updated", node_id="s", node_status="running"),
        Stored(11, "d", "workflow.node_state.updated", node_id="s", node_status="completed"),
    ]
    made.log_seqs += [8, 9, 10, 11]
    made.receipts = []
    made.tally += [Line("start", A, "s", 0, 100, 9 * MS), Line("end", A, "s", 0, 100, 10 * MS)]
    assert all(kind == "never_delivered" for kind in kinds(made))
    made.stored[A][-3] = replace(made.stored[A][-3], at_ns=9 * MS + 1)  # after the node began
    assert "completed_node_ran_again" in kinds(made)


def test_a_sub_workflow_result_from_an_old_input_is_reported() -> None:
    final = {
        A: FinalRun("completed", None, "ka", gen=2, child_gen=0),
        B: FinalRun("completed", None, "kb", gen=1, child_gen=1),
    }
    assert kinds(evidence(final=final)) == ["sub_workflow_result_from_an_old_input"]


def test_two_processes_executing_one_run_at_once_are_reported() -> None:
    made = evidence(deaths={100: 8 * MS})
    made.tally = [
        Line("start", A, "s", 0, 100, 1 * MS),  # killed at 8 ms without an end: open until then
        Line("start", A, "s", 0, 200, 7 * MS),
        Line("end", A, "s", 0, 200, 9 * MS),
        Line("start", B, "s", 0, 100, 2 * MS),
        Line("end", B, "s", 0, 100, 6 * MS),
    ]
    assert kinds(made) == ["run_executed_by_two_processes"]
    made.deaths = {100: 7 * MS - 1}  # the other process started after the kill: fine
    assert kinds(made) == []


def test_a_completion_in_the_log_twice_or_without_its_end_is_reported() -> None:
    made = evidence()
    made.stored[A].append(Stored(8, "x", "workflow.node_state.updated", None, "s", "completed"))
    made.log_seqs.append(8)
    made.receipts = []
    assert "node_completed_twice_in_log" in kinds(made)
    made = evidence()
    made.stored[A].append(Stored(8, "x", "workflow.node_state.updated", None, "s", "running"))
    made.log_seqs.append(8)
    made.receipts = []
    assert "node_running_again_after_completed_in_log" in kinds(made)
    made = evidence()
    made.tally = [line for line in made.tally if (line.run_id, line.kind) != (A, "end")]
    assert "completed_without_ending" in kinds(made)
    assert "execution_never_ended" in kinds(made)


def test_a_missing_unfinished_orphaned_or_unknown_run_is_reported() -> None:
    assert kinds(evidence(final={B: FinalRun("completed", None, "kb")})) == [
        "acknowledged_run_missing"
    ]
    final = {A: FinalRun("running", "vm-dead", "ka"), B: FinalRun("paused", None, "kb")}
    assert kinds(evidence(final=final)) == ["running_without_owner", "run_not_finished"]
    final = {A: FinalRun("completed", None, "ka"), B: FinalRun("completed", None, "k?")}
    assert kinds(evidence(final=final)) == ["unknown_run"]


def test_the_tally_and_events_are_read_as_the_soak_writes_them() -> None:
    assert parse_tally("start r n 2 10 99\nend r n 2 10 120\n") == [
        Line("start", "r", "n", 2, 10, 99),
        Line("end", "r", "n", 2, 10, 120),
    ]
    event = {"seq": 3, "type": "workflow.run.updated", "run": {"input": {"gen": 4}}}
    assert summarize(event) == Stored(3, digest(event), "workflow.run.updated", gen=4)
    assert digest({"a": 1, "b": 2}) == digest({"b": 2, "a": 1})


def test_an_acknowledged_command_missing_from_the_log_is_reported() -> None:
    made = evidence()
    cancelled = {"seq": 8, "type": "workflow.run.cancelled", "run": {"status": "cancelled"}}
    made.stored[B].append(summarize(cancelled))
    made.log_seqs.append(8)
    made.receipts = []
    made.acked[(B, "cancel")] = 1
    assert "acknowledged_command_not_in_log" not in kinds(made)
    made.acked[(A, "cancel")] = 1  # answered 200, yet run A's log has no cancellation
    made.acked[(B, "execute")] = 1
    missing = [v for v in check(made).violations if v["kind"] == "acknowledged_command_not_in_log"]
    assert [(v["run_id"], v["command"]) for v in missing] == [(A, "cancel"), (B, "execute")]


def test_an_outcome_after_the_next_fresh_start_belongs_to_its_own_start() -> None:
    """A node cancelled with its run writes its line after the cancel, and the next execute may
    commit before that: the line is still its execution's, not the next start's."""
    made = evidence()
    made.stored[A] += [
        Stored(8, "c", "workflow.run.cancelled", status="cancelled", at_ns=7 * MS),
        Stored(9, "p", "workflow.run.updated", status="pending", at_ns=8 * MS),
    ]
    made.log_seqs += [8, 9]
    made.receipts = []
    made.tally += [Line("start", A, "t", 0, 100, 6 * MS), Line("cancel", A, "t", 0, 100, 9 * MS)]
    assert all(kind == "never_delivered" for kind in kinds(made))
