"""Schemathesis against the three services of the session's lab, every check enabled
(issue 8): server errors, answers that do not match the document (status, headers,
content type, body), valid requests refused, invalid ones accepted, auth not enforced,
405 without Allow, … Each service is fuzzed with real credentials:

- EAPI: a client of its own (headers for /authenticate, a bearer token elsewhere);
- SAPI: the service token, read from the vault as the admin;
- the vault: a user ``fuzzer`` that owns only the policy branch ``fuzz`` (never the
  admin: a fuzzer holding the admin's token would replace the root policy and rotate
  the platform's keys under the other scenario tests).

The schemas are built from the code at import (no server needed); a module fixture
points each at the lab and hands it credentials. Bounded (``max_examples`` per
operation, no deadline) so that the file runs in about a minute; the stateful runs
follow the documents' links (create a payment, then read it).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from pydantic import SecretStr
from schemathesis import Case
from schemathesis.schemas import BaseSchema

from payapi.core.settings import load_settings, read_secret_file
from payapi.eapi import openapi as eapi_openapi
from payapi.lab.platform import ACCOUNT, ADMIN_LOGIN
from payapi.sapi import openapi as sapi_openapi
from payapi.vault import openapi as vault_openapi
from payapi.vault.client import VaultClient
from tests.scenarios.conftest import LabHandle

pytestmark = pytest.mark.slow

# Bounded to keep `make test` in its 15-minute budget (a deeper run: raise these).
FUZZ = settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
STATEFUL = settings(
    max_examples=6,
    stateful_step_count=4,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)

Headers = Callable[[str, str], dict[str, str]]
# The credentials of each schema's cases, per (method, path template): set by the
# fixtures, since the lab exists only at run time. Schemathesis asks for credentials
# already while it collects, so cases carry a placeholder, resolved just before the call.
CREDENTIALS: dict[str, Headers] = {}
PLACEHOLDER = "credentials-of-the-fuzz-fixture"


def _schema(name: str, doc: dict[str, Any], names: Callable[[str], list[str]]) -> BaseSchema:
    """``names(path)``: the credential headers an operation is sent with."""
    schema = schemathesis.openapi.from_dict(doc)

    @schema.auth(cache_by_key=lambda case, ctx: ctx.operation.path)
    class _Credentials:
        def get(self, case: Case, ctx: Any) -> list[str]:
            return names(ctx.operation.path)

        def set(self, case: Case, data: list[str], ctx: Any) -> None:
            case.headers = {**(case.headers or {}), **dict.fromkeys(data, PLACEHOLDER)}

    return schema


def _authorization(path: str) -> list[str]:
    return ["Authorization"]


BASE_URLS: dict[str, str] = {}


def _resolve(name: str, case: Case) -> None:
    """The real credentials in place of the placeholders (only those: a header the
    fuzzer removed or spoiled on purpose stays as it is)."""
    real = CREDENTIALS[name](case.method.upper(), case.operation.path)
    for header, value in list((case.headers or {}).items()):
        if value == PLACEHOLDER:
            case.headers[header] = real[header]


def _call(name: str, case: Case) -> None:
    _resolve(name, case)
    case.call_and_validate(base_url=BASE_URLS[name])


def _point(name: str, base_url: str, headers: Headers) -> Iterator[None]:
    BASE_URLS[name] = base_url
    CREDENTIALS[name] = headers
    yield
    CREDENTIALS.pop(name, None)


def _stateful(name: str, schema: BaseSchema) -> None:
    class Machine(schema.as_state_machine()):  # type: ignore[misc]
        def before_call(self, case: Case) -> None:
            _resolve(name, case)

        def get_call_kwargs(self, case: Case) -> dict[str, Any]:
            return {"base_url": BASE_URLS[name]}

    Machine.run(settings=STATEFUL)


# -- EAPI ------------------------------------------------------------------------------

# The revoke operation revokes the token it is sent with: fuzzed with a fresh token per
# case (test_eapi_revoke), so the other operations keep theirs.


def _eapi_headers(path: str) -> list[str]:
    return (
        ["X-Client-ID", "X-Client-Secret"] if path == "/api/v1/authenticate" else ["Authorization"]
    )


eapi = _schema("eapi", eapi_openapi.document(), _eapi_headers)
eapi_main = eapi.exclude(path="/api/v1/revoke")
eapi_revoke = _schema("eapi-revoke", eapi_openapi.document(), _authorization).include(
    path="/api/v1/revoke"
)


@pytest.fixture(scope="module")
def eapi_lab(lab: LabHandle) -> Iterator[None]:
    client = lab.create_client("openapi-fuzz")
    with lab.http() as http:
        resp = http.post("/api/v1/authenticate", headers=client.headers)
        resp.raise_for_status()
    bearer = {"Authorization": f"Bearer {resp.json()['access_token']}"}

    def headers(method: str, path: str) -> dict[str, str]:
        return client.headers if path == "/api/v1/authenticate" else bearer

    def fresh_token(method: str, path: str) -> dict[str, str]:
        with lab.http() as http:
            resp = http.post("/api/v1/authenticate", headers=client.headers)
        return {"Authorization": f"Bearer {resp.json()['access_token']}"}

    BASE_URLS["eapi-revoke"] = lab.status["eapi"]
    CREDENTIALS["eapi-revoke"] = fresh_token
    yield from _point("eapi", lab.status["eapi"], headers)


@eapi_main.parametrize()
@FUZZ
def test_eapi(case: Case, eapi_lab: None) -> None:
    _call("eapi", case)


@eapi_revoke.parametrize()
@settings(max_examples=10, deadline=None)
def test_eapi_revoke(case: Case, eapi_lab: None) -> None:
    _call("eapi-revoke", case)


def test_eapi_stateful(eapi_lab: None) -> None:
    _stateful("eapi", eapi_main)


# -- SAPI ------------------------------------------------------------------------------

sapi = _schema("sapi", sapi_openapi.document(), _authorization)
# Fewer cases than elsewhere: SAPI answers a wrong service token only after re-reading
# the vault (at most once a second, by design: payapi.sapi.auth), and the auth checks
# send one with nearly every case.
SAPI_FUZZ = settings(FUZZ, max_examples=3)


def _admin(lab: LabHandle) -> VaultClient:
    config = load_settings(lab.config)
    key = read_secret_file(config.vault.admin_api_key_file, "vault admin API key")
    return VaultClient(lab.status["vault"]["url"], ACCOUNT, ADMIN_LOGIN, key)


@pytest.fixture(scope="module")
def sapi_lab(lab: LabHandle) -> Iterator[None]:
    token_id = load_settings(lab.config).sapi.service_token_id

    async def read() -> SecretStr:
        async with _admin(lab) as admin:
            return await admin.get_secret(token_id)

    bearer = {"Authorization": f"Bearer {asyncio.run(read()).get_secret_value()}"}
    yield from _point("sapi", lab.status["sapi"], lambda method, path: bearer)


@sapi.parametrize()
@SAPI_FUZZ
def test_sapi(case: Case, sapi_lab: None) -> None:
    _call("sapi", case)


def test_sapi_stateful(sapi_lab: None) -> None:
    _stateful("sapi", sapi)


# -- the vault -------------------------------------------------------------------------

vault = _schema("vault", vault_openapi.document(), _authorization)
# Every case in the lab's account: elsewhere the fuzzer's token is worth nothing.
vault.config.update(parameters={"account": ACCOUNT})

FUZZ_POLICY = """
- !user fuzzer
- !policy
  id: fuzz
  owner: !user fuzzer
  body:
    - !variable one
    - !host robot
"""


@pytest.fixture(scope="module")
def vault_lab(lab: LabHandle) -> Iterator[None]:
    url = lab.status["vault"]["url"]

    async def setup() -> tuple[str, bytes]:
        async with _admin(lab) as admin:
            loaded = await admin.load_policy("root", FUZZ_POLICY, "POST")
            key = loaded["created_roles"].get(f"{ACCOUNT}:user:fuzzer", {}).get("api_key")
            if key is None:  # loaded before on this lab: take a new key
                key = (await admin.rotate_api_key("user:fuzzer")).get_secret_value()
        async with VaultClient(url, ACCOUNT, "fuzzer", SecretStr(key)) as fuzzer:
            await fuzzer.set_secret("fuzz/one", "a value")
            return key, await fuzzer.authenticate()

    api_key, token = asyncio.run(setup())
    conjur = {"Authorization": f'Token token="{base64.b64encode(token).decode()}"'}
    basic = {"Authorization": "Basic " + base64.b64encode(f"fuzzer:{api_key}".encode()).decode()}

    def headers(method: str, path: str) -> dict[str, str]:
        # Basic only to log in. Rotating with the token is refused for one's own key
        # (Conjur's rule), so the fuzzer's key, and so its login, keep working.
        return basic if path == "/authn/{account}/login" else conjur

    yield from _point("vault", url, headers)


@vault.parametrize()
@FUZZ
def test_vault(case: Case, vault_lab: None) -> None:
    _call("vault", case)


def test_the_platform_still_works_after_the_fuzzing(lab: LabHandle) -> None:
    client = lab.create_client("after-fuzz")
    with lab.http() as http:
        resp = http.post(
            "/api/v1/payments",
            json={"amount": "1.00", "currency": "EUR", "reference": "after-fuzz"},
            headers=client.headers,
        )
    assert resp.status_code == 201, resp.text
    with httpx.Client(base_url=lab.lab.url("sapi"), trust_env=False) as http:
        assert http.get("/api/internal-health").json()["status"] == "ok"
