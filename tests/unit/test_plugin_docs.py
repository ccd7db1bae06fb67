"""docs/plugins.md keeps up with the code: every hook, built-in node type and context member."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from core import hookspecs
from core.nodes import NodeContext
from core.plugins import build_plugins
from plugins import BUILTINS

DOCS = (Path(__file__).resolve().parents[2] / "docs" / "plugins.md").read_text()
HOOKS = sorted(
    name
    for name, value in vars(hookspecs).items()
    if name.startswith("cortexd_") and hasattr(value, f"{hookspecs.PROJECT}_spec")
)


def section(title: str) -> str:
    """The text under the heading `title`, up to the next heading of the same or a higher level."""
    match = re.search(rf"^(#+) {re.escape(title)}\n", DOCS, re.MULTILINE)
    assert match, f"docs/plugins.md has no section {title!r}"
    level = len(match.group(1))
    rest = DOCS[match.end() :]
    end = re.search(rf"^#{{1,{level}}} ", rest, re.MULTILINE)
    return rest[: end.start()] if end else rest


def test_the_hooks_are_found() -> None:
    assert {"cortexd_node_types", "cortexd_event", "cortexd_startup"} <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_its_reference_section(hook: str) -> None:
    assert re.search(rf"^### {hook}$", DOCS, re.MULTILINE), (
        f"docs/plugins.md lacks a `### {hook}` section for the hook in core/hookspecs.py"
    )
    text = section(hook)
    for part in ("**When:**", "**Arguments:**", "**Returns:**", "@hookimpl"):
        assert part in text, f"the section of {hook} does not say {part}"


def test_every_built_in_node_type_is_described() -> None:
    catalogue = build_plugins(builtins=BUILTINS, use_entry_points=False).node_types
    text = section("Built-in node types")

    missing = [name for name in catalogue if f"`{name}`" not in text]

    assert not missing, f"built-in node types not in docs/plugins.md: {missing}"


def test_every_public_member_of_node_context_is_described() -> None:
    members = [
        name
        for name in [*NodeContext.__dataclass_fields__, *vars(NodeContext)]
        if not name.startswith("_") and name != "data_updates"
    ]
    text = section("NodeContext")

    missing = [name for name in dict.fromkeys(members) if f"`{name}" not in text]

    assert not missing, f"NodeContext members not in docs/plugins.md: {missing}"
