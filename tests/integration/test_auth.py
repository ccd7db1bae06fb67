"""Bearer tokens on the real app: who gets in, what each role may do, and tokens reloaded."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from click.testing import CliRunner
from structlog.testing import capture_logs

from adapters.cli import TOKEN_NAME_PATTERN, main
from adapters.config import load_settings
from adapters.http.keys import ACCESS, SOCKETS
from adapters.serve import _reload
from core.domain import ID_PATTERN
from tests.integration.conftest import Api, ApiFactory, linear
from tests.support.process import free_port

P = "/api/projects/acme/workflows"
WS = "/api/projects/acme/ws"
ROOT = Path(__file__).resolve().parents[2]


def token(name: str, secret: str, projects: list[str], role: str) -> dict[str, Any]:
    digest = hashlib.sha256(secret.encode()).hexdigest()
    return {"name": name, "sha256": digest, "projects": projects, "role": role}


READER = "reader-secret-1"
WRITER = "writer-secret-2"
ADMIN = "admin-secret-3"
ELSEWHERE = "elsewhere-secret-4"
TOKENS = [
    token("reader", READER, ["acme"], "read"),
    token("writer", WRITER, ["acme"], "write"),
    token("admin", ADMIN, ["*"], "admin"),
    token("elsewhere", ELSEWHERE, ["other"], "admin"),
]


def auth_env(tokens: list[dict[str, Any]] = TOKENS, **more: str) -> dict[str, str]:
    return {"CORTEXD_AUTH__ENABLED": "true", "CORTEXD_AUTH__TOKENS": json.dumps(tokens), **more}


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def call(
    api: Api, method: str, path: str, secret: str | None = None, body: Any = None
) -> tuple[int, Any, aiohttp.ClientResponse]:
    headers = bearer(secret) if secret is not None else {}
    response = await api.client.request(method, path, json=body, headers=headers)
    data = await response.json(content_type=None) if response.status != 204 else None
    return response.status, data, response


@pytest.fixture
async def api(make_api: ApiFactory) -> Api:
    return await make_api(**auth_env())


async def seed(api: Api) -> str:
    """A graph and a finished run in project acme, made with the admin token; the run id."""
    status, _, _ = await call(api, "POST", f"{P}/graphs", ADMIN, linear("g", "passthrough"))
    assert status == 201
    status, run, _ = await call(api, "POST", f"{P}/runs", ADMIN, {"workflow_id": "g"})
    assert status == 201
    await api.idle()
    run_id: str = run["id"]
    return run_id


# -- who gets in -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"{P}/graphs"),
        ("POST", f"{P}/graphs"),
        ("POST", f"{P}/runs"),
        ("GET", f"{P}/runs/00000000-0000-4000-8000-000000000000/status"),
        ("GET", "/api/node-types"),
        ("GET", "/api/plugins"),
        ("GET", "/metrics"),
        ("GET", "/no/such/endpoint"),
    ],
)
async def test_without_a_token_the_api_is_a_401_problem(api: Api, method: str, path: str) -> None:
    status, body, response = await call(api, method, path)

    assert status == 401
    assert response.content_type == "application/problem+json"
    assert body["detail"] == "this endpoint needs a token: send 'Authorization: Bearer <token>'"
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="cortexd"'


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/openapi.json"])
async def test_health_and_the_api_document_are_open(api: Api, path: str) -> None:
    status, _, _ = await call(api, "GET", path)

    assert status == 200


@pytest.mark.parametrize(
    "authorization",
    ["Bearer not-a-token", f"Bearer {READER}x", f"Bearer {READER[:-1]}", "Bearer  "],
)
async def test_a_wrong_token_is_a_401(api: Api, authorization: str) -> None:
    response = await api.client.get(f"{P}/graphs", headers={"Authorization": authorization})
    body = await response.json(content_type=None)

    assert response.status == 401
    assert body["detail"]
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="cortexd", error=')


async def test_another_scheme_than_bearer_is_a_401(api: Api) -> None:
    response = await api.client.get(f"{P}/graphs", headers={"Authorization": f"Basic {READER}"})
    body = await response.json(content_type=None)

    assert response.status == 401
    assert body["detail"] == "the Authorization header must be 'Bearer <token>'"


async def test_the_scheme_is_case_insensitive(api: Api) -> None:
    response = await api.client.get(f"{P}/graphs", headers={"Authorization": f"bearer {READER}"})

    assert response.status == 200


async def test_a_query_token_is_not_taken_outside_a_websocket(api: Api) -> None:
    status, _, _ = await call(api, "GET", f"{P}/graphs?access_token={ADMIN}")

    assert status == 401


async def test_with_auth_off_no_token_is_needed(make_api: ApiFactory) -> None:
    api = await make_api()

    status, _, _ = await call(api, "GET", "/api/plugins")

    assert status == 200


# -- what each role may do ---------------------------------------------------------------------


async def test_read_may_read_but_not_change(api: Api) -> None:
    run_id = await seed(api)

    for path in [f"{P}/graphs", f"{P}/graphs/g", f"{P}/runs", f"{P}/runs/{run_id}/events"]:
        assert (await call(api, "GET", path, READER))[0] == 200, path
    assert (await call(api, "GET", "/api/node-types", READER))[0] == 200
    status, body, response = await call(api, "POST", f"{P}/graphs", READER, linear("h", "count"))
    assert status == 403
    assert body["detail"] == (
        "token 'reader' has the read role; POST /api/projects/acme/workflows/graphs needs write"
    )
    assert response.headers["WWW-Authenticate"].endswith('error="insufficient_scope"')
    for method, path in [
        ("POST", f"{P}/graphs/validate"),
        ("PUT", f"{P}/graphs/g"),
        ("DELETE", f"{P}/graphs/g"),
        ("POST", f"{P}/runs"),
        ("POST", f"{P}/runs/{run_id}/execute"),
        ("POST", f"{P}/runs/{run_id}/cancel"),
        ("POST", f"{P}/runs/{run_id}/pause"),
        ("POST", f"{P}/runs/{run_id}/resume"),
    ]:
        assert (await call(api, method, path, READER, {}))[0] == 403, (method, path)
    assert (await call(api, "GET", f"{P}/graphs/g", READER))[0] == 200  # nothing changed


async def test_write_may_change_graphs_and_runs_but_not_administer(api: Api) -> None:
    async def as_writer(method: str, path: str, body: Any = None) -> Any:
        status, data, _ = await call(api, method, path, WRITER, body)
        assert status in (200, 201, 204), (method, path, status, data)
        return data

    await as_writer("POST", f"{P}/graphs/validate", linear("v", "count"))
    await as_writer("POST", f"{P}/graphs", linear("f", "fail"))
    await as_writer("POST", f"{P}/graphs", linear("g", "gate"))
    failed = await as_writer("POST", f"{P}/runs", {"workflow_id": "f"})
    await api.idle()
    await as_writer("POST", f"{P}/runs/{failed['id']}/execute", {})
    gated = await as_writer("POST", f"{P}/runs", {"workflow_id": "g"})
    await api.arrived()
    await as_writer("POST", f"{P}/runs/{gated['id']}/pause")
    await as_writer("POST", f"{P}/runs/{gated['id']}/resume", {})
    await as_writer("POST", f"{P}/runs/{gated['id']}/cancel")
    await api.idle()
    await as_writer("PUT", f"{P}/graphs/g", linear("g", "count"))
    await as_writer("DELETE", f"{P}/graphs/g")

    for path in ["/api/plugins", "/metrics"]:
        status, body, _ = await call(api, "GET", path, WRITER)
        assert status == 403, path
        assert body["detail"].endswith("needs admin")


async def test_admin_may_see_plugins_and_metrics(api: Api) -> None:
    status, plugins, _ = await call(api, "GET", "/api/plugins", ADMIN)
    assert status == 200
    assert any(p["name"] == "testkit" for p in plugins)
    response = await api.client.get("/metrics", headers=bearer(ADMIN))
    assert response.status == 200
    assert "cortexd_" in await response.text()


async def test_metrics_can_be_made_public(make_api: ApiFactory) -> None:
    api = await make_api(**auth_env(CORTEXD_METRICS__PUBLIC="true"))

    assert (await api.client.get("/metrics")).status == 200
    assert (await call(api, "GET", "/api/plugins"))[0] == 401


async def test_a_token_is_refused_in_a_project_it_does_not_name(api: Api) -> None:
    await seed(api)

    status, body, _ = await call(api, "GET", f"{P}/graphs/g", ELSEWHERE)

    assert status == 403
    assert body["detail"] == "token 'elsewhere' is not valid for project 'acme'"
    other = "/api/projects/other/workflows"
    assert (await call(api, "GET", f"{other}/graphs", ELSEWHERE))[0] == 200
    assert (await call(api, "GET", f"{other}/graphs", WRITER))[0] == 403
    assert (await call(api, "GET", f"{other}/graphs/g", ADMIN))[0] == 404  # "*": scoping still


# -- WebSocket ---------------------------------------------------------------------------------


async def test_websocket_takes_the_token_from_the_header_or_the_query(api: Api) -> None:
    async with api.client.ws_connect(WS, headers=bearer(READER)) as by_header:
        assert not by_header.closed
    async with api.client.ws_connect(f"{WS}?access_token={READER}&since=0") as by_query:
        await call(api, "POST", f"{P}/graphs", ADMIN, linear("g", "count"))
        message = await asyncio.wait_for(by_query.receive(), 10)
        assert json.loads(message.data)["type"] == "workflow.graph.created"


@pytest.mark.parametrize(
    ("query", "headers", "status"),
    [
        ("", {}, 401),
        ("?access_token=wrong", {}, 401),
        (f"?access_token={ELSEWHERE}", {}, 403),
        ("", {"Authorization": f"Bearer {ELSEWHERE}"}, 403),
    ],
)
async def test_websocket_without_a_valid_token_for_the_project_is_refused(
    api: Api, query: str, headers: dict[str, str], status: int
) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await api.client.ws_connect(WS + query, headers=headers)

    assert refused.value.status == status


# -- reload ------------------------------------------------------------------------------------


def write_config(path: Path, db: Path, tokens: list[dict[str, Any]]) -> None:
    tables = "".join(
        f"[[auth.tokens]]\nname = {json.dumps(t['name'])}\nsha256 = {json.dumps(t['sha256'])}\n"
        f"projects = {json.dumps(t['projects'])}\nrole = {json.dumps(t['role'])}\n"
        for t in tokens
    )
    path.write_text(f"[storage]\npath = {json.dumps(str(db))}\n[auth]\nenabled = true\n{tables}")


async def test_reload_swaps_the_tokens_and_closes_sockets_of_revoked_ones(
    make_api: ApiFactory, tmp_path: Path
) -> None:
    config = tmp_path / "cortexd.toml"
    write_config(config, tmp_path / "cortexd.db", TOKENS[:2])
    settings = load_settings(config, env={})
    api = await make_api(**auth_env(TOKENS[:2]))
    app = api.client.app
    newcomer = "newcomer-secret-5"
    assert (await call(api, "GET", f"{P}/graphs", newcomer))[0] == 401

    async with api.client.ws_connect(WS, headers=bearer(READER)) as revoked:
        write_config(
            config, tmp_path / "cortexd.db", [TOKENS[1], token("new", newcomer, ["*"], "read")]
        )
        settings = await _reload(app, settings, config, {})

        message = await asyncio.wait_for(revoked.receive(), 10)
        assert message.type is WSMsgType.CLOSE
        assert (message.data, message.extra) == (1008, "token revoked")
    assert [t.name for t in settings.auth.tokens] == ["writer", "new"]
    assert (await call(api, "GET", f"{P}/graphs", newcomer))[0] == 200
    assert (await call(api, "GET", f"{P}/graphs", READER))[0] == 401
    assert (await call(api, "GET", f"{P}/graphs", WRITER))[0] == 200
    assert app[SOCKETS].clients == 0
    assert app[ACCESS].enabled


async def test_a_reload_with_a_broken_token_table_keeps_the_tokens(
    make_api: ApiFactory, tmp_path: Path
) -> None:
    config = tmp_path / "cortexd.toml"
    write_config(config, tmp_path / "cortexd.db", TOKENS[:1])
    settings = load_settings(config, env={})
    api = await make_api(**auth_env(TOKENS[:1]))
    broken = token("reader", "x", ["acme"], "read") | {"sha256": "not-hex"}
    write_config(config, tmp_path / "cortexd.db", [broken])

    await _reload(api.client.app, settings, config, {})

    assert (await call(api, "GET", f"{P}/graphs", READER))[0] == 200


# -- cortexd token new -------------------------------------------------------------------------


async def test_token_new_prints_a_token_once_and_a_snippet_that_lets_it_in(
    make_api: ApiFactory,
) -> None:
    result = CliRunner().invoke(
        main, ["token", "new", "--name", "ci", "--project", "acme", "--role", "write"]
    )

    assert result.exit_code == 0, result.output
    secret = re.search(r"^    (\S+)$", result.output, re.MULTILINE)
    assert secret is not None
    snippet = result.output[result.output.index("[[auth.tokens]]") :]
    assert secret.group(1) not in snippet
    [entry] = tomllib.loads(snippet)["auth"]["tokens"]
    assert entry == {
        "name": "ci",
        "sha256": hashlib.sha256(secret.group(1).encode()).hexdigest(),
        "projects": ["acme"],
        "role": "write",
    }
    api = await make_api(**auth_env([entry]))
    assert (await call(api, "POST", f"{P}/graphs", secret.group(1), linear("g", "count")))[0] == 201
    assert (await call(api, "GET", "/api/plugins", secret.group(1)))[0] == 403


def test_token_new_makes_a_new_token_each_time() -> None:
    args = ["token", "new", "--name", "ci", "--project", "*", "--role", "read"]
    first, second = (CliRunner().invoke(main, args).output for _ in range(2))

    assert first != second
    assert 'projects = ["*"]' in first


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--name", "ci", "--project", "acme", "--role", "root"], "'root' is not one of"),
        (["--name", "c i", "--project", "acme", "--role", "read"], "--name"),
        (["--name", "ci", "--project", "../etc", "--role", "read"], "--project"),
        (["--name", "ci", "--project", "*", "--project", "a", "--role", "read"], "alone"),
        (["--name", "ci", "--role", "read"], "--project"),
    ],
)
def test_token_new_refuses_bad_options(args: list[str], complaint: str) -> None:
    result = CliRunner().invoke(main, ["token", "new", *args])

    assert result.exit_code == 2
    assert complaint in result.output


def test_token_new_stays_light() -> None:
    code = (
        "import sys\n"
        "from adapters.cli import main\n"
        "try:\n"
        "    main(['token', 'new', '--name', 'n', '--project', 'p', '--role', 'read'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('pydantic', 'aiohttp', 'langgraph', 'adapters.config', 'core')\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )

    assert done.stderr.strip() == "[]"
    assert "[[auth.tokens]]" in done.stdout


def test_the_cli_checks_names_with_the_id_pattern() -> None:
    assert TOKEN_NAME_PATTERN == ID_PATTERN


# -- secrets stay secret -----------------------------------------------------------------------

WEBHOOK_SECRET = "whsec-do-not-show-me"


async def test_no_endpoint_returns_or_logs_a_secret(
    make_api: ApiFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    webhook = {
        "CORTEXD_PLUGINS__WEBHOOK__URL": f"http://127.0.0.1:{free_port()}/hook",
        "CORTEXD_PLUGINS__WEBHOOK__SECRET": WEBHOOK_SECRET,
        "CORTEXD_PLUGINS__WEBHOOK__MAX_ATTEMPTS": "1",
    }
    with capture_logs() as logs:
        api = await make_api(**auth_env(**webhook))
        run_id = await seed(api)
        answers = []
        for path in [
            "/api/plugins",
            "/api/node-types",
            "/openapi.json",
            "/readyz",
            f"{P}/graphs",
            f"{P}/runs/{run_id}",
            f"{P}/runs/{run_id}/events",
        ]:
            response = await api.client.get(path, headers=bearer(ADMIN))
            answers.append(await response.text())
        await call(api, "GET", f"{P}/graphs", "wrong-" + ADMIN)
        async with api.client.ws_connect(f"{WS}?access_token={READER}"):
            pass

    seen = "\n".join(answers) + repr(logs) + caplog.text
    for secret in (WEBHOOK_SECRET, ADMIN, READER):
        assert secret not in seen


def test_check_config_redacts_plugin_secrets(tmp_path: Path) -> None:
    config = tmp_path / "cortexd.toml"
    config.write_text(
        "[plugins.webhook]\n"
        'url = "http://127.0.0.1:9/hook"\n'
        f'secret = "{WEBHOOK_SECRET}"\n'
        "[plugins.other]\n"
        'api_key = "k-123"\n'
        'region = "eu"\n'
        "[auth]\nenabled = true\n"
        "[[auth.tokens]]\n"
        'name = "ci"\n'
        f'sha256 = "{TOKENS[0]["sha256"]}"\n'
        'projects = ["acme"]\n'
        'role = "read"\n'
    )

    result = CliRunner().invoke(main, ["check-config", "--config", str(config)])

    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert WEBHOOK_SECRET not in result.output
    assert shown["plugins"]["webhook"] == {"url": "http://127.0.0.1:9/hook", "secret": "[redacted]"}
    assert shown["plugins"]["other"] == {"api_key": "[redacted]", "region": "eu"}
    # A hash is no secret (the token cannot be had from it): shown, to match against the file.
    assert shown["auth"]["tokens"][0]["sha256"] == TOKENS[0]["sha256"]
