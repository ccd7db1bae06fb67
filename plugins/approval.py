"""Built-in `approval`: the run waits for a human, who answers with `resume {"value": ...}`."""

from __future__ import annotations

from typing import Any

import pluggy

hookimpl = pluggy.HookimplMarker("cortexd")
JSON = dict[str, Any]


class Approval:
    name = "approval"
    title = "Approval"
    description = (
        "Pauses the run (pause_reason `input_required`, prompt as configured) until "
        '`POST .../resume {"value": ...}`; the value becomes this node\'s output `value`.'
    )
    config_schema: JSON = {
        "type": "object",
        "properties": {
            "prompt": {"type": "string", "maxLength": 4096},
            "choices": {"type": "array", "items": {"type": "string"}, "maxItems": 50},
        },
        "additionalProperties": False,
    }

    async def execute(self, ctx: Any, config: JSON, state: JSON) -> JSON:
        # Everything before interrupt() runs again when the run resumes: nothing here may have
        # a side effect.
        prompt: JSON = {"prompt": config.get("prompt", f"Approve {ctx.node_id}?")}
        if "choices" in config:
            prompt["choices"] = config["choices"]
        value = ctx.interrupt(prompt)
        choices = config.get("choices")
        if choices and value not in choices:
            raise ValueError(f"the answer {value!r} is not one of {choices}")
        return {"value": value}


@hookimpl
def cortexd_node_types() -> list[object]:
    return [Approval()]
