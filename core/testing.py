"""Test a node type without a daemon: run its ``execute`` once and look at what it did.

    from core.testing import run_node

    async def test_reverse() -> None:
        result = await run_node(Reverse(), input={"word": "abc"})
        assert result.output == {"reversed": "cba"}
        assert result.progress == [(0.5, "halfway")]

The node gets a real :class:`~core.nodes.NodeContext`, its config is checked against its
``config_schema`` first (as the daemon does when a graph is saved), and its output is checked
as the daemon checks it. Nothing here needs pytest; any async test runner will do.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import structlog
from jsonschema import Draft202012Validator
from structlog.testing import CapturingLogger

from core.nodes import JSON, NodeContext, NodeType
from core.runner import NodeFailure
from core.validation import FORMATS

__all__ = ["InvalidConfig", "NodeRun", "run_node"]

_NO_ANSWER: Any = object()


class InvalidConfig(ValueError):
    """The config does not match the node type's ``config_schema``: the daemon would refuse
    to save a graph with it. ``problems`` lists ``(json_pointer, message)`` pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{at or '/'}: {message}" for at, message in problems))
        self.problems = problems


class _Interrupted(Exception):
    def __init__(self, prompt: Any) -> None:
        super().__init__("the node asked for input")
        self.prompt = prompt


@dataclass(frozen=True, slots=True)
class NodeRun:
    """What one ``execute`` did.

    :ivar output: the JSON object returned (None if it raised, or paused for input).
    :ivar progress: every ``report_progress`` call, as ``(fraction, message)``.
    :ivar data: what it wrote with ``set_data`` (merged into the run's ``data`` on success).
    :ivar error: the exception it raised, or None. ``retryable`` tells whether node ``retry``
        would try it again.
    :ivar prompt: what it passed to ``ctx.interrupt`` when no ``resume`` value was given.
    :ivar logs: every ``ctx.log`` call, as ``(level, event, fields)``.
    """

    output: JSON | None
    progress: list[tuple[float, str | None]] = field(default_factory=list)
    data: JSON = field(default_factory=dict)
    error: BaseException | None = None
    prompt: Any = None
    logs: list[tuple[str, str, JSON]] = field(default_factory=list)

    @property
    def paused(self) -> bool:
        return self.output is None and self.error is None

    @property
    def retryable(self) -> bool:
        return self.error is not None and bool(getattr(self.error, "retryable", True))


@dataclass(slots=True)
class _TestContext(NodeContext):
    """A real NodeContext whose ``interrupt`` answers from the test instead of a paused run."""

    resume: Any = _NO_ANSWER

    def interrupt(self, prompt: Any) -> Any:
        if self.resume is _NO_ANSWER:
            raise _Interrupted(prompt)
        return self.resume


async def run_node(
    node_type: NodeType,
    config: JSON | None = None,
    input: Any = None,
    *,
    outputs: JSON | None = None,
    data: JSON | None = None,
    resume: Any = _NO_ANSWER,
    attempt: int = 1,
    timeout_s: float = 300.0,
    run_id: str = "run-1",
    project_id: str = "project-1",
    node_id: str = "node-1",
) -> NodeRun:
    """Run ``node_type.execute`` once, as the daemon would run it in a graph.

    :param config: the node's ``config`` (default ``{}``); checked against ``config_schema``,
        raising :class:`InvalidConfig` where the daemon would refuse the graph.
    :param input: the run's input; ``outputs`` and ``data`` the rest of the run state.
    :param resume: the answer ``ctx.interrupt`` returns (a resumed run); without it, a node
        that interrupts ends ``paused`` with its ``prompt``.
    :param attempt: ``ctx.attempt`` (1 for the first try; higher for a retry).
    :param timeout_s: the node's timeout; past it, ``error`` is the daemon's timeout error.
    :return: a :class:`NodeRun`. An exception from ``execute`` is in ``error``, not raised.
    """
    config = _json_copy(config or {})
    _check_config(node_type, config)
    state = _json_copy({"input": input, "outputs": outputs or {}, "data": data or {}})
    progress: list[tuple[float, str | None]] = []
    capture = CapturingLogger()
    log = structlog.wrap_logger(
        capture, processors=[], wrapper_class=structlog.BoundLogger, context_class=dict
    )
    ctx = _TestContext(
        run_id=run_id,
        project_id=project_id,
        node_id=node_id,
        attempt=attempt,
        log=log,
        _on_progress=lambda fraction, message: progress.append((fraction, message)),
        resume=resume,
    )
    output: JSON | None = None
    error: BaseException | None = None
    prompt: Any = None
    try:
        async with asyncio.timeout(timeout_s) as deadline:
            output = _checked(node_type, await node_type.execute(ctx, config, state))
    except _Interrupted as interrupted:
        prompt = interrupted.prompt
    except TimeoutError as exc:
        expired = deadline.expired()
        error = NodeFailure(f"node {node_id!r} timed out after {timeout_s:g}s") if expired else exc
    except Exception as exc:
        error = exc
    logs = [(c.method_name, str(c.kwargs.pop("event", "")), c.kwargs) for c in capture.calls]
    return NodeRun(
        output=output,
        progress=progress,
        data=dict(ctx.data_updates) if error is None and prompt is None else {},
        error=error,
        prompt=prompt,
        logs=logs,
    )


def _check_config(node_type: NodeType, config: JSON) -> None:
    validator = Draft202012Validator(node_type.config_schema, format_checker=FORMATS)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise InvalidConfig(
            [("/" + "/".join(str(p) for p in e.absolute_path), e.message) for e in errors]
        )


def _checked(node_type: NodeType, output: Any) -> JSON:
    if not isinstance(output, dict):
        raise NodeFailure(
            f"node type {node_type.name!r} returned {type(output).__name__}, not a JSON object",
            retryable=False,
        )
    try:
        json.dumps(output)
    except (TypeError, ValueError) as exc:
        raise NodeFailure(
            f"node type {node_type.name!r} returned an output that is not JSON: {exc}",
            retryable=False,
        ) from exc
    return output


def _json_copy(value: Any) -> Any:
    """What the node gets in the daemon: the value as it comes back from JSON."""
    return json.loads(json.dumps(value))
