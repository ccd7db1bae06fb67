"""Graph validation: every problem found, each with the JSON pointer of where it is."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import SchemaError
from jsonschema.exceptions import ValidationError as JsonSchemaError
from pydantic import BaseModel, ValidationError

from core.domain import END, ID_PATTERN, RESERVED_IDS, START, GraphSpec
from core.errors import Problem, ValidationFailed
from core.expressions import ExpressionRejected, check_expression
from core.nodes import NodeType

_ID = re.compile(ID_PATTERN)

# Node types can mark config strings as JMESPath (`"format": "jmespath"`): a graph with an
# invalid expression is refused when saved, not when it runs.
FORMATS = FormatChecker()


@FORMATS.checks("jmespath", raises=ExpressionRejected)
def _is_jmespath(value: object) -> bool:
    if isinstance(value, str):
        check_expression(value)
    return True


@dataclass(frozen=True, slots=True)
class GraphLimits:
    max_nodes: int = 500
    max_edges: int = 2000
    max_node_config_bytes: int = 65_536
    max_condition_bytes: int = 1024


def pointer(loc: tuple[int | str, ...] | list[int | str]) -> str:
    """A pydantic/jsonschema location as an RFC 6901 JSON pointer."""
    parts = (str(p).replace("~", "~0").replace("/", "~1") for p in loc)
    return "/" + "/".join(parts) if loc else ""


ModelT = TypeVar("ModelT", bound=BaseModel)


def parse_body(model: type[ModelT], data: Any, what: str) -> ModelT:
    """`data` as `model`, validated strictly; ValidationFailed (422) with every problem."""
    if not isinstance(data, dict):
        raise ValidationFailed(f"{what} is a JSON object", [Problem("", "not an object")])
    try:
        return model.model_validate(data, strict=True)
    except ValidationError as exc:
        raise ValidationFailed(f"{what} is not valid", problems_from_pydantic(exc)) from None


def problems_from_pydantic(error: ValidationError, prefix: tuple[str, ...] = ()) -> list[Problem]:
    return [
        Problem(pointer([*prefix, *e["loc"]]), e["msg"])
        for e in error.errors(include_url=False, include_context=False)
    ]


def parse_graph(data: Any) -> tuple[GraphSpec | None, list[Problem]]:
    if not isinstance(data, dict):
        return None, [Problem("", "a graph must be a JSON object")]
    try:
        # Strict: `false` is no number, "1" no integer, whatever lax coercion would accept.
        return GraphSpec.model_validate(data, strict=True), []
    except ValidationError as exc:
        return None, problems_from_pydantic(exc)


def validate_graph(
    spec: GraphSpec, node_types: Mapping[str, NodeType], limits: GraphLimits
) -> list[Problem]:
    problems: list[Problem] = []
    if spec.id is not None and not _ID.match(spec.id):
        problems.append(Problem("/id", f"must match {ID_PATTERN}"))
    if len(spec.nodes) > limits.max_nodes:
        problems.append(Problem("/nodes", f"{len(spec.nodes)} nodes; at most {limits.max_nodes}"))
    if len(spec.edges) > limits.max_edges:
        problems.append(Problem("/edges", f"{len(spec.edges)} edges; at most {limits.max_edges}"))
    if problems:
        return problems  # too large to look into further
    problems += _check_nodes(spec, node_types, limits)
    problems += _check_edges(spec, limits)
    problems += _check_concurrency(spec)
    if not problems:
        problems += _check_cycles(spec)
    return problems


def _check_nodes(
    spec: GraphSpec, node_types: Mapping[str, NodeType], limits: GraphLimits
) -> list[Problem]:
    problems: list[Problem] = []
    seen: set[str] = set()
    for i, node in enumerate(spec.nodes):
        at = f"/nodes/{i}"
        if node.id in RESERVED_IDS or not _ID.match(node.id):
            problems.append(Problem(f"{at}/id", f"{node.id!r} is not a valid node id"))
        elif node.id in seen:
            problems.append(Problem(f"{at}/id", f"duplicate node id {node.id!r}"))
        seen.add(node.id)
        node_type = node_types.get(node.type)
        if node_type is None:
            known = ", ".join(sorted(node_types)) or "none"
            problems.append(Problem(f"{at}/type", f"unknown node type {node.type!r} ({known})"))
            continue
        size = len(json.dumps(node.config))
        if size > limits.max_node_config_bytes:
            problems.append(
                Problem(f"{at}/config", f"{size} bytes; at most {limits.max_node_config_bytes}")
            )
            continue
        problems += _check_config(node.config, node_type.config_schema, f"{at}/config")
    return problems


def _check_config(config: dict[str, Any], schema: dict[str, Any], at: str) -> list[Problem]:
    try:
        validator = Draft202012Validator(schema, format_checker=FORMATS)
        errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    except SchemaError as exc:  # the node type's own schema is broken: not the client's fault
        return [Problem(at, f"the node type's config_schema is invalid: {exc.message}")]
    return [Problem(at + pointer(list(e.absolute_path)), _message(e)) for e in errors]


def _message(error: JsonSchemaError) -> str:
    # A failed format check says why (an expression's cost, say), not only "is not a 'x'".
    if error.validator == "format" and error.cause is not None:
        return str(error.cause)
    return error.message


def _check_edges(spec: GraphSpec, limits: GraphLimits) -> list[Problem]:
    problems: list[Problem] = []
    node_ids = {n.id for n in spec.nodes}
    seen: set[str] = set()
    for i, edge in enumerate(spec.edges):
        at = f"/edges/{i}"
        if edge.id in seen:
            problems.append(Problem(f"{at}/id", f"duplicate edge id {edge.id!r}"))
        seen.add(edge.id)
        if edge.source not in node_ids and edge.source != START:
            problems.append(Problem(f"{at}/source", f"no node {edge.source!r}"))
        if edge.target not in node_ids and edge.target != END:
            problems.append(Problem(f"{at}/target", f"no node {edge.target!r}"))
        if edge.condition is not None:
            size = len(edge.condition.encode())
            if size > limits.max_condition_bytes:
                message = f"{size} bytes; at most {limits.max_condition_bytes}"
                problems.append(Problem(f"{at}/condition", message))
                continue
            try:
                check_expression(edge.condition)
            except ExpressionRejected as exc:
                problems.append(Problem(f"{at}/condition", str(exc)))
    return problems


def _check_concurrency(spec: GraphSpec) -> list[Problem]:
    if spec.concurrency is None or spec.concurrency.key is None:
        return []
    try:
        check_expression(spec.concurrency.key)
    except ExpressionRejected as exc:
        return [Problem("/concurrency/key", str(exc))]
    return []


def _check_cycles(spec: GraphSpec) -> list[Problem]:
    """A cycle must be able to end: one of the edges on it must be conditional (if every edge
    of a cycle is always taken, once entered it never stops, whatever leaves it)."""
    succ: dict[str, list[str]] = defaultdict(list)
    conditional: list[tuple[str, str]] = []
    for edge in spec.edges:
        if edge.target in RESERVED_IDS or edge.source in RESERVED_IDS:
            continue
        succ[edge.source].append(edge.target)
        if edge.condition:
            conditional.append((edge.source, edge.target))
    problems = []
    for component in _strongly_connected(list({n.id for n in spec.nodes}), succ):
        members = set(component)
        cyclic = len(component) > 1 or component[0] in succ[component[0]]
        breakable = any(s in members and t in members for s, t in conditional)
        if cyclic and not breakable:
            names = ", ".join(sorted(component))
            problems.append(Problem("/edges", f"cycle with no conditional exit: {names}"))
    return problems


def _strongly_connected(nodes: list[str], succ: Mapping[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (graphs may be deep enough to overflow recursion)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, child = work.pop()
            if child == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            children = succ.get(node, [])
            if child < len(children):
                work.append((node, child + 1))
                nxt = children[child]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            for nxt in children:
                if nxt in on_stack:
                    low[node] = min(low[node], low[nxt])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
    return components
