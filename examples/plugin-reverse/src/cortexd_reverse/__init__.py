"""A cortexd plugin providing the `reverse` node type. It needs nothing but pluggy."""

from __future__ import annotations

from typing import Any

import pluggy

hookimpl = pluggy.HookimplMarker("cortexd")

__version__ = "0.1.0"


class MissingInput(KeyError):
    """The run input has no such field: trying again cannot help, so `retry` does not."""

    retryable = False


class Reverse:
    name = "reverse"
    title = "Reverse a string"
    description = "Reverses the string in the run input's `field` (default `word`)."
    config_schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "field": {"type": "string", "minLength": 1, "default": "word"},
            "uppercase": {"type": "boolean", "default": False},
        },
        "additionalProperties": False,
    }

    async def execute(
        self, ctx: Any, config: dict[str, Any], state: dict[str, Any]
    ) -> dict[str, Any]:
        field = config.get("field", "word")
        run_input = state["input"] or {}
        if field not in run_input:
            raise MissingInput(f"the run input has no {field!r}")
        ctx.log.info("reversing", field=field)
        text = str(run_input[field])
        ctx.report_progress(0.5, "halfway")
        reversed_text = text[::-1].upper() if config.get("uppercase") else text[::-1]
        return {"reversed": reversed_text, "length": len(text)}


@hookimpl
def cortexd_node_types() -> list[object]:
    return [Reverse()]
