"""What only PostgreSQL has: daemons coming up together on an empty database, a URL that
cannot connect, a password kept out of what is shown. (Everything the stores share runs on both
in the suites that set ON_BOTH_STORES, and in test_several_daemons.py.)"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from adapters.postgres import db as pg_db
from tests.support.process import CORTEXD, DaemonProcess, free_port
from tests.support.stores import run_sql

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def cortexd(command: str, config: Path) -> subprocess.CompletedProcess[str]:
    """`cortexd COMMAND --config CONFIG`, run to its end in the config's directory."""
    return subprocess.run(
        [str(CORTEXD), command, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=config.parent,
    )


def test_four_daemons_started_at_once_on_an_empty_database_all_come_up(
    tmp_path: Path, postgres_url: str
) -> None:
    made = []
    for n in range(4):
        workdir = tmp_path / f"d{n}"
        workdir.mkdir()
        made.append(DaemonProcess(workdir, storage={"url": postgres_url}, logging={}))
    try:
        for daemon in made:
            daemon.spawn()  # all four race for the empty database's migrations
        for daemon in made:
            daemon.wait_ready()
        instances = {daemon.request("GET", "/readyz")[1]["instance"] for daemon in made}
        assert len(instances) == 4
        storage = {"url": postgres_url}
        applied = run_sql(storage, "SELECT version FROM schema_migrations ORDER BY version")
        assert applied == [(version,) for version, _, _ in pg_db.migrations()]  # each once
        assert {i for (i,) in run_sql(storage, "SELECT id FROM instances")} == instances
    finally:
        for daemon in made:
            daemon.stop()


def test_a_url_that_cannot_connect_is_a_clear_start_up_error_without_the_password(
    tmp_path: Path,
) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql://cortexd:s3cret-word@127.0.0.1:{port}/cortexd"
    config = tmp_path / "cortexd.toml"
    config.write_text(f'[server]\nport = {free_port()}\n[storage]\nurl = "{url}"\n')
    done = cortexd("serve", config)
    assert done.returncode == 1, done.stderr
    assert f"cannot connect to PostgreSQL at 127.0.0.1:{port}/cortexd" in done.stderr
    assert "s3cret-word" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


def test_check_config_shows_the_url_with_its_password_redacted(tmp_path: Path) -> None:
    config = tmp_path / "cortexd.toml"
    config.write_text('[storage]\nurl = "postgresql://cortexd:s3cret-word@db:5432/cortexd"\n')
    done = cortexd("check-config", config)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)["storage"]["url"]
    assert shown == "postgresql://cortexd:***@db:5432/cortexd"
    assert "s3cret-word" not in done.stdout


def test_a_url_that_is_not_postgresql_is_refused_by_the_configuration(tmp_path: Path) -> None:
    config = tmp_path / "cortexd.toml"
    config.write_text('[storage]\nurl = "mysql://db/cortexd"\n')
    done = cortexd("check-config", config)
    assert done.returncode == 2
    assert "storage.url" in done.stderr
    assert "PostgreSQL URI" in done.stderr
