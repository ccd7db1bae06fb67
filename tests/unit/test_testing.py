"""core.testing.run_node: what a plugin author gets from one run of a node type."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from core.testing import InvalidConfig, run_node
from plugins.approval import Approval
from plugins.transform import Transform

JSON = dict[str, Any]


class Greet:
    name = "greet"
    title = "Greet"
    description = "says hello, in two steps"
    config_schema: JSON = {
        "type": "object",
        "properties": {"greeting": {"type": "string"}},
        "additionalProperties": False,
    }

    async def execute(self, ctx: Any, config: JSON, state: JSON) -> JSON:
        ctx.log.info("greeting", who=state["input"]["name"])
        ctx.report_progress(0.5, "looked up the name")
        ctx.set_data("greeted", state["input"]["name"])
        ctx.report_progress(2)  # clamped to 1.0
        text = f"{config.get('greeting', 'hello')}, {state['input']['name']}"
        return {"text": text, "attempt": ctx.attempt, "node": ctx.node_id, "seen": state["data"]}


class Broken:
    name = "broken"
    title = "Broken"
    description = "fails in the ways plugins do"
    config_schema: JSON = {"type": "object"}

    async def execute(self, ctx: Any, config: JSON, state: JSON) -> Any:
        if config.get("permanent"):
            error = ValueError("the input can never work")
            error.retryable = False  # type: ignore[attr-defined]
            raise error
        if config.get("hang"):
            await asyncio.Event().wait()
        if config.get("not_an_object"):
            return ["a", "list"]
        raise ConnectionError("the service is down")


async def test_output_progress_data_and_logs_are_reported() -> None:
    result = await run_node(
        Greet(),
        {"greeting": "hi"},
        {"name": "Ada"},
        data={"before": 1},
        attempt=2,
        node_id="hello",
    )

    assert result.error is None
    assert result.output == {
        "text": "hi, Ada",
        "attempt": 2,
        "node": "hello",
        "seen": {"before": 1},
    }
    assert result.progress == [(0.5, "looked up the name"), (1.0, None)]
    assert result.data == {"greeted": "Ada"}
    assert result.logs == [("info", "greeting", {"who": "Ada"})]


async def test_an_exception_is_returned_with_whether_retry_would_retry_it() -> None:
    transient = await run_node(Broken())
    permanent = await run_node(Broken(), {"permanent": True})

    assert transient.output is None
    assert isinstance(transient.error, ConnectionError)
    assert transient.retryable
    assert str(permanent.error) == "the input can never work"
    assert not permanent.retryable


async def test_an_output_that_is_not_a_json_object_is_an_error_as_in_the_daemon() -> None:
    result = await run_node(Broken(), {"not_an_object": True})

    assert str(result.error) == "node type 'broken' returned list, not a JSON object"
    assert not result.retryable


async def test_a_node_past_its_timeout_fails_as_in_the_daemon() -> None:
    result = await run_node(Broken(), {"hang": True}, timeout_s=0.05, node_id="n1")

    assert str(result.error) == "node 'n1' timed out after 0.05s"


async def test_a_config_the_daemon_would_refuse_raises() -> None:
    with pytest.raises(InvalidConfig) as refused:
        await run_node(Greet(), {"greeting": 3, "extra": True})

    assert refused.value.problems == [
        ("/", "Additional properties are not allowed ('extra' was unexpected)"),
        ("/greeting", "3 is not of type 'string'"),
    ]


async def test_jmespath_formats_are_checked_and_transform_runs() -> None:
    with pytest.raises(InvalidConfig, match="/output/x"):
        await run_node(Transform(), {"output": {"x": "input.["}})

    result = await run_node(
        Transform(),
        {"output": {"word": "input.word"}, "data": {"length": "length(input.word)"}},
        {"word": "abc"},
    )

    assert result.output == {"word": "abc"}
    assert result.data == {"length": 3}


async def test_a_node_asking_for_input_pauses_and_a_resume_value_answers_it() -> None:
    config = {"prompt": "Ship it?", "choices": ["yes", "no"]}

    paused = await run_node(Approval(), config)
    answered = await run_node(Approval(), config, resume="yes")
    refused = await run_node(Approval(), config, resume="maybe")

    assert paused.paused
    assert paused.prompt == {"prompt": "Ship it?", "choices": ["yes", "no"]}
    assert answered.output == {"value": "yes"}
    assert isinstance(refused.error, ValueError)


async def test_the_node_gets_copies_it_cannot_change_for_the_caller() -> None:
    class Mutate:
        name = "mutate"
        title = "Mutate"
        description = "changes its arguments"
        config_schema: JSON = {"type": "object"}

        async def execute(self, ctx: Any, config: JSON, state: JSON) -> JSON:
            config["added"] = True
            state["input"]["added"] = True
            return {}

    config: JSON = {}
    run_input: JSON = {"x": 1}

    await run_node(Mutate(), config, run_input)

    assert config == {}
    assert run_input == {"x": 1}
