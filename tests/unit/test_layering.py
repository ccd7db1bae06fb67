"""The dependency rule (DESIGN §1): core depends on nothing of ours; plugins not on adapters.

Each source file is parsed with `ast`; a violation names the file, the line and what it uses.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE_FORBIDDEN = frozenset({"adapters", "plugins", "aiohttp", "aiosqlite"})
PLUGINS_FORBIDDEN = frozenset({"adapters"})


def _resolve(node: ast.ImportFrom, package: str) -> str:
    """The absolute module an (optionally relative) `from ... import` names."""
    if node.level == 0:
        return node.module or ""
    parts = package.split(".")
    base = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
    return ".".join([*base, node.module] if node.module else base)


class _Checker(ast.NodeVisitor):
    def __init__(self, filename: str, package: str, forbidden: frozenset[str], core: bool) -> None:
        self.filename = filename
        self.package = package
        self.forbidden = forbidden
        self.core = core
        self.os_names: set[str] = set()  # local names bound to the os module
        self.structlog_names: set[str] = set()
        self.found: list[str] = []

    def _report(self, node: ast.AST, what: str) -> None:
        self.found.append(f"{self.filename}:{getattr(node, 'lineno', '?')} {what}")

    def _check_module(self, node: ast.AST, module: str) -> None:
        if module.split(".")[0] in self.forbidden:
            self._report(node, f"imports {module}")

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._check_module(node, alias.name)
            bound = alias.asname or alias.name.split(".")[0]
            if alias.name == "os" or alias.name.startswith("os."):
                self.os_names.add(bound)
            if alias.name == "structlog":
                self.structlog_names.add(bound)
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = _resolve(node, self.package)
        if module.split(".")[0] in self.forbidden:
            self._report(node, f"imports {module}")
        elif not module:  # `from .. import adapters`: the names are the modules
            for alias in node.names:
                self._check_module(node, alias.name)
        for alias in node.names:
            if self.core and module == "os" and alias.name in {"environ", "getenv", "environb"}:
                self._report(node, f"imports os.{alias.name}")
            if self.core and module == "structlog" and alias.name.startswith("configure"):
                self._report(node, f"imports structlog.{alias.name}")
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if self.core and isinstance(node.value, ast.Name):
            owner, attr = node.value.id, node.attr
            if owner in self.os_names and attr in {"environ", "getenv", "environb"}:
                self._report(node, f"reads os.{attr}")
            if owner in self.structlog_names and attr.startswith("configure"):
                self._report(node, f"calls structlog.{attr}")
        self.generic_visit(node)


def violations(
    source: str, filename: str, package: str, forbidden: frozenset[str], *, core: bool
) -> list[str]:
    checker = _Checker(filename, package, forbidden, core)
    checker.visit(ast.parse(source, filename=filename))
    return checker.found


def python_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _check_file(path: Path, forbidden: frozenset[str], *, core: bool) -> list[str]:
    relative = path.relative_to(ROOT)
    package = ".".join(relative.parent.parts)
    return violations(path.read_text(), str(relative), package, forbidden, core=core)


CORE_FILES = python_files("core")
PLUGIN_FILES = python_files("plugins")


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in paths]


def test_the_packages_are_found() -> None:
    assert {"states.py", "compiler.py", "engine.py"} <= {p.name for p in CORE_FILES}
    assert PLUGIN_FILES


@pytest.mark.parametrize("path", CORE_FILES, ids=_ids(CORE_FILES))
def test_core_depends_on_nothing_outside_core(path: Path) -> None:
    found = _check_file(path, CORE_FORBIDDEN, core=True)

    assert not found, "core must not depend on adapters, plugins or I/O:\n" + "\n".join(found)


@pytest.mark.parametrize("path", PLUGIN_FILES, ids=_ids(PLUGIN_FILES))
def test_plugins_do_not_import_adapters(path: Path) -> None:
    found = _check_file(path, PLUGINS_FORBIDDEN, core=False)

    assert not found, "plugins must not import adapters:\n" + "\n".join(found)


# -- the checker itself: each rule is caught, and legitimate code is not -------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import aiohttp", "imports aiohttp"),
        ("import aiohttp.web", "imports aiohttp.web"),
        ("from aiohttp import web", "imports aiohttp"),
        ("import aiosqlite as db", "imports aiosqlite"),
        ("from adapters.http import app", "imports adapters.http"),
        ("import plugins.basic", "imports plugins.basic"),
        ("from plugins import basic", "imports plugins"),
        ("from ..adapters import sqlite", "imports adapters"),
        ("from .. import plugins", "imports plugins"),
        ("import structlog\nstructlog.configure(processors=[])", "calls structlog.configure"),
        ("import structlog as sl\nsl.configure_once()", "calls structlog.configure_once"),
        ("from structlog import configure", "imports structlog.configure"),
        ("import os\nx = os.environ['HOME']", "reads os.environ"),
        ("import os\nx = os.environ.get('HOME')", "reads os.environ"),
        ("import os as system\nx = system.getenv('HOME')", "reads os.getenv"),
        ("from os import environ", "imports os.environ"),
        ("def f():\n    import aiohttp", "imports aiohttp"),
    ],
)
def test_checker_catches(source: str, expected: str) -> None:
    found = violations(source, "core/x.py", "core", CORE_FORBIDDEN, core=True)

    assert found
    assert found[0].startswith("core/x.py:")
    assert found[0].endswith(expected)


@pytest.mark.parametrize(
    "source",
    [
        "import structlog\nlog = structlog.get_logger()",
        "import os\np = os.path.join('a', 'b')",
        "from core import domain",
        "from . import domain",
        "from .domain import Run",
        "import aiohttp_retry",
        "import langgraph.graph",
        "adapters = 1\nplugins = adapters",
    ],
)
def test_checker_allows(source: str) -> None:
    assert violations(source, "core/x.py", "core", CORE_FORBIDDEN, core=True) == []


def test_the_plugins_rule_is_only_about_adapters() -> None:
    source = "import os\nimport pluggy\nx = os.environ\nfrom adapters import daemon"

    found = violations(source, "plugins/x.py", "plugins", PLUGINS_FORBIDDEN, core=False)

    assert found == ["plugins/x.py:4 imports adapters"]
