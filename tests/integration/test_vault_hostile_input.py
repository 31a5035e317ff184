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


@pytest.mark.parametrize(
    ("path", "allow"),
    [
        (f"/secrets/{ACCOUNT}/variable/x", "GET, POST"),
        (f"/policies/{ACCOUNT}/policy/root", "PATCH, POST, PUT"),
        (f"/resources/{ACCOUNT}/variable/x", "GET, HEAD"),
    ],
)
async def test_405_lists_every_method_of_the_path(
    vault: tuple[RunningVault, httpx.AsyncClient], path: str, allow: str
) -> None:
    # Found by schemathesis: Allow listed only the first route's method (GET or POST).
    _, http = vault
    resp = await http.options(path)
    _envelope(resp, 405)
    assert resp.headers["allow"] == allow


@pytest.mark.parametrize(
    "path", [f"/resources/{ACCOUNT}", f"/resources/{ACCOUNT}/nokind", "/resources/bad%00acct"]
)
async def test_listing_resources_needs_a_token_even_for_an_unknown_kind(
    vault: tuple[RunningVault, httpx.AsyncClient], path: str
) -> None:
    # Found by schemathesis: an unknown kind answered 200 [] to anybody.
    _, http = vault
    _envelope(await http.get(path, params={"kind": "nokind"}), 401)


@pytest.mark.parametrize(
    ("method", "path", "params", "status"),
    [
        # Each was a 500: PostgreSQL cannot compare text holding a NUL.
        ("GET", "/secrets", {"variable_ids": f"{ACCOUNT}:variable:a\x00b"}, 404),
        ("GET", "/secrets", {"variable_ids": "\x04Z,nonsense"}, 404),
        ("GET", f"/resources/{ACCOUNT}", {"search": "a\x00"}, 422),
        ("GET", "/resources/bad%00/variable", {}, 200),
        ("PUT", f"/authn/{ACCOUNT}/api_key", {"role": "host:a\x00"}, 422),
        ("GET", f"/resources/{ACCOUNT}/policy/root", {"check": "true", "privilege": "x\x00"}, 422),
    ],
)
async def test_nul_and_malformed_ids_are_refused_before_the_database(
    vault: tuple[RunningVault, httpx.AsyncClient],
    method: str,
    path: str,
    params: dict[str, str],
    status: int,
) -> None:
    v, http = vault
    resp = await http.request(method, path, params=params, headers=await _token(v, http))
    assert resp.status_code == status, resp.text
    if status >= 400:
        _envelope(resp, status)


async def test_authenticating_with_a_nul_is_401_not_500(
    vault: tuple[RunningVault, httpx.AsyncClient],
) -> None:
    _, http = vault
    _envelope(await http.post(f"/authn/{ACCOUNT}/ad%00min/authenticate", content=b"k"), 401)
    _envelope(await http.post("/authn/ac%00me/admin/authenticate", content=b"k"), 401)
    basic = base64.b64encode(b"admin\x00:key").decode()
    _envelope(
        await http.get(f"/authn/{ACCOUNT}/login", headers={"Authorization": f"Basic {basic}"}),
        401,
    )


@pytest.mark.parametrize("query", ["limit=", "offset=1&offset=", "limit=x", "offset=-1"])
async def test_an_ambiguous_or_empty_integer_parameter_is_422(
    vault: tuple[RunningVault, httpx.AsyncClient], query: str
) -> None:
    # Found by schemathesis: "offset=junk&offset=" was read as no offset (200).
    v, http = vault
    resp = await http.get(f"/resources/{ACCOUNT}?{query}", headers=await _token(v, http))
    _envelope(resp, 422)


async def test_a_repeated_query_parameter_is_422(
    vault: tuple[RunningVault, httpx.AsyncClient],
) -> None:
    v, http = vault
    resp = await http.get(
        f"/resources/{ACCOUNT}?kind=variable&kind=host", headers=await _token(v, http)
    )
    assert "given more than once: kind" in _envelope(resp, 422)["message"]


@pytest.mark.parametrize("query", ["limit=1353355545135181388059694845657088", "offset=2147483648"])
async def test_an_integer_parameter_too_big_for_the_database_is_422(
    vault: tuple[RunningVault, httpx.AsyncClient], query: str
) -> None:
    # Found by schemathesis: the query failed in PostgreSQL (500).
    v, http = vault
    resp = await http.get(f"/resources/{ACCOUNT}?{query}", headers=await _token(v, http))
    _envelope(resp, 422)
