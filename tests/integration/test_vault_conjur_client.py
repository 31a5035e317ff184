"""The official CyberArk client (``conjur-api`` from PyPI), unmodified, against our vault.

If this module passes, code written for a real Conjur works against the lab vault, and
code written against the lab vault works against a real Conjur.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conjur_api import Client
from conjur_api.errors.errors import HttpStatusError
from conjur_api.models import ConjurConnectionInfo, CredentialsData, Resource, SslVerificationMode
from conjur_api.providers import AuthnAuthenticationStrategy, SimpleCredentialsProvider

from payapi.servers.postgres import PgCluster
from payapi.vault.testing import RunningVault, running_vault

ACCOUNT = "payapi"
POLICY = """
- !policy
  id: payment-system
  body:
  - !host payment-eapi
  - !host payment-sapi
  - !variable clients/xyz-vendor/client-id
  - !variable clients/xyz-vendor/client-secret
  - !permit
    role: !host payment-eapi
    privileges: [read, execute]
    resources:
    - !variable clients/xyz-vendor/client-id
    - !variable clients/xyz-vendor/client-secret
"""
CLIENT_ID = "payment-system/clients/xyz-vendor/client-id"
CLIENT_SECRET = "payment-system/clients/xyz-vendor/client-secret"


@pytest.fixture(scope="module")
async def vault(pg: PgCluster) -> AsyncIterator[RunningVault]:
    name = "vault_" + uuid.uuid4().hex[:10]
    pg.create_database(name)
    async with running_vault(pg.dsn(name), account=ACCOUNT) as v:
        yield v
    pg.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def official_client(
    vault: RunningVault, login: str, *, api_key: str | None = None, password: str | None = None
) -> Client:
    """Plain http: the client needs INSECURE mode (no certificate to verify)."""
    info = ConjurConnectionInfo(conjur_url=vault.url, account=vault.account)
    provider = SimpleCredentialsProvider()
    provider.save(
        CredentialsData(machine=vault.url, username=login, api_key=api_key, password=password)
    )
    return Client(
        info,
        ssl_verification_mode=SslVerificationMode.INSECURE,
        authn_strategy=AuthnAuthenticationStrategy(provider),
        async_mode=True,
    )


@pytest.fixture(scope="module")
async def loaded(vault: RunningVault, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Load the policy with the official client; return the created hosts' API keys."""
    admin = official_client(vault, vault.admin_login, api_key=vault.admin_api_key)
    policy_file = tmp_path_factory.mktemp("policy") / "payment-system.yml"
    policy_file.write_text(POLICY)
    result = await admin.load_policy_file("root", str(policy_file))
    assert result["version"] >= 1
    created = result["created_roles"]
    keys = {rid: data["api_key"] for rid, data in created.items()}
    assert set(keys) == {
        f"{ACCOUNT}:host:payment-system/payment-eapi",
        f"{ACCOUNT}:host:payment-system/payment-sapi",
    }
    for rid, data in created.items():
        assert data["id"] == rid
    return keys


async def test_login_returns_the_api_key(vault: RunningVault) -> None:
    client = official_client(vault, vault.admin_login, password=vault.admin_api_key)
    assert await client.login() == vault.admin_api_key


async def test_login_with_a_wrong_key_is_401(vault: RunningVault) -> None:
    client = official_client(vault, vault.admin_login, password="not-the-key")
    with pytest.raises(HttpStatusError) as err:
        await client.login()
    assert err.value.status == 401


async def test_authenticate_gives_a_token_with_expiry(vault: RunningVault) -> None:
    client = official_client(vault, vault.admin_login, api_key=vault.admin_api_key)
    token, expiration = await client.authenticate()
    assert '"payload"' in token and '"signature"' in token
    assert expiration  # the client parsed (or defaulted) the token's expiry
    who = await client.whoami()
    assert who["account"] == ACCOUNT
    assert who["username"] == vault.admin_login
    assert who["token_issued_at"]


async def test_set_get_versions_and_batch(vault: RunningVault, loaded: dict[str, str]) -> None:
    admin = official_client(vault, vault.admin_login, api_key=vault.admin_api_key)
    await admin.set(CLIENT_ID, "xyz-client-1")
    await admin.set(CLIENT_ID, "xyz-client-2")
    await admin.set(CLIENT_SECRET, "s3cr3t/with+odd=chars é")
    assert await admin.get(CLIENT_ID) == b"xyz-client-2"
    assert await admin.get(CLIENT_ID, version="1") == b"xyz-client-1"
    assert await admin.get(CLIENT_SECRET) == "s3cr3t/with+odd=chars é".encode()
    many = await admin.get_many(CLIENT_ID, CLIENT_SECRET)
    assert many == {CLIENT_ID: "xyz-client-2", CLIENT_SECRET: "s3cr3t/with+odd=chars é"}

    # A permitted host reads the same values with its own key.
    eapi = official_client(
        vault,
        "host/payment-system/payment-eapi",
        api_key=loaded[f"{ACCOUNT}:host:payment-system/payment-eapi"],
    )
    assert await eapi.get(CLIENT_ID) == b"xyz-client-2"
    assert await eapi.get_many(CLIENT_ID, CLIENT_SECRET) == many


async def test_list_resources_and_show(vault: RunningVault, loaded: dict[str, str]) -> None:
    admin = official_client(vault, vault.admin_login, api_key=vault.admin_api_key)
    everything = await admin.list()
    assert f"{ACCOUNT}:variable:{CLIENT_ID}" in everything
    assert f"{ACCOUNT}:host:payment-system/payment-eapi" in everything
    variables = await admin.list({"kind": "variable"})
    assert variables and all(":variable:" in r for r in variables)
    found = await admin.list({"kind": "variable", "search": "client-secret"})
    assert found == [f"{ACCOUNT}:variable:{CLIENT_SECRET}"]
    inspected = await admin.list({"kind": "host", "inspect": True})
    assert {r["id"] for r in inspected} >= {f"{ACCOUNT}:host:payment-system/payment-eapi"}

    resource = await admin.get_resource("variable", CLIENT_ID)
    assert resource["id"] == f"{ACCOUNT}:variable:{CLIENT_ID}"
    assert resource["owner"] == f"{ACCOUNT}:policy:payment-system"
    assert resource["policy"] == f"{ACCOUNT}:policy:payment-system"
    assert any(
        p["privilege"] == "execute" and p["role"] == f"{ACCOUNT}:host:payment-system/payment-eapi"
        for p in resource["permissions"]
    )
    assert await admin.resource_exists("variable", CLIENT_ID)
    assert not await admin.resource_exists("variable", "payment-system/nope")
    # find_resource_by_identifier goes through search + list.
    found_one = await admin.find_resource_by_identifier(CLIENT_SECRET)
    assert found_one.kind == "variable"


async def test_check_privilege(vault: RunningVault, loaded: dict[str, str]) -> None:
    admin = official_client(vault, vault.admin_login, api_key=vault.admin_api_key)
    eapi_role = f"{ACCOUNT}:host:payment-system/payment-eapi"
    sapi_role = f"{ACCOUNT}:host:payment-system/payment-sapi"
    assert await admin.check_privilege("variable", CLIENT_ID, "execute", eapi_role)
    assert not await admin.check_privilege("variable", CLIENT_ID, "update", eapi_role)
    assert not await admin.check_privilege("variable", CLIENT_ID, "execute", sapi_role)
    assert await admin.check_privilege("variable", CLIENT_ID, "update")  # the admin owns it


async def test_rotate_other_api_key(vault: RunningVault, loaded: dict[str, str]) -> None:
    admin = official_client(vault, vault.admin_login, api_key=vault.admin_api_key)
    login = "host/payment-system/payment-sapi"
    old_key = loaded[f"{ACCOUNT}:host:payment-system/payment-sapi"]
    new_key = await admin.rotate_other_api_key(Resource("host", "payment-system/payment-sapi"))
    assert new_key and new_key != old_key
    loaded[f"{ACCOUNT}:host:payment-system/payment-sapi"] = new_key

    with pytest.raises(HttpStatusError) as err:
        await official_client(vault, login, api_key=old_key).authenticate()
    assert err.value.status == 401
    token, _ = await official_client(vault, login, api_key=new_key).authenticate()
    assert token


async def test_rotate_personal_api_key(vault: RunningVault, loaded: dict[str, str]) -> None:
    login = "host/payment-system/payment-eapi"
    role = f"{ACCOUNT}:host:payment-system/payment-eapi"
    old_key = loaded[role]
    client = official_client(vault, login, api_key=old_key)
    new_key = await client.rotate_personal_api_key(login, old_key)
    assert new_key and new_key != old_key
    loaded[role] = new_key
    with pytest.raises(HttpStatusError) as err:
        await official_client(vault, login, api_key=old_key).authenticate()
    assert err.value.status == 401
    assert await official_client(vault, login, api_key=new_key).get(CLIENT_ID)


async def test_update_and_replace_policy(
    vault: RunningVault, loaded: dict[str, str], tmp_path: Path
) -> None:
    admin = official_client(vault, vault.admin_login, api_key=vault.admin_api_key)
    extra = tmp_path / "extra.yml"
    extra.write_text("- !variable temporary\n- !host batch-job\n")
    result = await admin.update_policy_file("payment-system", str(extra))
    assert f"{ACCOUNT}:host:payment-system/batch-job" in result["created_roles"]
    await admin.set("payment-system/temporary", "t")

    # Dry run: the client checks the server version first, then nothing changes.
    dry = await admin.replace_policy_file("payment-system", str(extra), dry_run=True)
    assert dry["status"] == "Valid YAML"
    assert f"{ACCOUNT}:variable:{CLIENT_ID}" in {i["identifier"] for i in dry["deleted"]["items"]}
    assert await admin.get(CLIENT_ID)

    # Replacing payment-system with the original body deletes what is not in it.
    original = tmp_path / "original.yml"
    body = POLICY.split("body:\n", 1)[1]
    original.write_text("\n".join(line[2:] for line in body.splitlines()))
    replaced = await admin.replace_policy_file("payment-system", str(original))
    assert replaced["created_roles"] == {}  # surviving hosts keep their keys
    assert not await admin.resource_exists("variable", "payment-system/temporary")
    assert not await admin.resource_exists("host", "payment-system/batch-job")
    assert await admin.get(CLIENT_ID) == b"xyz-client-2"
    eapi_key = loaded[f"{ACCOUNT}:host:payment-system/payment-eapi"]
    eapi = official_client(vault, "host/payment-system/payment-eapi", api_key=eapi_key)
    assert await eapi.get(CLIENT_ID) == b"xyz-client-2"


async def test_server_version_is_readable(vault: RunningVault) -> None:
    admin = official_client(vault, vault.admin_login, api_key=vault.admin_api_key)
    assert await admin.server_version() == "1.21.1"
