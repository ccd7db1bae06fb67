"""TOML file + ``CORTEXD_SECTION__KEY`` environment -> validated, frozen :class:`Settings`."""

import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)
from pydantic_settings.sources.utils import parse_env_vars

from core.domain import ID_PATTERN

ENV_PREFIX = "CORTEXD_"
CONFIG_ENV_VAR = "CORTEXD_CONFIG"


class ConfigError(Exception):
    """Every problem found in the configuration, one ``section.key: reason`` line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


# Lax int/float would turn TOML `true` into 1, and strict mode would refuse the string "9000"
# that every environment override is, so reject booleans explicitly and stay lax otherwise.
def _reject_bool(kind: str) -> BeforeValidator:
    def check(value: object) -> object:
        if isinstance(value, bool):
            raise PydanticCustomError(f"{kind}_type", f"Input should be a valid {kind}")
        return value

    return BeforeValidator(check)


def _text_or_bool(value: object) -> object:
    if not isinstance(value, bool | str):
        raise PydanticCustomError("bool_type", "Input should be a valid boolean")
    return value


Int = Annotated[int, _reject_bool("integer")]
Float = Annotated[float, _reject_bool("number")]
Bool = Annotated[bool, BeforeValidator(_text_or_bool)]
ResolvedPath = Annotated[Path, AfterValidator(lambda path: path.expanduser().resolve())]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: Annotated[Int, Field(ge=1, le=65535)] = 8765
    unix_socket: str | None = None
    # uvloop: libuv's event loop (less CPU per request, event and run); asyncio: the standard
    # library's, should uvloop ever be the suspect.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"

    @field_validator("unix_socket", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value


def _postgres_url(value: str | None) -> str | None:
    """A libpq URI naming a PostgreSQL database, or nothing (SQLite at `path`)."""
    if value is None or value == "":
        return None
    if not re.match(r"^postgres(ql)?://", value):
        raise PydanticCustomError(
            "storage_url",
            "must be a PostgreSQL URI (postgresql://user@host:port/dbname), or unset for SQLite",
        )
    from psycopg.conninfo import conninfo_to_dict  # only where a URL is given

    try:
        conninfo_to_dict(value)
    except Exception as exc:  # psycopg.ProgrammingError: libpq's own words
        message = str(exc).splitlines()[0] if str(exc) else "not a valid libpq URI"
        raise PydanticCustomError("storage_url", "{reason}", {"reason": message}) from None
    return value


class StorageSettings(_Section):
    # load_settings() supplies the environment-aware default; this one serves direct construction.
    path: ResolvedPath = Field(default_factory=lambda: Path("var/cortexd.db").resolve())
    # DESIGN §8: unset is SQLite at `path`; a postgresql:// URI is PostgreSQL.
    url: Annotated[str | None, AfterValidator(_postgres_url)] = None
    pool_size: Annotated[Int, Field(ge=1, le=1000)] = 10
    batch_max: Annotated[Int, Field(ge=1)] = 256
    checkpoint_retention: Annotated[Int, Field(ge=0)] = 1
    # DESIGN §12: finished runs older than this are deleted (0 = kept for ever).
    finished_run_retention_days: Annotated[Float, Field(ge=0)] = 0


class ExecutionSettings(_Section):
    max_concurrent_runs: Annotated[Int, Field(ge=1)] = 8
    recursion_limit: Annotated[Int, Field(ge=1)] = 100
    node_timeout_s: Annotated[Float, Field(gt=0)] = 300
    shutdown_grace_s: Annotated[Float, Field(ge=0)] = 10
    # DESIGN §8: how long a claim holds a run without renewal (renewed every lease_s/4), and
    # how often a run is taken back from a daemon that died or stalled before it fails.
    lease_s: Annotated[Float, Field(ge=1, le=3600)] = 15
    max_recoveries: Annotated[Int, Field(ge=0)] = 3
    # DESIGN §11: a wait longer than this (a delay, a node's ctx.sleep) gives the run's slot
    # back and continues wherever a slot is free when it is over.
    park_after_s: Annotated[Float, Field(ge=0, le=86_400)] = 5


class RunsSettings(_Section):
    # DESIGN §10: how long an Idempotency-Key names its run, and the longest `Prefer: wait=N`.
    idempotency_ttl_s: Annotated[Float, Field(gt=0, le=31_536_000)] = 86_400
    max_wait_s: Annotated[Float, Field(ge=0, le=3600)] = 60


class LoggingSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"

    @field_validator("level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


class PluginsSettings(_Section):
    modules: list[str] = []
    disabled: list[str] = []
    strict: Bool = True
    # Per-plugin `[plugins.<name>]` tables. They sit beside the scalar keys in TOML, so they are
    # gathered here on input and spread back out on dump, keeping the two shapes symmetrical.
    tables: dict[str, dict[str, Any]] = {}

    @model_validator(mode="before")
    @classmethod
    def _gather_tables(cls, data: object) -> object:
        if not isinstance(data, dict):
            return data
        own = {"modules", "disabled", "strict"}
        kept = {k: v for k, v in data.items() if k in own or not isinstance(v, dict)}
        tables = {k: v for k, v in data.items() if k not in own and isinstance(v, dict)}
        return {**kept, "tables": tables}

    @model_serializer(mode="wrap")
    def _spread_tables(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        dumped: dict[str, Any] = handler(self)
        tables = dumped.pop("tables")
        return {**dumped, **tables}

    def options(self, name: str) -> dict[str, Any]:
        """The ``[plugins.<name>]`` table, or an empty dict when the file has none."""
        return dict(self.tables.get(name, {}))


class LimitsSettings(_Section):
    max_request_bytes: Annotated[Int, Field(ge=1)] = 1_048_576
    max_graph_nodes: Annotated[Int, Field(ge=1)] = 500
    max_graph_edges: Annotated[Int, Field(ge=1)] = 2000
    max_node_config_bytes: Annotated[Int, Field(ge=1)] = 65_536
    max_run_input_bytes: Annotated[Int, Field(ge=1)] = 262_144
    max_condition_bytes: Annotated[Int, Field(ge=1)] = 1024
    max_event_bytes: Annotated[Int, Field(ge=1)] = 1_048_576
    max_ws_message_bytes: Annotated[Int, Field(ge=1)] = 65_536
    max_ws_clients: Annotated[Int, Field(ge=1)] = 256
    max_ws_clients_per_token: Annotated[Int, Field(ge=1)] = 32


class EventsSettings(_Section):
    retention_days: Annotated[Float, Field(gt=0)] = 7
    ws_queue_size: Annotated[Int, Field(ge=1)] = 1000
    ws_heartbeat_s: Annotated[Float, Field(gt=0)] = 30


class MetricsSettings(_Section):
    # Whether GET /metrics answers without a token when [auth] is enabled (else: admin only).
    public: Bool = False


def _sha256_hex(value: object) -> object:
    if not isinstance(value, str) or not _HEX_DIGEST.fullmatch(value):
        raise PydanticCustomError(
            "sha256",
            "must be the 64 hex digits of a SHA-256 digest (`cortexd token new` prints one)",
        )
    return value.lower()


def _project_scope(value: object) -> object:
    if value != "*" and not (isinstance(value, str) and _ID.fullmatch(value)):
        raise PydanticCustomError("project", 'must be a project id or "*" (every project)')
    return value


_ID = re.compile(ID_PATTERN)
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
TokenName = Annotated[str, Field(pattern=ID_PATTERN)]


class TokenSettings(_Section):
    """One ``[[auth.tokens]]`` table: the token itself is never stored, only its SHA-256."""

    name: TokenName
    sha256: Annotated[str, BeforeValidator(_sha256_hex)]
    projects: Annotated[list[Annotated[str, BeforeValidator(_project_scope)]], Field(min_length=1)]
    role: Literal["read", "write", "admin"]

    @field_validator("projects")
    @classmethod
    def _star_stands_alone(cls, projects: list[str]) -> list[str]:
        if "*" in projects and len(projects) > 1:
            raise PydanticCustomError("project", '"*" already means every project; list it alone')
        return projects


class AuthSettings(_Section):
    enabled: Bool = False
    tokens: list[TokenSettings] = []

    @field_validator("tokens")
    @classmethod
    def _distinct(cls, tokens: list[TokenSettings]) -> list[TokenSettings]:
        for attribute, what in (("name", "name"), ("sha256", "token (sha256)")):
            values = [getattr(t, attribute) for t in tokens]
            repeated = sorted({v for v in values if values.count(v) > 1})
            if repeated:
                shown = ", ".join(repeated) if attribute == "name" else f"{len(repeated)} of them"
                raise PydanticCustomError(
                    "unique", f"each {what} must be unique; repeated: {shown}"
                )
        return tokens


class Settings(BaseSettings):
    # case_sensitive: TOML keys are case-sensitive below the top level, so the top level is too.
    model_config = SettingsConfigDict(
        extra="forbid",
        frozen=True,
        case_sensitive=True,
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
    )

    server: ServerSettings = Field(default_factory=ServerSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    execution: ExecutionSettings = Field(default_factory=ExecutionSettings)
    runs: RunsSettings = Field(default_factory=RunsSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    plugins: PluginsSettings = Field(default_factory=PluginsSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    events: EventsSettings = Field(default_factory=EventsSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only load_settings() may read the environment; a bare Settings() is the pure defaults.
        return (init_settings,)


class _MappingEnvSource(EnvSettingsSource):
    """The env layer read from a given mapping instead of ``os.environ``."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._mapping = env
        super().__init__(Settings, case_sensitive=False)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._mapping, False, self.env_ignore_empty, self.env_parse_none_str)

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        # Plugin tables have no schema to guide decoding, so read their values as JSON when
        # they parse (numbers, booleans, lists), as the same text would read in TOML.
        plugins = data.get("plugins", {})
        for name, table in plugins.items():
            if isinstance(table, dict):
                plugins[name] = {k: _json_or_text(v) for k, v in table.items()}
        return data


def _json_or_text(value: Any) -> Any:
    try:
        return json.loads(value) if isinstance(value, str) else value
    except ValueError:
        return value


def default_storage_path(env: Mapping[str, str]) -> Path:
    """``$STATE_DIRECTORY/cortexd.db`` under systemd (first of its dirs), else ``./var``."""
    state_dirs = env.get("STATE_DIRECTORY", "").split(":")
    base = Path(state_dirs[0]) if state_dirs[0] else Path("var")
    return (base / "cortexd.db").resolve()


def load_settings(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Defaults < TOML file (``path`` or ``$CORTEXD_CONFIG``) < ``CORTEXD_SECTION__KEY`` env."""
    env = os.environ if env is None else env
    if path is None and env.get(CONFIG_ENV_VAR):
        path = env[CONFIG_ENV_VAR]
    problems = _env_problems(env)
    if problems:
        raise ConfigError(problems)
    try:
        env_source = _MappingEnvSource(env)
        env_data = env_source()
    except SettingsError as exc:
        # A whole section given as one variable (CORTEXD_SERVER='{...}') that is not JSON.
        raise ConfigError([f"environment: {exc}: {exc.__cause__}"]) from exc
    sources: list[PydanticBaseSettingsSource] = [env_source]
    if path is not None:
        sources.append(_toml_source(Path(path).expanduser()))
    sources.append(InitSettingsSource(Settings, {"storage": {"path": default_storage_path(env)}}))
    try:
        # _build_sources is BaseSettings' documented hook for pre-built sources; mypy only sees
        # the field-derived __init__ that pydantic's dataclass_transform describes.
        return Settings(_build_sources=(tuple(sources), {}))  # type: ignore[call-arg]
    except ValidationError as exc:
        raise ConfigError([_describe(err, env_data) for err in exc.errors()]) from exc


def _toml_source(path: Path) -> TomlConfigSettingsSource:
    # pydantic-settings skips a missing file silently and reports syntax errors without the
    # file name; a file the operator named must exist and its errors must say where they are.
    if not path.exists():
        raise ConfigError([f"config file {path}: not found"])
    if not path.is_file():
        raise ConfigError([f"config file {path}: not a regular file"])
    try:
        return TomlConfigSettingsSource(Settings, toml_file=path)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
        raise ConfigError([f"config file {path}: {exc}"]) from exc


def _env_problems(env: Mapping[str, str]) -> list[str]:
    """Problems pydantic-settings would ignore (a mistyped section) or report without naming
    the variable (a list that is not JSON)."""
    problems = []
    for name in sorted(env):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or "__" not in upper:
            continue
        section, _, key = upper.removeprefix(ENV_PREFIX).lower().partition("__")
        model = Settings.model_fields.get(section)
        if model is None:
            problems.append(f"{section}: unknown section [env {name}]")
            continue
        field = getattr(model.annotation, "model_fields", {}).get(key)
        if field is not None and get_origin(field.annotation) is list:
            try:
                json.loads(env[name])
            except ValueError as exc:
                problems.append(f"{section}.{key}: not valid JSON ({exc}) [env {name}]")
    return problems


def _describe(error: Mapping[str, Any], env_data: Mapping[str, Any]) -> str:
    loc = tuple(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        is_table = len(loc) == 1 and isinstance(error["input"], dict)
        reason = "unknown section" if is_table else "unknown key"
    else:
        reason = f"{error['msg']} (got {error['input']!r})"
    line = f"{'.'.join(loc)}: {reason}"
    if _contains(env_data, loc):
        line += f" [env {ENV_PREFIX}{'__'.join(loc).upper()}]"
    return line


def _contains(data: Any, loc: tuple[str, ...]) -> bool:
    for part in loc:
        if not isinstance(data, Mapping) or part not in data:
            return False
        data = data[part]
    return True


# Plugin options whose values are credentials (a webhook's `secret`, an `api_key`, ...).
_SECRET_OPTION = re.compile(r"secret|password|passwd|token|api_?key|credential", re.IGNORECASE)
REDACTED = "[redacted]"


def settings_summary(settings: Settings, *, redact: bool = True) -> dict[str, Any]:
    """The effective configuration as JSON-ready data, shaped like the TOML file.

    Plugin options that hold credentials are shown as ``[redacted]`` unless ``redact`` is
    false (the reload compares real values). Token hashes stay: they are not secrets."""
    summary: dict[str, Any] = settings.model_dump(mode="json")
    if redact and settings.storage.url:
        from adapters.postgres.db import redact as redact_url

        summary["storage"]["url"] = redact_url(settings.storage.url)
    if redact:
        for name, table in summary["plugins"].items():
            if isinstance(table, dict):
                summary["plugins"][name] = {
                    key: REDACTED if _SECRET_OPTION.search(key) else value
                    for key, value in table.items()
                }
    return summary
