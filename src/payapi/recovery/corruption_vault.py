"""``recover corruption --component vault``: secret versions as they were before T.

The vault's database lives in the same PostgreSQL cluster as ``payment_db`` (the lab's
layout; checked by system identifier), so the copy recovered just before T beside
production (:func:`payapi.recovery.corruption.scratch_copy`) holds the vault too. For
every variable, the newest version before T (copy) is compared with the newest now
(live) by number and ciphertext digest; :func:`~payapi.recovery.corruption_plan.plan_vault`
decides.

History is never rewritten: a variable that changed after T gets its pre-T value back as
a NEW version (``store_secret``, which also prunes beyond ``versions_kept``), so the
corrupt versions stay visible to an investigation until pruned. A ciphertext cannot be
copied (each is bound to its resource id and version number), so the pre-T value is
opened with the vault's data key and sealed again for the new version, in memory only.

Secret values never leave this process: not in the plan file (ids, version numbers and a
12-hex-digit digest prefix), not in the audit event, not in an error message.
Apply is one transaction on the vault database with the same optimistic check as the
payments: each variable's newest version must still be the one the plan saw.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from payapi.core.errors import UsageError
from payapi.recovery.corruption import (
    Conn,
    CorruptionError,
    CorruptionRequest,
    Outcome,
    StalePlanError,
    audit_applied,
    check_time,
    connect,
    default_plan_file,
    payment_dsn,
    run,
    scratch_copy,
    scratch_dsn,
    scratch_json,
    write_plan,
)
from payapi.recovery.corruption_plan import SecretVersion, VaultPlan, plan_vault

if TYPE_CHECKING:
    from payapi.backup.repository import Repository
    from payapi.core.settings import Settings

_VERSIONS = """
SELECT s.resource_id, s.version, s.created_at, encode(sha256(s.sealed), 'hex') AS digest
FROM secrets s JOIN resources r ON r.resource_id = s.resource_id
WHERE r.kind = 'variable'
ORDER BY s.resource_id, s.version
"""
_VARIABLES = "SELECT resource_id FROM resources WHERE kind = 'variable'"
_SYSID = "SELECT system_identifier::text FROM pg_control_system()"


def vault_dsn(settings: Settings) -> str:
    dsn = settings.postgres.vault_dsn or settings.vault.dsn
    if not dsn:
        raise UsageError("postgres.vault_dsn (or vault.dsn) is not configured")
    return dsn


async def read_versions(conn: Conn) -> dict[str, list[SecretVersion]]:
    """Every variable (also one without versions) → its stored versions, oldest first."""
    out: dict[str, list[SecretVersion]] = {
        r["resource_id"]: [] for r in await conn.fetch(_VARIABLES)
    }
    for r in await conn.fetch(_VERSIONS):
        out.setdefault(r["resource_id"], []).append(
            SecretVersion(int(r["version"]), str(r["digest"]), r["created_at"])
        )
    return out


def vault_database(settings: Settings) -> str:
    """The vault database's name; CorruptionError when it is not in the cluster the
    database backups cover (then no copy of it just before T exists)."""
    pdsn, vdsn = payment_dsn(settings), vault_dsn(settings)

    async def where() -> str:
        p, v = await connect(pdsn), await connect(vdsn)
        try:
            if await p.fetchval(_SYSID) != await v.fetchval(_SYSID):
                raise CorruptionError(
                    "the vault database is not in the cluster the database backups cover: "
                    "no copy of it just before T can be recovered"
                )
            return str(await v.fetchval("SELECT current_database()"))
        finally:
            await p.close()
            await v.close()

    return run(where)


def plan_from_copy(
    settings: Settings, req: CorruptionRequest, copy_dsn: str, backup_id: str | None
) -> tuple[VaultPlan, dict[str, bytes]]:
    """Compare the running copy's vault (``copy_dsn``) with live: the plan, and the
    pre-T ciphertexts it restores (in memory only)."""
    vdsn = vault_dsn(settings)

    async def compare() -> tuple[VaultPlan, dict[str, bytes]]:
        old = await connect(copy_dsn)
        try:
            new = await connect(vdsn)
            try:
                before, now = await read_versions(old), await read_versions(new)
            finally:
                await new.close()
            plan = plan_vault(
                before,
                now,
                since=req.since,
                created_at=datetime.now(UTC),
                keep=req.keep_ids,
                backup_id=backup_id,
            )
            sealed: dict[str, bytes] = {}
            for r in plan.restores:
                sealed[r.resource_id] = bytes(
                    await old.fetchval(
                        "SELECT sealed FROM secrets WHERE resource_id = $1 AND version = $2",
                        r.resource_id,
                        r.before.version,
                    )
                )
            return plan, sealed
        finally:
            await old.close()

    return run(compare)


def plan_vault_correction(settings: Settings, repo: Repository, req: CorruptionRequest) -> Outcome:
    """Check the request, recover a copy just before T, compare the vault's versions,
    write the plan file. The pre-T ciphertexts to restore stay in ``Outcome.private``."""
    check_time(req.since, repo)
    database = vault_database(settings)
    with scratch_copy(repo, settings, req.since, req) as copy:
        with req.journal.step("comparing the copy's secret versions with live"):
            plan, sealed = plan_from_copy(
                settings, req, scratch_dsn(copy, database), copy.backup_id
            )
        scratch = scratch_json(copy)
    path, _digest = write_plan(plan, req.plan_file or default_plan_file("vault"))
    return Outcome(plan=plan, plan_file=path, scratch=scratch, private=sealed)


async def apply_vault_on(
    conn: Conn,
    plan: VaultPlan,
    sealed: Mapping[str, bytes],
    cipher: Any,
    *,
    keep: int,
) -> dict[str, int]:
    """One transaction: check each variable's newest version, then add the pre-T value
    as a new version. Returns variable → new version number."""
    from payapi.vault.service import store_secret

    new_versions: dict[str, int] = {}
    async with conn.transaction():
        for r in plan.restores:
            await conn.execute(
                "SELECT 1 FROM resources WHERE resource_id = $1 FOR UPDATE", r.resource_id
            )
            row = await conn.fetchrow(
                "SELECT version, encode(sha256(sealed), 'hex') AS digest FROM secrets "
                "WHERE resource_id = $1 ORDER BY version DESC LIMIT 1",
                r.resource_id,
            )
            seen = None if r.now is None else (r.now.version, r.now.sealed_sha256)
            current = None if row is None else (int(row["version"]), str(row["digest"]))
            if current != seen:
                raise StalePlanError(
                    f"variable {r.resource_id} changed since the plan was made; nothing was "
                    "changed (make a new plan)"
                )
        for r in plan.restores:
            value = cipher.open(r.resource_id, r.before.version, sealed[r.resource_id])
            new_versions[r.resource_id] = await store_secret(
                conn, cipher, resource_id=r.resource_id, value=value, keep=keep
            )
            del value
    return new_versions


def apply_vault(settings: Settings, outcome: Outcome) -> None:
    """Apply ``outcome``'s vault plan on live, then audit it."""
    from payapi.vault.crypto import SecretCipher, key_check_value, load_data_key
    from payapi.vault.db import KEY_CHECK_NAME

    plan = outcome.plan
    assert isinstance(plan, VaultPlan)
    key = load_data_key(settings.vault)
    cipher = SecretCipher.from_data_key(key)
    check = key_check_value(key)
    del key
    vdsn = vault_dsn(settings)

    async def go() -> dict[str, int]:
        conn = await connect(vdsn)
        try:
            stored = await conn.fetchval(
                "SELECT value FROM vault_meta WHERE name = $1", KEY_CHECK_NAME
            )
            if stored != check:
                raise CorruptionError(
                    "the configured vault data key is not the live vault's key; nothing was changed"
                )
            return await apply_vault_on(
                conn, plan, outcome.private, cipher, keep=settings.vault.versions_kept
            )
        finally:
            await conn.close()

    if not plan.empty:
        outcome.new_versions = run(go)
    outcome.applied = True
    outcome.private.clear()
    outcome.audit = audit_applied(settings, outcome)


def vault_summary(plan: VaultPlan) -> str:
    c = plan.counts()
    return (
        f"vault: {c['restored_rows']} variables get their pre-T value as a new version "
        f"({c['deleted_rows_restored']} whose pre-T version is no longer stored), "
        f"{c['kept_rows']} kept, {c['unchanged_rows']} unchanged"
        + (f", {c['missing_variables']} gone (not recreated)" if plan.missing else "")
    )
