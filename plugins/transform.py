"""Built-in `transform`: JMESPath expressions over the run state, into the output and `data`."""

from __future__ import annotations

from typing import Any

import jmespath
import pluggy

hookimpl = pluggy.HookimplMarker("cortexd")
JSON = dict[str, Any]
_EXPRESSION: JSON = {"type": "string", "format": "jmespath", "maxLength": 4096}


class Transform:
    name = "transform"
    title = "Transform"
    description = (
        "Evaluates JMESPath expressions on the run state {input, outputs, data}: `output` maps "
        "keys of this node's output, `data` maps keys written to the run's shared `data`."
    )
    config_schema: JSON = {
        "type": "object",
        "properties": {
            "output": {"type": "object", "additionalProperties": _EXPRESSION},
            "data": {"type": "object", "additionalProperties": _EXPRESSION},
        },
        "additionalProperties": False,
    }

    async def execute(self, ctx: Any, config: JSON, state: JSON) -> JSON:
        for key, expression in config.get("data", {}).items():
            ctx.set_data(key, jmespath.search(expression, state))
        return {key: jmespath.search(expr, state) for key, expr in config.get("output", {}).items()}


@hookimpl
def cortexd_node_types() -> list[object]:
    return [Transform()]
