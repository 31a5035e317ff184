"""Conjur's authorization answers, exactly: 200 / 403 / 404 per role and privilege.

Conjur's rule: a resource a role has no privilege on (and does not own) is invisible and
answers 404, as if it did not exist; a visible resource without the needed privilege
answers 403. ``execute`` fetches a secret, ``update`` sets one, ``read`` makes it visible.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from urllib.parse import quote

import asyncpg
import httpx
import pytest

from payapi.servers.postgres import PgCluster
from payapi.vault.testing import RunningVault, running_vault

ACCOUNT = "acme"
POLICY = """
- !policy
  id: payment-system
  body:
  - !host permitted
  - !host outsider
  - !host reader
  - !host writer
  - !host grouped
  - !group consumers
  - !grant {role: !group consumers, member: !host grouped}
  - !variable secret
  - !variable empty
  - !permit
    role: !host permitted
    privileges: [read, execute]
    resources: [!variable secret, !variable empty]
  - !permit {role: !host reader, privilege: read, resource: !variable secret}
  - !permit {role: !host writer, privileges: [read, update], resource: !variable secret}
  - !permit {role: !group consumers, privileges: [read, execute], resource: !variable secret}
  - !permit {role: !host reader, privilege: read, resource: !host permitted}
  - !host deployer
  - !policy apps
  - !permit {role: !host deployer, privileges: [read, create], resource: !policy apps}
"""
SECRET = "payment-system/secret"
EMPTY = "payment-system/empty"


def enc(identifier: str) -> str:
    return quote(identifier, safe="")


class Http:
    """A raw HTTP view of the vault, to assert status codes exactly."""

    def __init__(self, vault: RunningVault, keys: dict[str, str]) -> None:
        self.vault = vault
        self.keys = keys
        self.http = httpx.AsyncClient(base_url=vault.url, trust_env=False)

    async def token(self, login: str) -> dict[str, str]:
        resp = await self.http.post(
            f"/authn/{ACCOUNT}/{enc(login)}/authenticate", content=self.keys[login]
        )
        assert resp.status_code == 200, resp.text
        return {"Authorization": f'Token token="{base64.b64encode(resp.content).decode()}"'}

    async def get_secret(self, login: str, var: str, **params: str) -> httpx.Response:
        return await self.http.get(
            f"/secrets/{ACCOUNT}/variable/{enc(var)}",
            params=params,
            headers=await self.token(login),
        )

    async def set_secret(self, login: str, var: str, value: str) -> httpx.Response:
        return await self.http.post(
            f"/secrets/{ACCOUNT}/variable/{enc(var)}",
            content=value,
            headers=await self.token(login),
        )


@pytest.fixture(scope="module")
async def api(pg: PgCluster) -> AsyncIterator[Http]:
    name = "vault_" + uuid.uuid4().hex[:10]
    pg.create_database(name)
    async with running_vault(pg.dsn(name), account=ACCOUNT) as vault:
        keys = {"admin": vault.admin_api_key}
        h = Http(vault, keys)
        resp = await h.http.post(
            f"/policies/{ACCOUNT}/policy/root", content=POLICY, headers=await h.token("admin")
        )
        assert resp.status_code == 201, resp.text
        for rid, data in resp.json()["created_roles"].items():
            keys["host/" + rid.split(":", 2)[2]] = data["api_key"]
        assert (await h.set_secret("admin", SECRET, "v1")).status_code == 201
        yield h
        await h.http.aclose()
    pg.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def host(name: str) -> str:
    return f"host/payment-system/{name}"


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        ("admin", 200),
        (host("permitted"), 200),
        (host("grouped"), 200),  # through group membership
        (host("reader"), 403),  # visible (read) but no execute
        (host("writer"), 403),  # update does not include execute
        (host("outsider"), 404),  # invisible: as if it did not exist
    ],
)
async def test_fetch(api: Http, who: str, expected: int) -> None:
    resp = await api.get_secret(who, SECRET)
    assert resp.status_code == expected, resp.text
    if expected == 200:
        assert resp.content == b"v1"
        assert resp.headers["content-type"] == "application/octet-stream"
    else:
        assert b"v1" not in resp.content
        if expected == 404:
            assert resp.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        ("admin", 201),
        (host("writer"), 201),
        (host("permitted"), 403),  # read + execute, no update
        (host("reader"), 403),
        (host("outsider"), 404),
    ],
)
async def test_set(api: Http, who: str, expected: int) -> None:
    resp = await api.set_secret(who, SECRET, "v1")  # same value: tests stay independent
    assert resp.status_code == expected, resp.text


async def test_missing_value_missing_variable_and_version(api: Http) -> None:
    assert (await api.get_secret(host("permitted"), EMPTY)).status_code == 404
    assert (await api.get_secret("admin", "payment-system/no-such")).status_code == 404
    assert (await api.get_secret(host("permitted"), SECRET, version="999")).status_code == 404
    assert (await api.get_secret(host("permitted"), SECRET, version="x")).status_code == 422
    # Setting an empty value is refused (Conjur: 422).
    assert (await api.set_secret("admin", SECRET, "")).status_code == 422


async def test_resource_visibility(api: Http) -> None:
    path = f"/resources/{ACCOUNT}/variable/{enc(SECRET)}"
    for who, expected in (
        (host("reader"), 200),
        (host("permitted"), 200),
        (host("outsider"), 404),
    ):
        resp = await api.http.get(path, headers=await api.token(who))
        assert resp.status_code == expected, (who, resp.text)
    listed = await api.http.get(f"/resources/{ACCOUNT}", headers=await api.token(host("outsider")))
    assert listed.status_code == 200
    assert listed.json() == []
    counted = await api.http.get(
        f"/resources/{ACCOUNT}",
        params={"kind": "variable", "count": "true"},
        headers=await api.token(host("permitted")),
    )
    assert counted.json() == {"count": 2}


async def test_privilege_check(api: Http) -> None:
    path = f"/resources/{ACCOUNT}/variable/{enc(SECRET)}"
    headers = await api.token(host("permitted"))
    ok = await api.http.get(path, params={"check": "true", "privilege": "execute"}, headers=headers)
    assert ok.status_code == 204
    no = await api.http.get(path, params={"check": "true", "privilege": "update"}, headers=headers)
    assert no.status_code == 404
    roles = await api.http.get(
        path,
        params={"permitted_roles": "true", "privilege": "execute"},
        headers=await api.token("admin"),
    )
    assert set(roles.json()) >= {
        f"{ACCOUNT}:host:payment-system/permitted",
        f"{ACCOUNT}:host:payment-system/grouped",
        f"{ACCOUNT}:user:admin",
    }
    assert f"{ACCOUNT}:host:payment-system/reader" not in roles.json()


async def test_batch_is_all_or_nothing(api: Http) -> None:
    ids = f"{ACCOUNT}:variable:{SECRET},{ACCOUNT}:variable:{EMPTY}"
    # One variable has no value: 404 and no value at all in the answer.
    resp = await api.http.get(
        "/secrets", params={"variable_ids": ids}, headers=await api.token(host("permitted"))
    )
    assert resp.status_code == 404
    assert b"v1" not in resp.content
    # One is forbidden (Conjur checks execute on each: 403, even when invisible).
    resp = await api.http.get(
        "/secrets",
        params={"variable_ids": f"{ACCOUNT}:variable:{SECRET}"},
        headers=await api.token(host("outsider")),
    )
    assert resp.status_code == 403
    # Duplicates and empty lists are refused.
    dup = f"{ACCOUNT}:variable:{SECRET},{ACCOUNT}:variable:{SECRET}"
    resp = await api.http.get(
        "/secrets", params={"variable_ids": dup}, headers=await api.token("admin")
    )
    assert resp.status_code == 422


async def test_rotation_rules(api: Http) -> None:
    target = "host:payment-system/permitted"
    path = f"/authn/{ACCOUNT}/api_key"
    # Invisible to the outsider: 404. Visible to the reader without update: 403.
    for who, expected in ((host("outsider"), 404), (host("reader"), 403)):
        resp = await api.http.put(path, params={"role": target}, headers=await api.token(who))
        assert resp.status_code == expected, (who, resp.text)
    # Own key with a token: Conjur refuses ("Credential strength is insufficient").
    resp = await api.http.put(path, headers=await api.token(host("outsider")))
    assert resp.status_code == 401
    # Another role's key with Basic auth: refused too.
    resp = await api.http.put(
        path, params={"role": target}, auth=(host("outsider"), api.keys[host("outsider")])
    )
    assert resp.status_code == 401
    # An unknown role: 404.
    resp = await api.http.put(
        path, params={"role": "host:payment-system/nobody"}, headers=await api.token("admin")
    )
    assert resp.status_code == 404
    # A role without an API key (a group): refused.
    resp = await api.http.put(
        path, params={"role": "group:payment-system/consumers"}, headers=await api.token("admin")
    )
    assert resp.status_code == 422


async def test_policy_load_needs_privilege(api: Http) -> None:
    resp = await api.http.post(
        f"/policies/{ACCOUNT}/policy/payment-system",
        content="- !variable sneaky\n",
        headers=await api.token(host("permitted")),
    )
    assert resp.status_code == 404  # the policy is invisible to the host
    resp = await api.http.post(
        f"/policies/{ACCOUNT}/policy/payment-system",
        content="- !host {id: x, unknown_field: 1}\n",
        headers=await api.token("admin"),
    )
    assert resp.status_code == 422
    err = resp.json()["error"]
    assert err["code"] == "policy_invalid"
    assert err["innererror"]["line"] == 1


async def test_authentication_failures(api: Http) -> None:
    path = f"/secrets/{ACCOUNT}/variable/{enc(SECRET)}"
    assert (await api.http.get(path)).status_code == 401
    bad = {"Authorization": 'Token token="bm90IGEgdG9rZW4="'}
    assert (await api.http.get(path, headers=bad)).status_code == 401
    resp = await api.http.post(
        f"/authn/{ACCOUNT}/{enc(host('permitted'))}/authenticate", content="wrong-key"
    )
    assert resp.status_code == 401
    resp = await api.http.post(
        f"/authn/nosuchaccount/{enc(host('permitted'))}/authenticate",
        content=api.keys[host("permitted")],
    )
    assert resp.status_code == 401


async def test_whoami_and_base64_token(api: Http) -> None:
    resp = await api.http.post(
        f"/authn/{ACCOUNT}/{enc(host('grouped'))}/authenticate",
        content=api.keys[host("grouped")],
        headers={"Accept-Encoding": "base64"},
    )
    assert resp.status_code == 200
    assert resp.headers["content-encoding"] == "base64"
    header = {"Authorization": f'Token token="{resp.text}"'}
    who = await api.http.get("/whoami", headers=header)
    assert who.status_code == 200
    body = who.json()
    assert body["username"] == host("grouped")
    assert body["account"] == ACCOUNT
    assert body["client_ip"] == "127.0.0.1"


async def test_delegated_policy_management(api: Http) -> None:
    """A role with ``create`` on a policy may add to it, not replace it, and may not
    hand out what it does not control."""
    deployer = await api.token(host("deployer"))
    path = f"/policies/{ACCOUNT}/policy/{enc('payment-system/apps')}"
    resp = await api.http.post(path, content="- !variable app-db\n", headers=deployer)
    assert resp.status_code == 201, resp.text
    assert resp.json() == {"created_roles": {}, "version": 1}
    # The deployer owns nothing in apps, but the policy (which it may create into) owns it.
    resp = await api.http.put(path, content="- !variable app-db\n", headers=deployer)
    assert resp.status_code == 403  # replacing needs update
    grab = """
- !permit
  role: !host /payment-system/deployer
  privileges: [read, execute]
  resource: !variable /payment-system/secret
"""
    resp = await api.http.post(path, content=grab, headers=deployer)
    assert resp.status_code == 404  # the variable is invisible to the deployer
    assert (await api.get_secret(host("deployer"), SECRET)).status_code == 404
    # The same permit loaded by the admin works.
    admin = await api.token("admin")
    resp = await api.http.post(path, content=grab, headers=admin)
    assert resp.status_code == 201
    assert (await api.get_secret(host("deployer"), SECRET)).status_code == 200


async def test_replace_deletes_records_and_their_secrets(api: Http) -> None:
    admin = await api.token("admin")
    path = f"/policies/{ACCOUNT}/policy/{enc('payment-system/apps')}"
    resp = await api.http.patch(path, content="- !variable doomed\n", headers=admin)
    assert resp.status_code == 201
    assert (await api.set_secret("admin", "payment-system/apps/doomed", "bye")).status_code == 201
    resp = await api.http.put(path, content="- !variable app-db\n", headers=admin)
    assert resp.status_code == 201
    assert (await api.get_secret("admin", "payment-system/apps/doomed")).status_code == 404
    conn = await asyncpg.connect(api.vault.settings.vault.dsn)
    try:
        left = await conn.fetchval(
            "SELECT count(*) FROM secrets WHERE resource_id = $1",
            f"{ACCOUNT}:variable:payment-system/apps/doomed",
        )
    finally:
        await conn.close()
    assert left == 0
    # The permit from the previous test was loaded into apps, so the replace removed it.
    assert (await api.get_secret(host("deployer"), SECRET)).status_code == 404


async def test_logs_hold_no_secret(api: Http, capfd: pytest.CaptureFixture[str]) -> None:
    value = "LOGCHECK-" + uuid.uuid4().hex
    assert (await api.set_secret("admin", SECRET, value)).status_code == 201
    assert (await api.get_secret(host("permitted"), SECRET)).content == value.encode()
    token_header = await api.token(host("permitted"))
    await api.http.get("/whoami", headers=token_header)
    await api.http.get("/whoami", headers={"Authorization": 'Token token="garbage"'})
    out, err = capfd.readouterr()
    logged = out + err
    assert "vault_secret_stored" in logged  # the logs are captured here...
    for leaked in (
        value,
        api.keys["admin"],
        api.keys[host("permitted")],
        token_header["Authorization"][14:-1],
    ):
        assert leaked not in logged  # ...and hold none of these
