"""The soak's invariants, checked on what it gathered (no I/O here; tests feed it made-up logs).

- the store's event log is gap-free (seq 1..N, each once);
- every acknowledged run is stored, and every stored run is one the soak asked for; every
  acknowledged command (pause, resume, answer, cancel, execute) is in its run's log;
- at the end every run is finished, and none is `running` without a live owner;
- a completed parent's sub-workflow result was computed on the parent's own input;
- from the tally written outside the daemons (bench/soak_nodes.py): no completed node ran
  again in the same fresh start of its run (from the log: an execute of a cancelled run),
  unless its process was killed right after it ended (its completion may not have committed:
  at-least-once); no run was executed by two processes at once; every execution ended (or its
  process was killed);
- from the log: no node is recorded `completed` twice in one fresh start of its run, nor
  `running` again after it completed, nor completed without its tally saying it ended;
- what WebSocket clients received: a project-wide watcher's frames are the log itself, gap-free
  across its reconnects; a follower's frames of each run it followed are that run's stored
  events, each once, in order; each frame equals the stored event; together the clients
  received every stored event.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

JSON = dict[str, Any]
TERMINAL = frozenset({"completed", "failed", "cancelled"})
# A node's end written by the node precedes the commit of its completion (batched, up to 5 ms
# lazy): a kill within this long after it may leave the node to run again, legitimately.
COMMIT_WINDOW_NS = 2_000_000_000
# DESIGN/decisions "known limit": a cancel reaches another daemon's node within a moment, and an
# execute right after may start the run elsewhere meanwhile. Tolerated (and counted) this long.
CANCEL_GRACE_NS = 2_000_000_000


@dataclass(frozen=True, slots=True)
class Line:
    """One line of the tally: KIND RUN NODE GEN PID NS."""

    kind: str  # start | end | fail | cancel
    run_id: str
    node_id: str
    gen: int
    pid: int
    ns: int


@dataclass(frozen=True, slots=True)
class Stored:
    """What the checks need of one stored event of a run."""

    seq: int
    digest: str
    type: str
    gen: int | None = None  # run events: the run's input gen
    node_id: str | None = None  # node-state events
    node_status: str | None = None
    status: str | None = None  # run events: the run's status
    at_ns: int = 0  # its timestamp (taken just before its commit), ns since 1970


@dataclass(frozen=True, slots=True)
class FinalRun:
    status: str
    owner: str | None
    key: str | None  # the soak's key in the run's input
    gen: int | None = None  # the gen of its input
    child_gen: int | None = None  # completed parent: the gen its sub-workflow's result ran on


@dataclass
class Receipt:
    """Every frame one logical client got, across all its connections, in arrival order."""

    name: str
    kind: str  # "watcher" (project-wide, since chained) or "follower" (runs subscribed)
    frames: list[tuple[int, str | None, str]] = field(default_factory=list)  # seq, run, digest
    odd: list[str] = field(default_factory=list)  # frames that are not events nor replies
    start_after: int = 0  # watcher: the since of its first connection


@dataclass
class Evidence:
    log_seqs: list[int]  # the store's whole log, as read from it in seq order
    stored: dict[str, list[Stored]]  # per run, its events as the API lists them
    acknowledged: set[str]
    keys_sent: set[str]
    final: dict[str, FinalRun]
    live_owners: set[str]
    tally: list[Line]
    tally_nodes: set[str]  # node ids whose executions the tally records
    deaths: dict[int, int]  # pid -> CLOCK_MONOTONIC ns taken just before its SIGKILL
    receipts: list[Receipt]
    # (run, command) -> how many were acknowledged: pause, resume (answers too), cancel, execute
    acked: Counter[tuple[str, str]] = field(default_factory=Counter)
    # CLOCK_MONOTONIC ns and wall-clock minus monotonic, at the soak's start and end: the
    # tally's times are put on the log's clock by interpolating between the two.
    clock: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (1, 0))


@dataclass
class Report:
    violations: list[JSON] = field(default_factory=list)
    figures: Counter[str] = field(default_factory=Counter)

    def add(self, kind: str, **detail: Any) -> None:
        self.violations.append({"kind": kind, **detail})


def digest(event: JSON) -> str:
    text = json.dumps(event, sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def summarize(event: JSON) -> Stored:
    run = event.get("run")
    node = event.get("nodeState")
    gen = None
    if isinstance(run, dict):
        gen = int((run.get("input") or {}).get("gen", 0))
    return Stored(
        seq=int(event["seq"]),
        digest=digest(event),
        type=str(event["type"]),
        gen=gen,
        node_id=node.get("node_id") if isinstance(node, dict) else None,
        node_status=node.get("status") if isinstance(node, dict) else None,
        status=run.get("status") if isinstance(run, dict) else None,
        at_ns=int(datetime.fromisoformat(event["timestamp"]).timestamp() * 1e9)
        if "timestamp" in event
        else 0,
    )


def parse_tally(text: str) -> list[Line]:
    lines = []
    for raw in text.splitlines():
        kind, run_id, node_id, gen, pid, ns = raw.split()
        lines.append(Line(kind, run_id, node_id, int(gen), int(pid), int(ns)))
    return lines


def fresh_starts(events: list[Stored]) -> list[int]:
    """When each fresh start after the first began: a run event going to `pending` from
    `cancelled` (an execute of a cancelled run starts from scratch; of a failed one it does not).
    For the soak's own runs this is where their input's gen moves on; a sub-workflow's child
    is started afresh by its parent without a new input."""
    starts, previous = [], None
    for event in events:
        if event.status is None:
            continue
        if event.status == "pending" and previous == "cancelled":
            starts.append(event.at_ns)
        previous = event.status
    return starts


def in_fresh_starts(evidence: Evidence) -> list[Line]:
    """The tally with each line's `gen` replaced by the index of its run's fresh start (by the
    log), the line's time put on the log's clock."""
    (mono0, off0), (mono1, off1) = evidence.clock
    starts = {run_id: fresh_starts(events) for run_id, events in evidence.stored.items()}

    def wall(ns: int) -> int:
        share = (ns - mono0) / (mono1 - mono0) if mono1 != mono0 else 0.0
        return ns + off0 + int(share * (off1 - off0))

    made = []
    of_start: dict[tuple[str, str, int], int] = {}  # an outcome is of its start's fresh start
    for line in sorted(evidence.tally, key=lambda line: line.ns):
        key = (line.run_id, line.node_id, line.pid)
        if line.kind == "start" or key not in of_start:
            of_start[key] = bisect.bisect_right(starts.get(line.run_id, []), wall(line.ns))
        made.append(replace(line, gen=of_start[key]))
    return made


def check(evidence: Evidence) -> Report:
    report = Report()
    evidence = replace(evidence, tally=in_fresh_starts(evidence))
    _log(evidence, report)
    _runs(evidence, report)
    _executions(evidence, report)
    _completions_in_log(evidence, report)
    _commands(evidence, report)
    _clients(evidence, report)
    return report


def _log(evidence: Evidence, report: Report) -> None:
    seqs = evidence.log_seqs
    report.figures["events_checked"] = len(seqs)
    for kind, seq in _sequence_faults(seqs, 0):
        report.add(f"log_{kind}", seq=seq)
    in_log = set(seqs)
    for run_id, events in evidence.stored.items():
        previous = 0
        for event in events:
            if event.seq <= previous:
                report.add("run_log_out_of_order", run_id=run_id, seq=event.seq)
            if event.seq not in in_log:
                report.add("run_event_not_in_log", run_id=run_id, seq=event.seq)
            previous = event.seq


def _sequence_faults(seqs: list[int], after: int) -> list[tuple[str, int]]:
    """Where `seqs` is not after+1, after+2, ...: (gap, first missing) or (duplicate, seq)."""
    faults = []
    expected = after + 1
    for seq in seqs:
        if seq < expected:
            faults.append(("duplicate", seq))
            continue
        if seq > expected:
            faults.append(("gap", expected))
        expected = seq + 1
    return faults


def _runs(evidence: Evidence, report: Report) -> None:
    for run_id in sorted(evidence.acknowledged - evidence.final.keys()):
        report.add("acknowledged_run_missing", run_id=run_id)
    for run_id, run in evidence.final.items():
        if run.key not in evidence.keys_sent:
            report.add("unknown_run", run_id=run_id)
        if run.child_gen is not None and run.child_gen != run.gen:
            report.add(
                "sub_workflow_result_from_an_old_input",
                run_id=run_id,
                gen=run.gen,
                child_gen=run.child_gen,
            )
        if run.status == "running" and run.owner not in evidence.live_owners:
            report.add("running_without_owner", run_id=run_id, owner=run.owner)
        elif run.status not in TERMINAL:
            report.add("run_not_finished", run_id=run_id, status=run.status)
        report.figures[f"final_{run.status}"] += 1


@dataclass
class _Execution:
    run_id: str
    node_id: str
    gen: int
    pid: int
    start: int
    close: int | None = None
    outcome: str | None = None  # end | fail | cancel | killed


def executions(lines: list[Line], deaths: dict[int, int], report: Report) -> list[_Execution]:
    """Pair each start with its outcome in the same process; a process killed closes what it
    left open at its kill."""
    made: list[_Execution] = []
    open_: dict[tuple[str, str, int, int], _Execution] = {}
    for line in sorted(lines, key=lambda line: line.ns):
        key = (line.run_id, line.node_id, line.gen, line.pid)
        if line.kind == "start":
            if key in open_:
                report.add(
                    "node_running_twice_in_one_process",
                    run_id=line.run_id,
                    node_id=line.node_id,
                    pid=line.pid,
                )
            open_[key] = _Execution(line.run_id, line.node_id, line.gen, line.pid, line.ns)
            made.append(open_[key])
            continue
        execution = open_.pop(key, None)
        if execution is None:
            report.add("outcome_without_start", line=str(line))
            continue
        execution.close, execution.outcome = line.ns, line.kind
    for execution in open_.values():
        if execution.pid in deaths:
            execution.close, execution.outcome = deaths[execution.pid], "killed"
        else:
            report.add(
                "execution_never_ended",
                run_id=execution.run_id,
                node_id=execution.node_id,
                pid=execution.pid,
            )
    return made


def _executions(evidence: Evidence, report: Report) -> None:
    made = executions(evidence.tally, evidence.deaths, report)
    report.figures["executions_checked"] = len(made)
    by_node: dict[tuple[str, str, int], list[_Execution]] = defaultdict(list)
    by_run: dict[str, list[_Execution]] = defaultdict(list)
    for execution in made:
        by_node[(execution.run_id, execution.node_id, execution.gen)].append(execution)
        by_run[execution.run_id].append(execution)
    for (run_id, node_id, gen), runs in by_node.items():
        ended = [e for e in runs if e.outcome == "end"]
        for done in ended:
            assert done.close is not None
            later = [e for e in runs if e.start > done.close]
            if not later:
                continue
            death = evidence.deaths.get(done.pid)
            if death is not None and 0 <= death - done.close <= COMMIT_WINDOW_NS:
                report.figures["reruns_after_kill_before_commit"] += 1
                continue
            report.add(
                "completed_node_ran_again",
                run_id=run_id,
                node_id=node_id,
                gen=gen,
                first_pid=done.pid,
                again_pid=later[0].pid,
            )
        report.figures["reruns_of_killed_nodes"] += sum(
            1 for e in runs if e.outcome == "killed" and any(o.start > e.start for o in runs)
        )
    for run_id, runs in by_run.items():
        _overlaps(run_id, runs, report)


def _overlaps(run_id: str, runs: list[_Execution], report: Report) -> None:
    ordered = sorted(runs, key=lambda e: e.start)
    for i, first in enumerate(ordered):
        for second in ordered[i + 1 :]:
            if first.close is None or second.start >= first.close:
                continue  # `ordered` by start: no later one overlaps `first` if this does not
            if first.pid == second.pid:
                continue  # parallel branches of one execution (a node twice: reported above)
            overlap = min(first.close, second.close or first.close) - second.start
            if first.outcome == "cancel" and overlap <= CANCEL_GRACE_NS:
                report.figures["tolerated_cancel_overlaps"] += 1
                continue
            report.add(
                "run_executed_by_two_processes",
                run_id=run_id,
                pids=[first.pid, second.pid],
                overlap_ms=round(overlap / 1e6, 1),
            )


def _completions_in_log(evidence: Evidence, report: Report) -> None:
    """Within one fresh start of a run, each node is recorded completed at most once, and never
    recorded running again after that."""
    ended = {(line.run_id, line.node_id, line.gen) for line in evidence.tally if line.kind == "end"}
    for run_id, events in evidence.stored.items():
        gen, previous = 0, None
        completed: set[tuple[str, int]] = set()
        for event in events:
            if event.status is not None:
                if event.status == "pending" and previous == "cancelled":
                    gen += 1
                previous = event.status
            if event.node_id is None:
                continue
            key = (event.node_id, gen)
            detail = {"run_id": run_id, "node_id": event.node_id, "gen": gen, "seq": event.seq}
            if key in completed and event.node_status == "running":
                report.add("node_running_again_after_completed_in_log", **detail)
            if event.node_status != "completed":
                continue
            if key in completed:
                report.add("node_completed_twice_in_log", **detail)
            completed.add(key)
            if event.node_id in evidence.tally_nodes and (run_id, *key) not in ended:
                report.add("completed_without_ending", **detail)


def _moves(event: Stored) -> str | None:
    """The command an event of a run can record (a pause is also an approval asking)."""
    if event.type == "workflow.run.updated" and event.status == "pending":
        return "execute"
    return {
        "workflow.run.paused": "pause",
        "workflow.run.resumed": "resume",
        "workflow.run.cancelled": "cancel",
    }.get(event.type)


def _commands(evidence: Evidence, report: Report) -> None:
    """Every acknowledged command is in the log: a run has at least as many events of each kind
    of move as commands of that kind were acknowledged for it."""
    in_log: Counter[tuple[str, str]] = Counter()
    for run_id, events in evidence.stored.items():
        for event in events:
            move = _moves(event)
            if move is not None:
                in_log[(run_id, move)] += 1
    report.figures["commands_checked"] = sum(evidence.acked.values())
    for (run_id, command), count in sorted(evidence.acked.items()):
        if in_log[(run_id, command)] < count:
            report.add(
                "acknowledged_command_not_in_log",
                run_id=run_id,
                command=command,
                acknowledged=count,
                in_log=in_log[(run_id, command)],
            )


def _clients(evidence: Evidence, report: Report) -> None:
    stored_digest = {e.seq: e.digest for events in evidence.stored.values() for e in events}
    per_run = {run_id: [e.seq for e in events] for run_id, events in evidence.stored.items()}
    last = evidence.log_seqs[-1] if evidence.log_seqs else 0
    delivered: set[int] = set()
    for receipt in evidence.receipts:
        report.figures["frames_checked"] += len(receipt.frames)
        for text in receipt.odd:
            report.add("odd_frame", client=receipt.name, frame=text[:200])
        for seq, run_id, got in receipt.frames:
            delivered.add(seq)
            want = stored_digest.get(seq)
            if run_id is not None and want is not None and want != got:
                report.add("frame_differs_from_store", client=receipt.name, seq=seq)
        if receipt.kind == "watcher":
            seqs = [seq for seq, _, _ in receipt.frames]
            for kind, seq in _sequence_faults(seqs, receipt.start_after):
                report.add(f"watcher_{kind}", client=receipt.name, seq=seq)
            if (seqs[-1] if seqs else receipt.start_after) < last:
                report.add("watcher_behind", client=receipt.name, last_seen=seqs[-1:], log=last)
            continue
        got_by_run: dict[str, list[int]] = defaultdict(list)
        for seq, run_id, _ in receipt.frames:
            if run_id is not None:
                got_by_run[run_id].append(seq)
        for run_id, seqs in got_by_run.items():
            if seqs != per_run.get(run_id):
                report.add(
                    "follower_differs_from_run_log",
                    client=receipt.name,
                    run_id=run_id,
                    got=len(seqs),
                    stored=len(per_run.get(run_id, [])),
                )
    for seq in sorted(set(evidence.log_seqs) - delivered)[:50]:
        report.add("never_delivered", seq=seq)
    for seq in sorted(delivered - set(evidence.log_seqs))[:50]:
        report.add("delivered_not_stored", seq=seq)
