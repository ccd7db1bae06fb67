"""Built-in `approval`: the run waits for a human, who answers with `resume {"value": ...}`."""

from __future__ import annotations

from typing import Any

import pluggy

hookimpl = pluggy.HookimplMarker("cortexd")
JSON = dict[str, Any]
MAX_ASKS = 20


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
        choices = config.get("choices")
        if choices:
            prompt["choices"] = choices
        value = ctx.interrupt(prompt)
        for _ in range(MAX_ASKS):
            if not choices or value in choices:
                return {"value": value}
            # Asked again rather than failed: a failed run retried would replay the same answer.
            value = ctx.interrupt({**prompt, "error": f"{value!r} is not one of {choices}"})
        raise ValueError(f"no valid answer after {MAX_ASKS} attempts")


@hookimpl
def cortexd_node_types() -> list[object]:
    return [Approval()]
