"""The vault answers hostile input with its error envelope, never a 5xx (issue 8)."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator
from urllib.parse import quote

import httpx
import pytest

from payapi.servers.postgres import PgCluster
from payapi.vault.testing import RunningVault, running_vault
from tests.chunked import send_chunked

ACCOUNT = "acme"


@pytest.fixture(scope="module")
async def vault(pg: PgCluster) -> AsyncIterator[tuple[RunningVault, httpx.AsyncClient]]:
    name = "vault_" + uuid.uuid4().hex[:10]
    pg.create_database(name)
    async with (
        running_vault(pg.dsn(name), account=ACCOUNT) as v,
        httpx.AsyncClient(base_url=v.url, trust_env=False) as http,
    ):
        yield v, http
    pg.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _token(v: RunningVault, http: httpx.AsyncClient) -> dict[str, str]:
    resp = await http.post(f"/authn/{ACCOUNT}/admin/authenticate", content=v.admin_api_key)
    assert resp.status_code == 200
    return {"Authorization": f'Token token="{base64.b64encode(resp.content).decode()}"'}


def _envelope(resp: httpx.Response, status: int) -> dict[str, object]:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert {"type", "code", "message", "param", "request_id"} <= set(err)
    assert err["request_id"] == resp.headers["x-request-id"]
    return dict(err)


async def test_the_error_body_is_the_envelope_and_401_says_how_to_authenticate(
    vault: tuple[RunningVault, httpx.AsyncClient],
) -> None:
    _, http = vault
    resp = await http.get(f"/secrets/{ACCOUNT}/variable/x")
    err = _envelope(resp, 401)
    assert err["type"] == "authentication_error" and err["code"] == "unauthorized"
    assert resp.headers["www-authenticate"].startswith("Token ")


async def test_405_lists_the_allowed_methods(
    vault: tuple[RunningVault, httpx.AsyncClient],
) -> None:
    _, http = vault
    resp = await http.delete(f"/authn/{ACCOUNT}/admin/authenticate")
    _envelope(resp, 405)
    assert "POST" in resp.headers["allow"]


@pytest.mark.parametrize("suffix", ["%0A", "%00", "%0D%0A"])
async def test_an_id_with_a_trailing_newline_or_nul_is_refused(
    vault: tuple[RunningVault, httpx.AsyncClient], suffix: str
) -> None:
    v, http = vault
    path = f"/secrets/{ACCOUNT}/variable/{quote('app/db-password', safe='')}{suffix}"
    resp = await http.post(path, content=b"v", headers=await _token(v, http))
    assert resp.status_code in (404, 422), resp.text
    _envelope(resp, resp.status_code)


async def test_a_chunked_body_over_the_limit_is_refused_while_streaming(
    vault: tuple[RunningVault, httpx.AsyncClient],
) -> None:
    v, http = vault
    headers = await _token(v, http)
    status, sent = await asyncio.to_thread(
        send_chunked, v.url, f"/policies/{ACCOUNT}/policy/root", headers, chunks=64
    )
    assert status is not None and status.startswith("413")
    assert sent < 32  # refused at the 5 MiB limit, not after reading all 64 MiB


@pytest.mark.parametrize(
    "policy",
    [
        "[" * 5000,  # a YAML parser that recurses
        '- !variable x\n  annotations: {a: "\\0"}\n',  # a NUL PostgreSQL cannot store
        '- !variable "bad\\0id"\n',
        "\xff\xfe",
    ],
)
async def test_a_hostile_policy_is_refused_not_crashed_on(
    vault: tuple[RunningVault, httpx.AsyncClient], policy: str
) -> None:
    v, http = vault
    resp = await http.post(
        f"/policies/{ACCOUNT}/policy/root",
        content=policy.encode("utf-8", "surrogateescape"),
        headers=await _token(v, http),
    )
    assert resp.status_code < 500, resp.text
    _envelope(resp, resp.status_code)


async def test_a_secret_value_with_nul_bytes_round_trips(
    vault: tuple[RunningVault, httpx.AsyncClient],
) -> None:
    v, http = vault
    headers = await _token(v, http)
    policy = "- !variable nul-test\n"
    assert (await http.post(f"/policies/{ACCOUNT}/policy/root", content=policy,
                            headers=headers)).status_code == 201  # fmt: skip
    path = f"/secrets/{ACCOUNT}/variable/nul-test"
    assert (await http.post(path, content=b"a\x00b", headers=headers)).status_code == 201
    assert (await http.get(path, headers=headers)).content == b"a\x00b"
