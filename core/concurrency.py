"""Per-graph concurrency (DESIGN §11): which group a run belongs to, decided once, when it is
created, from the graph version it pins and its input.

A group is a graph of a project and, with a key, one value of the key on the run's input. At
most `limit` runs of a group are `running` at once (the store counts them when it claims);
every run keeps the limit of the version it was created with, so an edit applies to runs
created after it.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError
from jmespath.parser import ParsedResult

from core.domain import Concurrency

# A longer group name is stored as its digest: a key may select a large part of the input.
MAX_READABLE = 256


@dataclass(frozen=True, slots=True)
class Group:
    key: str  # who shares the limit: the project, the graph and the key's value
    limit: int


def group_of(
    project_id: str, graph_id: str, concurrency: Concurrency | None, run_input: Any
) -> Group | None:
    """The run's group, or None when its graph version sets no concurrency. A key whose value
    is missing, or whose evaluation fails (a function given the wrong type), is `null`: the
    runs without a value share a group of their own."""
    if concurrency is None:
        return None
    parts: list[Any] = [project_id, graph_id]
    if concurrency.key is not None:
        try:
            parts.append(_compiled(concurrency.key).search(run_input))
        except JMESPathError:
            parts.append(None)
    name = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if len(name) > MAX_READABLE:
        name = "sha256:" + hashlib.sha256(name.encode()).hexdigest()
    return Group(name, concurrency.limit)


@functools.lru_cache(maxsize=256)
def _compiled(expression: str) -> ParsedResult:
    return jmespath.compile(expression)
