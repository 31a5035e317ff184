"""What the vault keeps on disk, and what it refuses.

- No secret value, API key or token is readable in any column of any table.
- The 20 newest versions are kept; the 21st evicts the 1st.
- A wrong data key cannot decrypt: the server refuses to start, and a row opened with it
  fails with a clear error (naming the variable, never the value).
- Percent-encoded ids with slashes reach the right variable.
- Expired or tampered tokens answer 401.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import asyncpg
import httpx
import orjson
import pytest
from pydantic import SecretStr

from payapi.core.settings import ConfigError, Settings, VaultSettings
from payapi.servers.postgres import PgCluster
from payapi.vault.app import create_app
from payapi.vault.bootstrap import bootstrap
from payapi.vault.client import VaultClient, VaultNotFound
from payapi.vault.crypto import (
    DataKeyError,
    DataKeyMismatch,
    DecryptionError,
    SecretCipher,
    generate_data_key_file,
)
from payapi.vault.testing import RunningVault, running_vault
from payapi.vault.tokens import TokenService

ACCOUNT = "payapi"
POLICY = """
- !host payment-system/payment-eapi
- !variable payment-system/clients/xyz-vendor/client-id
- !variable payment-system/odd/a.b@c+d=e_f
- !variable payment-system/rotating
- !permit
  role: !host payment-system/payment-eapi
  privileges: [read, execute]
  resources:
  - !variable payment-system/clients/xyz-vendor/client-id
  - !variable payment-system/rotating
"""
VAR = "payment-system/clients/xyz-vendor/client-id"
ODD = "payment-system/odd/a.b@c+d=e_f"
ROTATING = "payment-system/rotating"
EAPI = "host/payment-system/payment-eapi"


@pytest.fixture(scope="module")
async def served(pg: PgCluster) -> AsyncIterator[tuple[RunningVault, str]]:
    """The vault with POLICY loaded, and the API key of the EAPI host."""
    name = "vault_" + uuid.uuid4().hex[:10]
    pg.create_database(name)
    async with running_vault(pg.dsn(name), account=ACCOUNT) as v:
        async with VaultClient(v.url, ACCOUNT, "admin", SecretStr(v.admin_api_key)) as admin:
            result = await admin.load_policy("root", POLICY)
        key = result["created_roles"][f"{ACCOUNT}:host:payment-system/payment-eapi"]["api_key"]
        yield v, key
    pg.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def vault(served: tuple[RunningVault, str]) -> RunningVault:
    return served[0]


@pytest.fixture
def eapi_key(served: tuple[RunningVault, str]) -> str:
    return served[1]


def admin_client(vault: RunningVault) -> VaultClient:
    return VaultClient(vault.url, ACCOUNT, "admin", SecretStr(vault.admin_api_key))


async def _columns(conn: asyncpg.Connection) -> list[tuple[str, str, str, str]]:
    rows = await conn.fetch(
        """SELECT table_schema, table_name, column_name, data_type
           FROM information_schema.columns
           WHERE table_schema NOT IN ('pg_catalog', 'information_schema')
             AND data_type IN ('text', 'character varying', 'character', 'bytea',
                               'json', 'jsonb', 'ARRAY', 'USER-DEFINED')"""
    )
    return [(r[0], r[1], r[2], r[3]) for r in rows]


async def test_no_plaintext_in_any_column(vault: RunningVault, eapi_key: str) -> None:
    plain = "PLAINTEXT-" + secrets.token_hex(16)
    async with admin_client(vault) as admin:
        for i in range(3):
            await admin.set_secret(VAR, f"{plain}-{i}")
        token = await admin.authenticate()
        assert (await admin.get_secret(VAR)).get_secret_value() == f"{plain}-2"
    needles = [plain, vault.admin_api_key, eapi_key]
    needles.append(orjson.loads(token)["signature"])
    conn = await asyncpg.connect(vault.settings.vault.dsn)
    try:
        columns = await _columns(conn)
        assert {c[1] for c in columns} >= {"secrets", "credentials", "policy_versions"}
        for schema, table, column, dtype in columns:
            for needle in needles:
                where = (
                    f'position($1::bytea in "{column}") > 0'
                    if dtype == "bytea"
                    else f'strpos("{column}"::text, $1::text) > 0'
                )
                sql = f'SELECT count(*) FROM "{schema}"."{table}" WHERE {where}'
                found = await conn.fetchval(sql, needle.encode() if dtype == "bytea" else needle)
                assert found == 0, f"{table}.{column} contains a secret"
        # The scan would see a value if one were there: the variable's id is.
        hits = 0
        for schema, table, column, dtype in columns:
            if dtype != "bytea":
                where = f'strpos("{column}"::text, $1) > 0'
                hits += await conn.fetchval(
                    f'SELECT count(*) FROM "{schema}"."{table}" WHERE {where}', VAR
                )
        assert hits > 0
    finally:
        await conn.close()


async def test_twenty_versions_kept(vault: RunningVault) -> None:
    async with admin_client(vault) as admin:
        for i in range(1, 22):
            await admin.set_secret(ROTATING, f"value-{i}")
        assert (await admin.get_secret(ROTATING)).get_secret_value() == "value-21"
        assert (await admin.get_secret(ROTATING, version=2)).get_secret_value() == "value-2"
        with pytest.raises(VaultNotFound):
            await admin.get_secret(ROTATING, version=1)
        resources = await admin.list_resources(kind="variable", search="rotating")
        versions = [s["version"] for s in resources[0]["secrets"]]
        assert versions == list(range(2, 22))
    conn = await asyncpg.connect(vault.settings.vault.dsn)
    try:
        n = await conn.fetchval(
            "SELECT count(*) FROM secrets WHERE resource_id = $1", f"{ACCOUNT}:variable:{ROTATING}"
        )
        assert n == 20
    finally:
        await conn.close()


async def test_wrong_data_key_cannot_decrypt(vault: RunningVault) -> None:
    async with admin_client(vault) as admin:
        await admin.set_secret(VAR, "sealed-under-the-right-key")
    conn = await asyncpg.connect(vault.settings.vault.dsn)
    try:
        row = await conn.fetchrow(
            "SELECT version, sealed FROM secrets WHERE resource_id = $1 ORDER BY version DESC",
            f"{ACCOUNT}:variable:{VAR}",
        )
    finally:
        await conn.close()
    assert row is not None
    right = SecretCipher.from_data_key(vault.data_key)
    rid = f"{ACCOUNT}:variable:{VAR}"
    assert right.open(rid, row["version"], row["sealed"]) == b"sealed-under-the-right-key"
    wrong = SecretCipher.from_data_key(secrets.token_bytes(32))
    with pytest.raises(DecryptionError) as err:
        wrong.open(rid, row["version"], row["sealed"])
    assert "wrong key" in str(err.value) and "sealed-under" not in str(err.value)
    # The same ciphertext does not open as another version or another variable (AAD).
    with pytest.raises(DecryptionError):
        right.open(rid, row["version"] + 1, row["sealed"])
    with pytest.raises(DecryptionError):
        right.open(f"{ACCOUNT}:variable:{ODD}", row["version"], row["sealed"])


async def test_server_refuses_to_start_with_a_wrong_key(
    vault: RunningVault, tmp_path: Path
) -> None:
    key_file = generate_data_key_file(tmp_path / "other.key")
    assert key_file.stat().st_mode & 0o777 == 0o600
    settings = Settings(vault=VaultSettings(dsn=vault.settings.vault.dsn, data_key_file=key_file))
    app = create_app(settings)
    with pytest.raises(DataKeyMismatch) as err:
        async with app.router.lifespan_context(app):
            pass
    assert "not the key this vault database was created with" in str(err.value)
    with pytest.raises(DataKeyMismatch):
        await bootstrap(vault.settings.vault.dsn, "other", data_key=b"\x00" * 32)


def test_missing_or_malformed_data_key_is_a_startup_error(tmp_path: Path) -> None:
    missing = Settings(vault=VaultSettings(dsn="postgresql://x/y", data_key_file=tmp_path / "no"))
    with pytest.raises(DataKeyError, match="not found"):
        create_app(missing)
    short = tmp_path / "short.key"
    short.write_text(base64.b64encode(b"too short").decode())
    with pytest.raises(DataKeyError, match="32 are required"):
        create_app(Settings(vault=VaultSettings(dsn="postgresql://x/y", data_key_file=short)))
    unset = VaultSettings(
        dsn="postgresql://x/y", data_key_env="PAYAPI_TEST_UNSET_" + uuid.uuid4().hex
    )
    with pytest.raises(DataKeyError, match="no vault data key"):
        create_app(Settings(vault=unset))
    with pytest.raises(ConfigError):
        generate_data_key_file(short)  # never overwrites a key


async def test_percent_encoded_ids_with_slashes(vault: RunningVault, eapi_key: str) -> None:
    async with admin_client(vault) as admin:  # the client encodes slashes as %2F
        await admin.set_secret(ODD, "odd-value")
        assert (await admin.get_secret(ODD)).get_secret_value() == "odd-value"
        token = base64.b64encode(await admin.authenticate()).decode()
    headers = {"Authorization": f'Token token="{token}"'}
    async with httpx.AsyncClient(base_url=vault.url, trust_env=False) as http:
        encoded = quote(ODD, safe="")
        assert "%2F" in encoded and "%40" in encoded and "%2B" in encoded
        resp = await http.get(f"/secrets/{ACCOUNT}/variable/{encoded}", headers=headers)
        assert resp.status_code == 200 and resp.content == b"odd-value"
        # Slashes left unencoded reach the same variable.
        plain_slashes = quote(ODD, safe="/")
        resp = await http.get(f"/secrets/{ACCOUNT}/variable/{plain_slashes}", headers=headers)
        assert resp.status_code == 200 and resp.content == b"odd-value"
        resp = await http.get(f"/resources/{ACCOUNT}/variable/{encoded}", headers=headers)
        assert resp.json()["id"] == f"{ACCOUNT}:variable:{ODD}"
        # An authenticate URL with an encoded host login.
        login = quote(EAPI, safe="")
        assert login == "host%2Fpayment-system%2Fpayment-eapi"
        resp = await http.post(
            f"/authn/{ACCOUNT}/{login}/authenticate",
            content=eapi_key,
        )
        assert resp.status_code == 200


async def test_batch_all_or_nothing(vault: RunningVault) -> None:
    async with admin_client(vault) as admin:
        await admin.set_secret(VAR, "present")
        token = base64.b64encode(await admin.authenticate()).decode()
    headers = {"Authorization": f'Token token="{token}"'}
    async with httpx.AsyncClient(base_url=vault.url, trust_env=False) as http:
        ids = f"{ACCOUNT}:variable:{VAR},{ACCOUNT}:variable:payment-system/missing"
        resp = await http.get("/secrets", params={"variable_ids": ids}, headers=headers)
        assert resp.status_code == 404
        assert b"present" not in resp.content
        assert resp.json()["error"]["code"] == "not_found"
        ok = f"{ACCOUNT}:variable:{VAR},{ACCOUNT}:variable:{ODD}"
        resp = await http.get(
            "/secrets",
            params={"variable_ids": ok},
            headers={**headers, "Accept-Encoding": "base64"},
        )
        assert resp.status_code == 200
        decoded = {k: base64.b64decode(v) for k, v in resp.json().items()}
        assert decoded[f"{ACCOUNT}:variable:{VAR}"] == b"present"


async def test_expired_and_tampered_tokens_are_401(vault: RunningVault) -> None:
    tokens = TokenService(vault.data_key)
    path = f"/secrets/{ACCOUNT}/variable/{quote(VAR, safe='')}"

    def header(token: bytes) -> dict[str, str]:
        return {"Authorization": f'Token token="{base64.b64encode(token).decode()}"'}

    good = tokens.issue(ACCOUNT, "admin")
    expired = tokens.issue(ACCOUNT, "admin", ttl_seconds=-1)
    doc = orjson.loads(good)
    claims = orjson.loads(base64.urlsafe_b64decode(doc["payload"]))
    forged_claims = {**claims, "exp": claims["exp"] + 3600}
    forged = orjson.dumps(
        {**doc, "payload": base64.urlsafe_b64encode(orjson.dumps(forged_claims)).decode()}
    )
    bad_sig = orjson.dumps({**doc, "signature": base64.urlsafe_b64encode(b"x" * 32).decode()})
    other_key = TokenService(secrets.token_bytes(32)).issue(ACCOUNT, "admin")
    async with httpx.AsyncClient(base_url=vault.url, trust_env=False) as http:
        assert (await http.get(path, headers=header(good))).status_code in (200, 404)
        for token in (expired, forged, bad_sig, other_key):
            resp = await http.get(path, headers=header(token))
            assert resp.status_code == 401
            assert resp.json()["error"]["code"] == "unauthorized"
        # A token for a role that does not exist (it was never created): 401.
        ghost = tokens.issue(ACCOUNT, "host/payment-system/ghost")
        assert (await http.get(path, headers=header(ghost))).status_code == 401
