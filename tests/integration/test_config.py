import json
import re
from pathlib import Path

import pytest

from adapters.config import ConfigError, load_settings, settings_summary

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "cortexd.toml"


@pytest.fixture(autouse=True)
def _cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The default database path is relative to the working directory.
    monkeypatch.chdir(tmp_path)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cortexd.toml"
    path.write_text(text)
    return path


def problems(path: Path | None = None, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(path, env={} if env is None else env)
    return str(excinfo.value)


def test_no_file_gives_the_documented_defaults(tmp_path: Path) -> None:
    settings = load_settings(env={})

    assert (settings.server.host, settings.server.port) == ("127.0.0.1", 8765)
    assert settings.server.unix_socket is None
    assert settings.storage.path == tmp_path.resolve() / "var" / "cortexd.db"
    assert (settings.storage.batch_max, settings.storage.checkpoint_retention) == (256, 1)
    assert settings.execution.max_concurrent_runs == 8
    assert settings.execution.recursion_limit == 100
    assert settings.execution.node_timeout_s == 300
    assert settings.execution.shutdown_grace_s == 10
    assert (settings.logging.level, settings.logging.format) == ("info", "auto")
    assert (settings.plugins.modules, settings.plugins.disabled) == ([], [])
    assert settings.plugins.strict is True
    assert settings.limits.max_request_bytes == 1_048_576
    assert settings.limits.max_graph_nodes == 500
    assert settings.limits.max_graph_edges == 2000
    assert settings.limits.max_node_config_bytes == 65_536
    assert settings.limits.max_run_input_bytes == 262_144
    assert (settings.events.retention_days, settings.events.ws_queue_size) == (7, 1000)
    assert settings.auth.enabled is False


def test_example_file_is_exactly_the_defaults() -> None:
    assert load_settings(EXAMPLE, env={}) == load_settings(env={})


def test_example_file_documents_every_key() -> None:
    text = EXAMPLE.read_text()
    for section, values in settings_summary(load_settings(env={})).items():
        assert f"[{section}]" in text
        for key in values:
            assert re.search(rf"^(# )?{key} = ", text, re.MULTILINE), f"{section}.{key}"


def test_file_values_are_used(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [server]
        host = "0.0.0.0"
        port = 9100
        [storage]
        path = "data/db.sqlite"
        [execution]
        node_timeout_s = 2.5
        [logging]
        level = "DEBUG"
        format = "json"
        [plugins]
        modules = ["my_plugin"]
        """,
    )

    settings = load_settings(path, env={})

    assert (settings.server.host, settings.server.port) == ("0.0.0.0", 9100)
    assert settings.storage.path == tmp_path.resolve() / "data" / "db.sqlite"
    assert settings.execution.node_timeout_s == 2.5
    assert settings.execution.max_concurrent_runs == 8
    assert (settings.logging.level, settings.logging.format) == ("debug", "json")
    assert settings.plugins.modules == ["my_plugin"]


def test_env_overrides_beat_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 9100\nhost = '::1'\n[plugins]\nmodules = ['a']\n")
    env = {
        "CORTEXD_SERVER__PORT": "9000",
        "CORTEXD_EXECUTION__MAX_CONCURRENT_RUNS": "4",
        "CORTEXD_PLUGINS__MODULES": '["x", "y"]',
        "CORTEXD_AUTH__ENABLED": "true",
    }

    settings = load_settings(path, env=env)

    assert settings.server.port == 9000
    assert settings.server.host == "::1"
    assert settings.execution.max_concurrent_runs == 4
    assert settings.plugins.modules == ["x", "y"]
    assert settings.auth.enabled is True


def test_env_none_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CORTEXD_CONFIG", raising=False)
    monkeypatch.setenv("CORTEXD_SERVER__PORT", "9001")

    assert load_settings().server.port == 9001


def test_cortexd_config_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 9200\n")
    other = tmp_path / "other.toml"
    other.write_text("[server]\nport = 9300\n")

    assert load_settings(env={"CORTEXD_CONFIG": str(path)}).server.port == 9200
    assert load_settings(other, env={"CORTEXD_CONFIG": str(path)}).server.port == 9300


def test_a_named_file_that_is_missing_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"

    assert problems(missing) == f"config file {missing}: not found"
    assert problems(env={"CORTEXD_CONFIG": str(missing)}) == f"config file {missing}: not found"


def test_unknown_keys_in_the_file_are_named(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nbogus = 1\n[storage]\npaht = 'x'\n[serverr]\nport = 1\n")

    assert problems(path).splitlines() == [
        "server.bogus: unknown key",
        "storage.paht: unknown key",
        "serverr: unknown section",
    ]


def test_unknown_env_keys_are_named() -> None:
    message = problems(env={"CORTEXD_SERVER__BOGUS": "1", "CORTEXD_TOKEN": "unrelated"})
    assert message == "server.bogus: unknown key [env CORTEXD_SERVER__BOGUS]"

    message = problems(env={"CORTEXD_SERVR__PORT": "9000"})
    assert message == "servr: unknown section [env CORTEXD_SERVR__PORT]"


def test_bad_values_name_section_key_and_reason(tmp_path: Path) -> None:
    path = write(tmp_path, "[execution]\nnode_timeout_s = 0\n[logging]\nlevel = 'loud'\n")

    lines = problems(path, env={"CORTEXD_SERVER__PORT": "abc"}).splitlines()

    assert lines == [
        "server.port: Input should be a valid integer, unable to parse string as an integer"
        " (got 'abc') [env CORTEXD_SERVER__PORT]",
        "execution.node_timeout_s: Input should be greater than 0 (got 0)",
        "logging.level: Input should be 'debug', 'info', 'warning' or 'error' (got 'loud')",
    ]


def test_env_list_that_is_not_json_is_named() -> None:
    message = problems(env={"CORTEXD_PLUGINS__MODULES": "a,b"})

    assert message.startswith("plugins.modules: not valid JSON")
    assert message.endswith("[env CORTEXD_PLUGINS__MODULES]")


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[server]\nport = true", "server.port: Input should be a valid integer (got True)"),
        ("[server]\nport = 70000", "server.port: Input should be less than or equal to 65535"),
        ("[execution]\nshutdown_grace_s = false", "execution.shutdown_grace_s: Input should be"),
        ("[plugins]\nstrict = 1", "plugins.strict: Input should be a valid boolean (got 1)"),
    ],
)
def test_values_of_the_wrong_type_are_rejected(tmp_path: Path, toml: str, expected: str) -> None:
    assert problems(write(tmp_path, toml)).startswith(expected)


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nhost = '127.0.0.1'\nport = \n")

    message = problems(path)

    assert message.startswith(f"config file {path}: ")
    assert "line 3" in message


def test_storage_defaults_to_the_systemd_state_directory(tmp_path: Path) -> None:
    env = {"STATE_DIRECTORY": f"{tmp_path}/state:{tmp_path}/other"}

    assert load_settings(env=env).storage.path == tmp_path.resolve() / "state" / "cortexd.db"


def test_storage_path_in_the_file_beats_the_state_directory(tmp_path: Path) -> None:
    path = write(tmp_path, "[storage]\npath = '/srv/cortexd/db.sqlite'\n")

    settings = load_settings(path, env={"STATE_DIRECTORY": str(tmp_path)})

    assert settings.storage.path == Path("/srv/cortexd/db.sqlite")


def test_plugin_tables_are_options_for_that_plugin(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [plugins]
        modules = ["extra"]
        [plugins.http_request]
        allow_hosts = ["api.example.com"]
        timeout_s = 5
        """,
    )

    settings = load_settings(path, env={"CORTEXD_PLUGINS__WEBHOOK__RETRIES": "3"})

    assert settings.plugins.options("http_request") == {
        "allow_hosts": ["api.example.com"],
        "timeout_s": 5,
    }
    assert settings.plugins.options("webhook") == {"retries": 3}
    assert settings.plugins.options("delay") == {}


def test_unknown_scalar_in_plugins_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "[plugins]\nmodule = ['typo']\n[plugins.delay]\nmax_s = 1\n")

    assert problems(path) == "plugins.module: unknown key"


def test_summary_is_json_shaped_like_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[plugins.http_request]\nallow_hosts = ['a']\n")

    summary = settings_summary(load_settings(path, env={}))

    assert json.loads(json.dumps(summary)) == summary
    assert summary["plugins"]["http_request"] == {"allow_hosts": ["a"]}
    assert summary["storage"]["path"] == str(tmp_path.resolve() / "var" / "cortexd.db")
