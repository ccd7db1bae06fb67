"""JMESPath expressions a graph may hold: checked when the graph is saved, so none that is
invalid, or that could take the daemon's time or memory, ever reaches a run.

JMESPath has no loops, so what an expression costs is its input's size times how much it can
multiply that input: each multiselect (``[a, b]``, ``{a: x, b: y}``) holds its branches side by
side, and an expression that feeds one into another (a pipe, a projection, a sub-expression)
multiplies their sizes. ``[@, @][] | [@, @][] | ...`` doubles its input at every step. That
factor, and the nesting depth (the parser and the interpreter recurse), are bounded here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError

MAX_DEPTH = 32
MAX_GROWTH = 64
_SIDE_BY_SIDE = frozenset({"multi_select_list", "multi_select_dict"})


class ExpressionRejected(ValueError):
    """The expression is invalid, or too costly to evaluate; the message says which."""


def check_expression(expression: str) -> None:
    """Raise :class:`ExpressionRejected` unless ``expression`` is valid and cheap enough."""
    try:
        parsed = jmespath.compile(expression).parsed
    except JMESPathError as exc:
        raise ExpressionRejected(f"invalid JMESPath: {exc}") from None
    except RecursionError:
        raise ExpressionRejected(f"nested more than {MAX_DEPTH} levels deep") from None
    depth, growth = _measure(parsed)
    if depth > MAX_DEPTH:
        raise ExpressionRejected(f"nested {depth} levels deep; at most {MAX_DEPTH}")
    if growth > MAX_GROWTH:
        raise ExpressionRejected(
            f"could multiply its input up to {growth} times; at most {MAX_GROWTH}"
        )


def _measure(root: Mapping[str, Any]) -> tuple[int, int]:
    """(depth, growth) of a parsed expression, without recursion (the tree may be deep)."""
    depth = 0
    growth: dict[int, int] = {}
    # Post-order: a node is visited again, once its children are measured, to combine them.
    stack: list[tuple[Mapping[str, Any], int, bool]] = [(root, 1, False)]
    while stack:
        node, level, children_done = stack.pop()
        children = [c for c in node.get("children", []) if isinstance(c, dict)]
        if not children_done:
            depth = max(depth, level)
            stack.append((node, level, True))
            stack.extend((child, level + 1, False) for child in children)
            continue
        sizes = [growth.pop(id(child)) for child in children]
        if node["type"] in _SIDE_BY_SIDE:
            size = sum(sizes)
        else:
            size = 1
            for part in sizes:
                size = min(size * part, MAX_GROWTH + 1)  # beyond the bound, the count is moot
        growth[id(node)] = min(max(size, 1), MAX_GROWTH + 1)
    return depth, growth[id(root)]
