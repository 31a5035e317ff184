"""payapi's own async ``VaultClient`` against the real vault: every method, every error."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from payapi.servers.postgres import PgCluster
from payapi.servers.procs import free_port
from payapi.vault.client import (
    VaultClient,
    VaultForbidden,
    VaultNotFound,
    VaultUnauthorized,
    VaultUnavailable,
)
from payapi.vault.testing import RunningVault, running_vault

ACCOUNT = "payapi"
POLICY = """
- !host payment-system/payment-eapi
- !host payment-system/payment-sapi
- !variable payment-system/sapi/service-token
- !variable payment-system/clients/xyz-vendor/client-id
- !permit
  role: !host payment-system/payment-eapi
  privileges: [read, execute]
  resources:
  - !variable payment-system/sapi/service-token
  - !variable payment-system/clients/xyz-vendor/client-id
- !permit
  role: !host payment-system/payment-sapi
  privilege: read
  resource: !variable payment-system/sapi/service-token
"""
TOKEN_VAR = "payment-system/sapi/service-token"
CLIENT_VAR = "payment-system/clients/xyz-vendor/client-id"
EAPI = "host/payment-system/payment-eapi"
SAPI = "host/payment-system/payment-sapi"


@pytest.fixture(scope="module")
async def vault(pg: PgCluster) -> AsyncIterator[RunningVault]:
    name = "vault_" + uuid.uuid4().hex[:10]
    pg.create_database(name)
    async with running_vault(pg.dsn(name), account=ACCOUNT) as v:
        yield v
    pg.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
async def keys(vault: RunningVault) -> dict[str, SecretStr]:
    async with VaultClient(
        vault.url, ACCOUNT, vault.admin_login, SecretStr(vault.admin_api_key)
    ) as admin:
        result = await admin.load_policy("root", POLICY)
        await admin.set_secret(TOKEN_VAR, SecretStr("service-token-1"))
        await admin.set_secret(CLIENT_VAR, "xyz-vendor")
    created = result["created_roles"]
    return {
        EAPI: SecretStr(created[f"{ACCOUNT}:host:payment-system/payment-eapi"]["api_key"]),
        SAPI: SecretStr(created[f"{ACCOUNT}:host:payment-system/payment-sapi"]["api_key"]),
        "admin": SecretStr(vault.admin_api_key),
    }


def client(vault: RunningVault, login: str, key: SecretStr) -> VaultClient:
    return VaultClient(vault.url, ACCOUNT, login, key)


async def test_reads_and_batch(vault: RunningVault, keys: dict[str, SecretStr]) -> None:
    async with client(vault, EAPI, keys[EAPI]) as eapi:
        assert (await eapi.get_secret(TOKEN_VAR)).get_secret_value() == "service-token-1"
        batch = await eapi.get_secrets([TOKEN_VAR, CLIENT_VAR])
        assert {k: v.get_secret_value() for k, v in batch.items()} == {
            TOKEN_VAR: "service-token-1",
            CLIENT_VAR: "xyz-vendor",
        }
        who = await eapi.whoami()
        assert who["username"] == EAPI
        assert await eapi.health()


async def test_versions(vault: RunningVault, keys: dict[str, SecretStr]) -> None:
    async with client(vault, "admin", keys["admin"]) as admin:
        var = "payment-system/clients/xyz-vendor/client-id"
        await admin.set_secret(var, "xyz-vendor-2")
        assert (await admin.get_secret(var)).get_secret_value() == "xyz-vendor-2"
        assert (await admin.get_secret(var, version=1)).get_secret_value() == "xyz-vendor"
        await admin.set_secret(var, "xyz-vendor")


async def test_errors_map_to_exceptions(vault: RunningVault, keys: dict[str, SecretStr]) -> None:
    async with client(vault, SAPI, keys[SAPI]) as sapi:
        with pytest.raises(VaultForbidden):  # read but no execute
            await sapi.get_secret(TOKEN_VAR)
        with pytest.raises(VaultNotFound):  # invisible
            await sapi.get_secret(CLIENT_VAR)
        with pytest.raises(VaultNotFound):
            await sapi.get_secret("payment-system/nothing-here")
        with pytest.raises(VaultForbidden):
            await sapi.set_secret(TOKEN_VAR, "x")
    async with client(vault, SAPI, SecretStr("wrong")) as bad:
        with pytest.raises(VaultUnauthorized) as err:
            await bad.get_secret(TOKEN_VAR)
        assert "wrong" not in str(err.value)
    async with VaultClient(f"http://127.0.0.1:{free_port()}", ACCOUNT, SAPI, keys[SAPI]) as off:
        with pytest.raises(VaultUnavailable):
            await off.get_secret(TOKEN_VAR)
        assert not await off.health()


async def test_list_resources(vault: RunningVault, keys: dict[str, SecretStr]) -> None:
    async with client(vault, EAPI, keys[EAPI]) as eapi:
        visible = await eapi.list_resources(kind="variable")
        assert {r["id"] for r in visible} == {
            f"{ACCOUNT}:variable:{TOKEN_VAR}",
            f"{ACCOUNT}:variable:{CLIENT_VAR}",
        }
        found = await eapi.list_resources(kind="variable", search="clients/")
        assert [r["id"] for r in found] == [f"{ACCOUNT}:variable:{CLIENT_VAR}"]


async def test_policy_methods(vault: RunningVault, keys: dict[str, SecretStr]) -> None:
    async with client(vault, "admin", keys["admin"]) as admin:
        r1 = await admin.load_policy("root", "- !policy\n  id: scratch\n  body: []\n")
        r2 = await admin.load_policy("scratch", "- !variable a\n- !variable b\n", "PATCH")
        assert r2["version"] == 1 and r1["version"] >= 2
        await admin.set_secret("scratch/a", "A")
        await admin.load_policy("scratch", "- !variable b\n", "PUT")
        with pytest.raises(VaultNotFound):
            await admin.get_secret("scratch/a")
        await admin.load_policy("scratch", "- !delete\n  record: !variable b\n", "PATCH")
        assert await admin.list_resources(search="scratch/b") == []


async def test_rotate_other_then_own_key(vault: RunningVault, keys: dict[str, SecretStr]) -> None:
    async with client(vault, "admin", keys["admin"]) as admin:
        new_sapi = await admin.rotate_api_key(role="host:payment-system/payment-sapi")
    assert new_sapi.get_secret_value() != keys[SAPI].get_secret_value()
    async with client(vault, SAPI, keys[SAPI]) as old:
        with pytest.raises(VaultUnauthorized):
            await old.whoami()
    keys[SAPI] = new_sapi

    async with client(vault, EAPI, keys[EAPI]) as eapi:
        assert await eapi.whoami()  # holds a token now
        new_eapi = await eapi.rotate_api_key()  # Basic auth with the current key
        assert new_eapi.get_secret_value() != keys[EAPI].get_secret_value()
        # The client switched to the new key; its next authentication uses it.
        eapi.set_api_key(new_eapi)
        assert (await eapi.get_secret(TOKEN_VAR)).get_secret_value() == "service-token-1"
    async with client(vault, EAPI, keys[EAPI]) as old:
        with pytest.raises(VaultUnauthorized):
            await old.authenticate()
    keys[EAPI] = new_eapi
