"""Vault backups and restore end to end: a real vault, real PostgreSQL, a file repository.

What is proven here:
- full + two incrementals (new versions, an API-key rotation, a policy replace that deletes
  a variable) restored into a fresh database serve, through the official ``conjur-api``
  client, exactly the values and versions the vault served, and the deleted variable
  stays deleted;
- the data key is required: missing or wrong is one clear error, and nothing is replaced;
- in place, while the vault runs: values come back and the vault answers its health check;
- restoring a backup older than an emergency rotation warns that it brings back rotated
  credentials;
- neither the repository's stored bytes nor the decrypted objects hold a secret value;
- a transaction that started before a backup and committed after it is in the next
  incremental (change tracking follows commit visibility, not write order).
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from conjur_api import Client
from conjur_api.errors.errors import HttpStatusError
from conjur_api.models import ConjurConnectionInfo, CredentialsData, Resource, SslVerificationMode
from conjur_api.providers import AuthnAuthenticationStrategy, SimpleCredentialsProvider

from payapi.audit import append as audit_append
from payapi.backup.crypto import generate_key
from payapi.backup.engines import BackupJob, run_backup
from payapi.backup.lock import Lock, LockHeld, lock_name
from payapi.backup.repository import Repository
from payapi.backup.vault_backup import run_vault_backup
from payapi.backup.vault_format import (
    COMPONENT,
    VaultKeyError,
    VaultRestoreError,
)
from payapi.backup.vault_restore import restore_vault, wait_vault_healthy
from payapi.core.journal import Journal, note_sink
from payapi.core.settings import Settings, VaultSettings
from payapi.credentials.service import EPOCH
from payapi.sapi.migrate import migrate as sapi_migrate
from payapi.servers.postgres import PgCluster
from payapi.servers.uvicorn import ServerThread
from payapi.vault.app import create_app
from payapi.vault.crypto import SecretCipher
from payapi.vault.testing import RunningVault, running_vault

ACCOUNT = "payapi"
APP_POLICY = """
- !host batch
- !variable db/password
- !variable api/token
- !variable legacy/ftp-password
- !permit
  role: !host batch
  privileges: [read, execute]
  resources:
  - !variable db/password
  - !variable api/token
"""
# Replacing the policy drops legacy/ftp-password and adds new/feature-flag.
APP_POLICY_V2 = """
- !host batch
- !variable db/password
- !variable api/token
- !variable new/feature-flag
- !permit
  role: !host batch
  privileges: [read, execute]
  resources:
  - !variable db/password
  - !variable api/token
"""
ROOT_POLICY = "- !policy\n  id: app\n"
DB_PW, API_TOKEN, LEGACY, FLAG = (
    "app/db/password",
    "app/api/token",
    "app/legacy/ftp-password",
    "app/new/feature-flag",
)
BATCH = "host/app/batch"
MakeDb = Callable[[], str]


# --- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture
def make_db(pg: PgCluster) -> Iterator[MakeDb]:
    """A factory of fresh, empty databases (dropped at the end of the test)."""
    names: list[str] = []

    def make() -> str:
        name = "vb_" + uuid.uuid4().hex[:12]
        pg.create_database(name)
        names.append(name)
        return pg.dsn(name)

    yield make
    for name in names:
        pg.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repository]:
    r = Repository.open(f"file://{tmp_path / 'repo'}", generate_key(), chunk_size=64 * 1024)
    r.init()
    yield r
    r.close()


@asynccontextmanager
async def vault_on(make_db: MakeDb) -> AsyncIterator[RunningVault]:
    async with running_vault(make_db(), account=ACCOUNT) as v:
        yield v


def client(url: str, login: str, api_key: str) -> Client:
    info = ConjurConnectionInfo(conjur_url=url, account=ACCOUNT)
    provider = SimpleCredentialsProvider()
    provider.save(CredentialsData(machine=url, username=login, api_key=api_key))
    return Client(
        info,
        ssl_verification_mode=SslVerificationMode.INSECURE,
        authn_strategy=AuthnAuthenticationStrategy(provider),
        async_mode=True,
    )


def admin_of(v: RunningVault, url: str | None = None) -> Client:
    return client(url or v.url, v.admin_login, v.admin_api_key)


async def load(
    c: Client, policy_id: str, text: str, tmp: Path, *, replace: bool = False
) -> dict[str, Any]:
    f = tmp / f"policy-{uuid.uuid4().hex[:6]}.yml"
    f.write_text(text)
    if replace:
        result = await c.replace_policy_file(policy_id, str(f))
    else:
        result = await c.load_policy_file(policy_id, str(f))
    assert isinstance(result, dict)
    return result


async def state_of(c: Client) -> dict[str, dict[int, bytes]]:
    """Every variable the caller sees → {version: value}, read with the official client."""
    out: dict[str, dict[int, bytes]] = {}
    for rid in await c.list({"kind": "variable"}):
        ident = rid.split(":", 2)[2]
        resource = await c.get_resource("variable", ident)
        versions = [int(s["version"]) for s in resource.get("secrets", [])]
        out[ident] = {v: await c.get(ident, version=str(v)) for v in versions}
    return out


@asynccontextmanager
async def serve(dsn: str, key_file: Path) -> AsyncIterator[str]:
    """Start a vault on an existing (restored) database: no bootstrap."""
    settings = Settings(vault=VaultSettings(account=ACCOUNT, dsn=dsn, data_key_file=key_file))
    server = ServerThread(create_app(settings))
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


def settings_with_key(v: RunningVault, key_file: Path | None, env: str = "") -> Settings:
    s = v.settings.model_copy(deep=True)
    s.vault.data_key_file = key_file
    if env:
        s.vault.data_key_env = env
    return s


def key_file(tmp: Path, key: bytes) -> Path:
    f = tmp / f"key-{uuid.uuid4().hex[:6]}"
    f.write_bytes(base64.b64encode(key))
    return f


# --- full + incrementals → fresh database ----------------------------------------------------


async def test_full_and_two_incrementals_restore_into_a_fresh_vault(
    make_db: MakeDb, repo: Repository, tmp_path: Path, pg: PgCluster
) -> None:
    async with vault_on(make_db) as v:
        admin = admin_of(v)
        await load(admin, "root", ROOT_POLICY, tmp_path)
        created = await load(admin, "app", APP_POLICY, tmp_path)
        batch_key = created["created_roles"][f"{ACCOUNT}:host:app/batch"]["api_key"]
        await admin.set(DB_PW, "pw-1")
        await admin.set(API_TOKEN, "tok-1")
        await admin.set(LEGACY, "ftp-1")
        messages: list[str] = []
        full = run_vault_backup(
            repo, v.settings, kind="full", journal=Journal(note_sink(messages.append))
        )
        assert full.type == "full" and full.parent is None and full.component == COMPONENT
        assert any("secrets: 3 rows" in m for m in messages)

        # Incremental 1: new versions, an API-key rotation.
        await admin.set(DB_PW, "pw-2")
        await admin.set(DB_PW, "pw-3")
        await admin.set(API_TOKEN, "tok-2")
        batch_key = await admin.rotate_other_api_key(Resource("host", "app/batch"))
        inc1 = run_vault_backup(repo, v.settings, kind="incremental")
        assert inc1.type == "incremental" and inc1.parent == full.backup_id
        tables = inc1.meta["tables"]
        assert tables["secrets"]["rows"] == 3  # exactly the three new versions
        assert tables["credentials"]["rows"] == 1

        # Incremental 2: a policy replace deletes a variable (and its secrets) and adds one.
        await load(admin, "app", APP_POLICY_V2, tmp_path, replace=True)
        assert not await admin.resource_exists("variable", LEGACY)
        await admin.set(FLAG, "on")
        await admin.set(DB_PW, "pw-4")
        inc2 = run_vault_backup(repo, v.settings, kind="incremental")
        assert inc2.parent == inc1.backup_id
        assert inc2.meta["tables"]["secrets"]["keys"] >= 3  # 2 new + the deleted ftp version

        expected = await state_of(admin)
        assert set(expected) == {DB_PW, API_TOKEN, FLAG}
        assert expected[DB_PW] == {1: b"pw-1", 2: b"pw-2", 3: b"pw-3", 4: b"pw-4"}
        expected_list = sorted(await admin.list())

        # The key is required: no key → one clear error, nothing created in the target.
        target = make_db()
        no_key = settings_with_key(v, None, env="PAYAPI_TEST_NO_SUCH_KEY_VAR")
        with pytest.raises(VaultKeyError) as err:
            restore_vault(repo, no_key, target_dsn=target)
        assert "no vault data key" in str(err.value)
        assert "\n" not in str(err.value)
        conn = await asyncpg.connect(target)
        try:
            tables_there = await conn.fetchval(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
            )
        finally:
            await conn.close()
        assert tables_there == 0

        result = restore_vault(repo, v.settings, target_dsn=target)
        assert result.chain == [full.backup_id, inc1.backup_id, inc2.backup_id]
        assert result.backup_id == inc2.backup_id
        assert not result.in_place and result.healthy is None
        assert result.warnings == []  # the live vault is exactly what was backed up
        assert result.counts["variables"] == 3
        assert result.counts["secret_versions"] == 4 + 2 + 1
        assert result.rows["secrets"] == 7
        assert v.settings.vault.data_key_file is not None
        restored_key_file = v.settings.vault.data_key_file

        async with serve(target, restored_key_file) as url:
            restored_admin = admin_of(v, url)
            assert await state_of(restored_admin) == expected
            assert sorted(await restored_admin.list()) == expected_list
            assert not await restored_admin.resource_exists("variable", LEGACY)
            with pytest.raises(HttpStatusError) as gone:
                await restored_admin.get(LEGACY)
            assert gone.value.status == 404
            # The rotated API key of the host, not the original one, works on the copy.
            batch = client(url, BATCH, batch_key)
            assert await batch.get(DB_PW) == b"pw-4"
            assert await batch.get(API_TOKEN, version="1") == b"tok-1"

        # An older point of the chain: the variable the replace deleted is still there.
        older = make_db()
        mid = restore_vault(repo, v.settings, backup_id=inc1.backup_id, target_dsn=older)
        assert mid.chain == [full.backup_id, inc1.backup_id]
        assert any("created after this backup" in w for w in mid.warnings)
        async with serve(older, restored_key_file) as url:
            older_admin = admin_of(v, url)
            assert await older_admin.get(LEGACY) == b"ftp-1"
            assert await older_admin.get(DB_PW) == b"pw-3"
            assert not await older_admin.resource_exists("variable", FLAG)


async def test_incremental_without_parent_is_taken_as_full(
    make_db: MakeDb, repo: Repository
) -> None:
    async with vault_on(make_db) as v:
        notes: list[str] = []
        info = run_vault_backup(
            repo, v.settings, kind="incremental", journal=Journal(note_sink(notes.append))
        )
        assert info.type == "full"
        assert info.meta["promoted_from"] == "incremental"
        assert any("no earlier vault backup" in n for n in notes)
        # With a full to build on, an unchanged vault gives an empty incremental.
        again = run_vault_backup(repo, v.settings, kind="incremental")
        assert again.type == "incremental" and again.parent == info.backup_id
        assert all(t["rows"] == 0 for t in again.meta["tables"].values())


async def test_backup_waits_for_nobody_when_the_lock_is_held(
    make_db: MakeDb, repo: Repository
) -> None:
    async with vault_on(make_db) as v:
        lock = Lock(repo.lock_store())
        with (
            lock.hold(lock_name(COMPONENT), "retention purge (test)"),
            pytest.raises(LockHeld) as err,
        ):
            run_backup(repo, v.settings, COMPONENT, BackupJob(kind="full"))
        assert "retention purge (test)" in str(err.value)
        assert repo.list_backups(COMPONENT) == []


async def test_a_transaction_committed_after_a_backup_is_in_the_next_incremental(
    make_db: MakeDb, repo: Repository, tmp_path: Path
) -> None:
    async with vault_on(make_db) as v:
        admin = admin_of(v)
        await load(admin, "root", ROOT_POLICY, tmp_path)
        await load(admin, "app", APP_POLICY, tmp_path)
        await admin.set(DB_PW, "pw-1")
        rid = f"{ACCOUNT}:variable:{DB_PW}"
        sealed = SecretCipher.from_data_key(v.data_key).seal(rid, 2, b"pw-slow")
        slow = await asyncpg.connect(v.settings.vault.dsn)
        try:
            tr = slow.transaction()
            await tr.start()
            # Written (and given its change-log row) before the backup's snapshot...
            await slow.execute(
                "INSERT INTO secrets (resource_id, version, sealed) VALUES ($1, 2, $2)",
                rid,
                sealed,
            )
            full = await asyncio.to_thread(run_vault_backup, repo, v.settings, kind="full")
            # ...committed after it.
            await tr.commit()
        finally:
            await slow.close()
        assert full.meta["tables"]["secrets"]["rows"] == 1
        inc = run_vault_backup(repo, v.settings, kind="incremental")
        assert inc.meta["tables"]["secrets"]["rows"] == 1
        target = make_db()
        restore_vault(repo, v.settings, target_dsn=target)
        assert v.settings.vault.data_key_file is not None
        async with serve(target, v.settings.vault.data_key_file) as url:
            assert await admin_of(v, url).get(DB_PW) == b"pw-slow"


# --- keys -----------------------------------------------------------------------------------


async def test_wrong_key_is_one_clear_error_and_nothing_is_replaced(
    make_db: MakeDb, repo: Repository, tmp_path: Path
) -> None:
    async with vault_on(make_db) as v:
        admin = admin_of(v)
        await load(admin, "root", ROOT_POLICY, tmp_path)
        await load(admin, "app", APP_POLICY, tmp_path)
        await admin.set(DB_PW, "before")
        run_vault_backup(repo, v.settings, kind="full")
        await admin.set(DB_PW, "after")

        wrong = settings_with_key(v, key_file(tmp_path, secrets.token_bytes(32)))
        with pytest.raises(VaultKeyError) as err:
            restore_vault(repo, wrong)
        message = str(err.value)
        assert "not the key" in message and "nothing was changed" in message
        assert "\n" not in message
        assert await admin.get(DB_PW) == b"after"

        missing = settings_with_key(v, tmp_path / "no-such-key-file")
        with pytest.raises(VaultKeyError) as err:
            restore_vault(repo, missing)
        assert "not found" in str(err.value)
        assert await admin.get(DB_PW) == b"after"


async def test_a_corrupt_backup_replaces_nothing(
    make_db: MakeDb, repo: Repository, tmp_path: Path
) -> None:
    async with vault_on(make_db) as v:
        admin = admin_of(v)
        await load(admin, "root", ROOT_POLICY, tmp_path)
        await load(admin, "app", APP_POLICY, tmp_path)
        await admin.set(DB_PW, "before")
        info = run_vault_backup(repo, v.settings, kind="full")
        await admin.set(DB_PW, "after")
        root = Path(repo.url.removeprefix("file://"))
        victim = root / "data" / info.backup_id / "secrets.rows.jsonl"
        raw = bytearray(victim.read_bytes())
        raw[-5] ^= 0xFF
        victim.write_bytes(bytes(raw))
        with pytest.raises(VaultRestoreError) as err:
            restore_vault(repo, v.settings)
        assert "corrupt object secrets.rows.jsonl" in str(err.value)
        assert "nothing was changed" in str(err.value)
        assert await admin.get(DB_PW) == b"after"
        wait_vault_healthy(v.settings, 10)


async def test_wrong_key_is_caught_by_decrypting_when_the_check_value_is_absent(
    make_db: MakeDb, repo: Repository, tmp_path: Path
) -> None:
    """Even without the stored check value, restore decrypts every secret before replacing."""
    async with vault_on(make_db) as v:
        admin = admin_of(v)
        await load(admin, "root", ROOT_POLICY, tmp_path)
        await load(admin, "app", APP_POLICY, tmp_path)
        await admin.set(DB_PW, "before")
        conn = await asyncpg.connect(v.settings.vault.dsn)
        try:
            await conn.execute("DELETE FROM vault_meta")
        finally:
            await conn.close()
        info = run_vault_backup(repo, v.settings, kind="full")
        assert info.meta["key_check"] is None
        await admin.set(DB_PW, "after")
        wrong = settings_with_key(v, key_file(tmp_path, secrets.token_bytes(32)))
        with pytest.raises(VaultKeyError) as err:
            restore_vault(repo, wrong)
        assert "does not open" in str(err.value)
        assert await admin.get(DB_PW) == b"after"


# --- in place, while the vault runs ------------------------------------------------------------


def clients_policy(names: list[str]) -> str:
    lines = []
    for n in names:
        for leaf in ("client-id", "client-secret", "previous-secret", "previous-valid-until"):
            lines.append(f"- !variable clients/{n}/{leaf}")
    return "- !policy\n  id: payment-system\n  body:\n" + "".join(f"  {x}\n" for x in lines)


async def test_in_place_restore_while_serving_warns_about_an_emergency_rotation(
    make_db: MakeDb, repo: Repository, tmp_path: Path
) -> None:
    names = ["acme", "globex", "initech"]
    async with vault_on(make_db) as v:
        admin = admin_of(v)
        created = await load(admin, "root", clients_policy(names) + "- !host ops\n", tmp_path)
        assert created["version"] >= 1
        base = "payment-system/clients"
        for n in names:
            await admin.set(f"{base}/{n}/client-id", f"{n}-0123456789abcdef")
            await admin.set(f"{base}/{n}/client-secret", f"old-secret-{n}")
            await admin.set(f"{base}/{n}/previous-secret", f"unknown-{n}")
            await admin.set(f"{base}/{n}/previous-valid-until", EPOCH)
        run_vault_backup(repo, v.settings, kind="full")
        before = await state_of(admin)

        # An emergency-style rotation (as `payapi credentials rotate emergency` does it),
        # and the API key of a host rotated too.
        for n in names:
            await admin.set(f"{base}/{n}/previous-valid-until", EPOCH)
            await admin.set(f"{base}/{n}/previous-secret", f"random-{n}")
            await admin.set(f"{base}/{n}/client-secret", f"new-secret-{n}")
        await admin.rotate_other_api_key(Resource("host", "ops"))
        assert await admin.get(f"{base}/acme/client-secret") == b"new-secret-acme"

        notes: list[str] = []
        result = restore_vault(repo, v.settings, journal=Journal(note_sink(notes.append)))
        assert result.in_place and result.healthy is True
        emergency = [w for w in result.warnings if "emergency rotation" in w]
        assert len(emergency) == 1, result.warnings
        assert "emergency rotation of 3 clients on" in emergency[0]
        assert "brings back rotated credentials" in emergency[0]
        assert any("API keys of 1 roles" in w and "host:ops" in w for w in result.warnings)
        assert any("secret versions newer than this backup" in w for w in result.warnings)

        # The running vault serves the backup's values at once, and is healthy.
        wait_vault_healthy(v.settings, 10)
        assert await state_of(admin) == before
        assert await admin.get(f"{base}/acme/client-secret") == b"old-secret-acme"

        # After a restore the vault is a new lineage: the next incremental is a full.
        nxt = run_vault_backup(repo, v.settings, kind="incremental")
        assert nxt.type == "full" and "restored since" in nxt.meta["promotion_reason"]


async def test_lost_vault_restore_warns_from_the_audit_log(
    make_db: MakeDb, repo: Repository, tmp_path: Path
) -> None:
    """The vault database is gone: rotations after the backup are found in the audit log."""
    async with vault_on(make_db) as v:
        admin = admin_of(v)
        await load(admin, "root", ROOT_POLICY, tmp_path)
        await load(admin, "app", APP_POLICY, tmp_path)
        await admin.set(DB_PW, "pw-1")
        run_vault_backup(repo, v.settings, kind="full")
    payment_dsn = make_db()
    await sapi_migrate(payment_dsn)
    conn = await asyncpg.connect(payment_dsn)
    try:
        await audit_append(
            conn,
            type="credentials.emergency_rotation",
            actor="payapi-cli",
            subject="all-clients",
            details={"reason": "drill", "clients": 5, "failed": 0, "tokens_revoked": 0},
            head_file=None,
        )
    finally:
        await conn.close()
    settings = v.settings.model_copy(deep=True)
    settings.vault.dsn = ""  # the live vault database is lost
    settings.postgres.payment_dsn = payment_dsn
    assert v.settings.vault.data_key_file is not None
    settings.vault.data_key_file = key_file(tmp_path, v.data_key)
    target = make_db()
    result = restore_vault(repo, settings, target_dsn=target)
    assert any("emergency rotation of 5 clients on" in w for w in result.warnings)
    assert any("could not be compared" in w for w in result.warnings)
    async with serve(target, settings.vault.data_key_file) as url:
        assert await admin_of(v, url).get(DB_PW) == b"pw-1"


async def test_restore_into_a_database_that_holds_a_vault_is_refused(
    make_db: MakeDb, repo: Repository
) -> None:
    async with vault_on(make_db) as v, vault_on(make_db) as other:
        run_vault_backup(repo, v.settings, kind="full")
        with pytest.raises(VaultRestoreError) as err:
            restore_vault(repo, v.settings, target_dsn=other.settings.vault.dsn)
        assert "already holds a vault" in str(err.value)


async def test_unknown_backup_id_is_a_clear_error(make_db: MakeDb, repo: Repository) -> None:
    async with vault_on(make_db) as v:
        with pytest.raises(VaultRestoreError) as err:
            restore_vault(repo, v.settings)
        assert "no vault backup" in str(err.value)
        info = run_vault_backup(repo, v.settings, kind="full")
        bogus = info.backup_id[:-6] + "ffffff"
        with pytest.raises(VaultRestoreError) as err:
            restore_vault(repo, v.settings, backup_id=bogus)
        assert "not found" in str(err.value)


# --- no plaintext ----------------------------------------------------------------------------


async def test_no_secret_value_in_the_repository(
    make_db: MakeDb, repo: Repository, tmp_path: Path
) -> None:
    markers = [f"PLAINTEXT-{secrets.token_hex(8)}" for _ in range(3)]
    async with vault_on(make_db) as v:
        admin = admin_of(v)
        await load(admin, "root", ROOT_POLICY, tmp_path)
        await load(admin, "app", APP_POLICY, tmp_path)
        await admin.set(DB_PW, markers[0])
        run_vault_backup(repo, v.settings, kind="full")
        await admin.set(API_TOKEN, markers[1])
        await admin.set(DB_PW, markers[2])
        run_vault_backup(repo, v.settings, kind="incremental")

        needles = [m.encode() for m in markers]
        needles += [v.data_key, base64.b64encode(v.data_key), v.admin_api_key.encode()]
        root = Path(repo.url.removeprefix("file://"))
        stored = b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())
        # Decrypted objects hold ciphertexts and digests only.
        plain = b""
        for b in repo.list_backups(COMPONENT):
            manifest = repo.read_manifest(b.backup_id)
            assert "key_check" in manifest.meta  # a one-way check value, not the key
            for entry in manifest.objects:
                plain += b"".join(repo.iter_object(b.backup_id, entry.name))
        assert b"app/db/password" in plain  # the objects were really read
        for needle in needles:
            assert needle not in stored
            assert needle not in plain


async def test_restore_waits_for_nobody_when_the_lock_is_held(
    make_db: MakeDb, repo: Repository
) -> None:
    from payapi.backup.engines import restore_lock

    async with vault_on(make_db) as v:
        run_vault_backup(repo, v.settings, kind="full")
        lock = Lock(repo.lock_store())
        with (
            lock.hold(lock_name(COMPONENT), "retention purge (test)"),
            pytest.raises(LockHeld) as err,
            restore_lock(repo, COMPONENT, "vault restore", wait=0),
        ):
            pytest.fail("the restore ran while a purge held the lock")
        assert "retention purge (test)" in str(err.value)
