"""A third-party plugin package, pip-installed into a fresh environment, runs in the real daemon.

How the environment is made, and why:
- A new venv in tmp_path, into which cortexd and then examples/plugin-reverse are pip-installed,
  exactly as a user does. Installing the plugin into the dev venv instead would leave it there
  for every later test and for the developer; ``--system-site-packages`` would show the base
  interpreter's packages, not the dev venv's, so cortexd's dependencies would be missing anyway.
- cortexd is installed from a copy of this tree (its dependencies resolved from the package
  index, about 20 s on the project's machines, a few seconds with pip's cache warm): pip builds
  in the source tree, and a copy keeps the work tree free of build/ and egg-info, while testing
  the built package with its package data (the SQL migrations), not the checkout.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.process import DaemonProcess

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "plugin-reverse"
CORTEXD_SOURCES = ("pyproject.toml", "README.md", "core", "adapters", "plugins")
P = "/api/projects/acme/workflows"
INSTALL_TIMEOUT_S = 600


def copy_tree(sources: Path, names: tuple[str, ...] | None, target: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "build", "*.egg-info")
    target.mkdir(parents=True)
    for name in names or tuple(p.name for p in sources.iterdir()):
        if name in ("build", "__pycache__") or name.endswith(".egg-info"):
            continue
        path = sources / name
        if path.is_dir():
            shutil.copytree(path, target / name, ignore=ignore)
        else:
            shutil.copy2(path, target / name)
    return target


def pip_install(venv: Path, package: Path) -> None:
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(package)],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, f"pip install {package.name} failed:\n{result.stderr}"


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with cortexd and the example plugin installed; its `cortexd` script."""
    base = tmp_path_factory.mktemp("plugin-env")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip_install(venv, copy_tree(ROOT, CORTEXD_SOURCES, base / "src" / "cortexd"))
    pip_install(venv, copy_tree(EXAMPLE, None, base / "src" / "plugin-reverse"))
    return venv / "bin" / "cortexd"


@pytest.fixture
def daemon(plugin_env: Path, tmp_path: Path) -> Any:
    process = DaemonProcess(tmp_path, executable=plugin_env)
    process.start()
    try:
        yield process
    finally:
        process.stop()


def wait_for_run(daemon: DaemonProcess, run_id: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, run = daemon.request("GET", f"{P}/runs/{run_id}")
        assert status == 200, run
        if run["status"] in ("completed", "failed", "cancelled"):
            return dict(run)
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not finish within {timeout}s:\n{daemon.log()}")


def test_the_installed_plugin_is_listed_and_its_node_type_runs(daemon: DaemonProcess) -> None:
    status, node_types = daemon.request("GET", "/api/node-types")
    assert status == 200
    reverse = next(t for t in node_types if t["name"] == "reverse")
    assert reverse["title"] == "Reverse a string"
    assert reverse["config_schema"]["properties"]["field"]["type"] == "string"

    status, plugins = daemon.request("GET", "/api/plugins")
    assert status == 200
    listed = next(p for p in plugins if p["name"] == "reverse")
    assert listed["source"] == "entrypoint"
    assert listed["version"] == "0.1.0"
    assert listed["node_types"] == ["reverse"]

    graph = {
        "id": "rev",
        "name": "Reverse",
        "nodes": [{"id": "rev", "type": "reverse", "config": {"field": "word"}}],
        "edges": [],
    }
    assert daemon.request("POST", f"{P}/graphs", graph)[0] == 201
    status, run = daemon.request(
        "POST", f"{P}/runs", {"workflow_id": "rev", "input": {"word": "stressed"}}
    )
    assert status == 201, run

    finished = wait_for_run(daemon, run["id"])

    assert finished["status"] == "completed", finished
    assert finished["output"]["outputs"]["rev"] == {"reversed": "desserts", "length": 8}


def test_a_config_against_the_plugins_schema_is_refused(daemon: DaemonProcess) -> None:
    graph = {
        "id": "bad",
        "name": "Bad",
        "nodes": [{"id": "rev", "type": "reverse", "config": {"field": 3}}],
        "edges": [],
    }

    status, body = daemon.request("POST", f"{P}/graphs", graph)

    assert status == 422, body


def test_the_plugin_was_installed_only_into_the_fresh_environment(plugin_env: Path) -> None:
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.distribution("cortexd-reverse")
