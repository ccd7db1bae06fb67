"""Built-in `subworkflow`: runs another graph of the project as a child run (DESIGN §11).

The child is a run of its own (listed with `?parent_run_id=`, its own events and node states);
this node's output is the child's `output`. While the child runs, the parent gives its slot
back. A failed or cancelled child fails this node with the child's error and id; the node's
retry (or an execute of the parent) executes that child again, from its failure point.
"""

from __future__ import annotations

from typing import Any

import jmespath
import pluggy

hookimpl = pluggy.HookimplMarker("cortexd")
JSON = dict[str, Any]
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"


class Subworkflow:
    name = "subworkflow"
    title = "Sub-workflow"
    description = (
        "Runs the graph `workflow_id` as a child run and outputs the child's output. `input`: "
        "a JMESPath expression on {input, outputs, data} giving the child's input (an object); "
        "default: this run's input."
    )
    config_schema: JSON = {
        "type": "object",
        "properties": {
            "workflow_id": {"type": "string", "pattern": ID_PATTERN},
            "input": {"type": "string", "format": "jmespath", "maxLength": 4096},
        },
        "required": ["workflow_id"],
        "additionalProperties": False,
    }

    async def execute(self, ctx: Any, config: JSON, state: JSON) -> JSON:
        expression = config.get("input")
        child_input = state["input"] if expression is None else jmespath.search(expression, state)
        if child_input is None:
            child_input = {}
        if not isinstance(child_input, dict):
            kind = type(child_input).__name__
            raise TypeError(
                f"the child's input must be an object, not {kind} (from {expression!r})"
            )
        output: JSON = await ctx.run_child(config["workflow_id"], child_input)
        return output


@hookimpl
def cortexd_node_types() -> list[object]:
    return [Subworkflow()]
