"""Reproduction of what the soak found with sub-workflows: a parent run started afresh (execute
of a cancelled run, with a new input) does not get a fresh child. Its subworkflow node finds the
child of its previous start, cancelled, and fails at once; retried, it re-executes that child on
the child's *old* input, and the parent completes with a result computed from an input it no
longer has. Second case: the child had completed before the parent was cancelled (in a later
node); the fresh start with a new input takes the old child's output as it is.

    python bench/soak_repro_subworkflow.py      (prints JSON; exit 1 if reproduced)
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.process import DaemonProcess

P = "/api/projects/repro/workflows"


def settle(daemon: DaemonProcess, run_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, run = daemon.request("GET", f"{P}/runs/{run_id}")
        if run["status"] in ("completed", "failed", "cancelled", "paused"):
            return dict(run)
        time.sleep(0.05)
    raise AssertionError(f"{run_id} did not settle")


def completed_child_then_fresh_start(daemon: DaemonProcess) -> dict[str, Any]:
    _, run = daemon.request("POST", f"{P}/runs", {"workflow_id": "later", "input": {"v": 1}})
    runs = f"{P}/runs/{run['id']}"
    deadline = time.monotonic() + 30
    while True:  # until the child completed and the parent is in its `after` delay
        _, status = daemon.request("GET", f"{runs}/status")
        states = {s["node_id"]: s["status"] for s in status["node_states"]}
        if states.get("after") == "running":
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
    assert daemon.request("POST", f"{runs}/cancel")[0] == 200
    assert daemon.request("POST", f"{runs}/execute", {"input": {"v": 2}})[0] == 200
    done = settle(daemon, run["id"])
    sub = (done.get("output") or {}).get("outputs", {}).get("sub") or {}
    return {
        "parent_input": done["input"],
        "status": done["status"],
        "sub_output_input": sub.get("outputs", {}).get("echo", {}).get("input"),
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        daemon = DaemonProcess(Path(tmp), logging={"level": "warning"})
        daemon.start()
        try:
            child = {
                "id": "child",
                "name": "child",
                "nodes": [
                    {"id": "wait", "type": "delay", "config": {"seconds": 1}},
                    {"id": "echo", "type": "passthrough"},
                ],
                "edges": [{"source": "wait", "target": "echo"}],
            }
            parent = {
                "id": "parent",
                "name": "parent",
                "nodes": [{"id": "sub", "type": "subworkflow", "config": {"workflow_id": "child"}}],
                "edges": [],
            }
            later = {
                "id": "later",
                "name": "later",
                "nodes": [
                    {"id": "sub", "type": "subworkflow", "config": {"workflow_id": "child"}},
                    {"id": "after", "type": "delay", "config": {"seconds": 2}},
                ],
                "edges": [{"source": "sub", "target": "after"}],
            }
            for graph in (child, parent, later):
                assert daemon.request("POST", f"{P}/graphs", graph)[0] == 201
            _, run = daemon.request(
                "POST", f"{P}/runs", {"workflow_id": "parent", "input": {"v": 1}}
            )
            runs = f"{P}/runs/{run['id']}"
            deadline = time.monotonic() + 30
            while not daemon.request("GET", f"{P}/runs?parent_run_id={run['id']}")[1]:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert daemon.request("POST", f"{runs}/cancel")[0] == 200
            status, _ = daemon.request("POST", f"{runs}/execute", {"input": {"v": 2}})
            assert status == 200
            fresh = settle(daemon, run["id"])
            daemon.request("POST", f"{runs}/execute", {})
            retried = settle(daemon, run["id"])
            _, children = daemon.request("GET", f"{P}/runs?parent_run_id={run['id']}")
            second = completed_child_then_fresh_start(daemon)
        finally:
            daemon.stop()
    child_input = children[0]["input"] if children else None
    result = {
        "parent_input": retried["input"],
        "after_the_fresh_start": {"status": fresh["status"], "error": fresh.get("error")},
        "after_execute_again": retried["status"],
        "children": len(children),
        "child_input": child_input,
        "parent_output_of_sub": (retried.get("output") or {}).get("outputs", {}).get("sub"),
        "second_case": second,
        "reproduced": fresh["status"] == "failed"
        or child_input != {"v": 2}
        or second["sub_output_input"] != {"v": 2},
    }
    print(json.dumps(result, indent=2))
    raise SystemExit(1 if result["reproduced"] else 0)


if __name__ == "__main__":
    main()
