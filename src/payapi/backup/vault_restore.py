"""Restoring the vault from a backup chain: stage, check the data key, compare, replace.

The chain (full + incrementals) is rebuilt in temporary staging tables in the target
database; the configured data key is then checked against the backup's key check value
AND used to decrypt every staged secret version. Only then, in one transaction (tracking
switched off, a new lineage started), the vault tables are replaced. A missing or wrong
key is one clear error and nothing is changed. In place, the running vault keeps serving
(it caches nothing from its tables), so it answers its health check afterwards. Before
replacing, :mod:`payapi.backup.vault_warnings` compares the staged state with the live
vault and the audit log.

The caller holds the ``vault`` component's lock (:func:`payapi.backup.engines.restore_lock`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import httpx

from payapi.backup.errors import RepositoryError
from payapi.backup.manifest import Manifest
from payapi.backup.repository import Repository
from payapi.backup.vault_db import VaultDb, columns_of
from payapi.backup.vault_format import (
    BY_NAME,
    COMPONENT,
    SUMMARY_SQL,
    TABLES,
    VaultBackupError,
    VaultKeyError,
    VaultMeta,
    VaultRestoreError,
    chain_of,
    describe_dsn,
    json_batches,
    lines,
    pg_error,
    vault_dsn,
)
from payapi.backup.vault_warnings import restore_warnings
from payapi.core.journal import Journal
from payapi.core.logs import get_logger
from payapi.core.settings import ConfigError, Settings
from payapi.vault import db as vault_db
from payapi.vault.crypto import DecryptionError, SecretCipher, key_check_value, load_data_key

__all__ = ["VaultRestoreResult", "restore_vault", "vault_url", "wait_vault_healthy"]

log = get_logger("payapi.backup.vault")

# A restore in place waits at most this long for the vault's own transactions to finish.
_LOCK_TIMEOUT = "30s"


# --------------------------------------------------------------------------- results


@dataclass
class VaultRestoreResult:
    """What a restore did. ``warnings`` are for the operator (and the CLI's output)."""

    backup_id: str
    chain: list[str]
    in_place: bool
    target: str
    snapshot_at: datetime | None
    counts: dict[str, int]
    rows: dict[str, int]
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    healthy: bool | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "backup_id": self.backup_id,
            "chain": list(self.chain),
            "component": COMPONENT,
            "in_place": self.in_place,
            "target": self.target,
            "snapshot_at": self.snapshot_at.isoformat() if self.snapshot_at else None,
            "counts": dict(self.counts),
            "rows": dict(self.rows),
            "warnings": list(self.warnings),
            "seconds": self.seconds,
            "healthy": self.healthy,
        }


def _key_source(settings: Settings) -> str:
    if settings.vault.data_key_file is not None:
        return f"key file {settings.vault.data_key_file}"
    return f"${settings.vault.data_key_env}"


def _load_key(settings: Settings) -> bytes:
    try:
        return load_data_key(settings.vault)
    except ConfigError as exc:
        raise VaultKeyError(f"vault restore: {exc}; nothing was changed") from None


def _wrong_key(settings: Settings, what: str) -> VaultKeyError:
    return VaultKeyError(
        f"vault restore: the vault data key from {_key_source(settings)} is not the key "
        f"{what} was sealed with (configure the escrowed data key); nothing was changed"
    )


def restore_vault(
    repo: Repository,
    settings: Settings,
    *,
    backup_id: str | None = None,
    target_dsn: str | None = None,
    journal: Journal | None = None,
    health_timeout: float | None = 60.0,
    keep_alive: Callable[[], None] = lambda: None,
) -> VaultRestoreResult:
    """Rebuild the vault database from ``backup_id`` (default: the newest) and its chain.

    In place when ``target_dsn`` is None (the configured vault database, replaced in one
    transaction while the vault keeps serving; then, if ``vault.url`` is configured and
    ``health_timeout`` is not None, the vault's health check is awaited: ``healthy`` says
    how that went, and a vault that did not answer adds a warning). With ``target_dsn``,
    into that database, which must hold no vault yet. Confirmation is the caller's business.

    Raises :class:`VaultKeyError` when the data key is missing or wrong and
    :class:`VaultRestoreError` for anything else; in both cases nothing was replaced.
    """
    start = time.monotonic()
    say = (journal or Journal.silent()).note
    data_key = _load_key(settings)
    chain = chain_of(repo, backup_id)
    last = chain[-1]
    expected = VaultMeta.of(last).key_check
    if expected and expected != key_check_value(data_key):
        raise _wrong_key(settings, f"backup {last.backup_id}")
    in_place = target_dsn is None
    dsn = target_dsn if target_dsn is not None else vault_dsn(settings)
    say(
        "vault: restoring "
        + " + ".join(m.backup_id for m in chain)
        + (" in place" if in_place else f" into {describe_dsn(dsn)}")
    )
    try:
        with VaultDb(dsn, "the target vault database") as db:
            result = _restore(repo, settings, db, chain, data_key, in_place, dsn, keep_alive, say)
    except VaultRestoreError:
        raise
    except (VaultBackupError, RepositoryError) as exc:
        raise VaultRestoreError(f"vault restore: {exc}; nothing was changed") from None
    except asyncpg.PostgresError as exc:
        raise VaultRestoreError(
            f"vault restore failed in the database ({pg_error(exc)}); nothing was changed"
        ) from None
    if in_place and settings.vault.url and health_timeout is not None:
        try:
            wait_vault_healthy(settings, health_timeout)
            result.healthy = True
            say("vault: health check OK")
        except VaultBackupError as exc:
            result.healthy = False
            result.warnings.append(str(exc))
    result.seconds = round(time.monotonic() - start, 3)
    log.info(
        "vault_restored",
        backup_id=result.backup_id,
        chain=result.chain,
        in_place=in_place,
        target=result.target,
        warnings=len(result.warnings),
        healthy=result.healthy,
    )
    return result


def _restore(
    repo: Repository,
    settings: Settings,
    db: VaultDb,
    chain: list[Manifest],
    data_key: bytes,
    in_place: bool,
    dsn: str,
    keep_alive: Callable[[], None],
    say: Callable[[str], None],
) -> VaultRestoreResult:
    last = chain[-1]
    applied = db.run(vault_db.migrate(db.conn))
    if applied:
        say(f"vault: created the vault schema ({', '.join(applied)})")
    if not in_place:
        present = int(db.fetchval("SELECT count(*) FROM accounts"))
        if present:
            raise VaultRestoreError(
                f"the target database {describe_dsn(dsn)} already holds a vault "
                f"({present} accounts); restore in place, or into an empty database"
            )
    columns = {t.name: columns_of(db, t.name) for t in TABLES}
    _stage(repo, db, chain, columns, keep_alive, say)
    _check_key(db, settings, data_key, last.backup_id, say)
    warnings = restore_warnings(db, settings, chain, data_key, in_place, dsn, say)
    rows = _replace(db, chain, columns)
    summary = db.fetchrow(SUMMARY_SQL)
    assert summary is not None
    snapshot_at = VaultMeta.of(last).snapshot_time
    return VaultRestoreResult(
        backup_id=last.backup_id,
        chain=[m.backup_id for m in chain],
        in_place=in_place,
        target=describe_dsn(dsn),
        snapshot_at=snapshot_at,
        counts={k: int(v) for k, v in dict(summary).items()},
        rows=rows,
        warnings=warnings,
    )


def _stage(
    repo: Repository,
    db: VaultDb,
    chain: list[Manifest],
    columns: dict[str, list[str]],
    keep_alive: Callable[[], None],
    say: Callable[[str], None],
) -> None:
    """Rebuild the chain's final state in temporary tables (no foreign keys, no triggers)."""
    for table in TABLES:
        db.execute(f"DROP TABLE IF EXISTS pg_temp.{table.stage}")
        db.execute(
            f"CREATE TEMP TABLE {table.stage} (LIKE {table.name} INCLUDING DEFAULTS "
            "INCLUDING INDEXES)"
        )
    for manifest in chain:
        tables = VaultMeta.of(manifest).tables
        for table in TABLES:
            entry = tables.get(table.name)
            if entry is None:
                raise VaultRestoreError(
                    f"backup {manifest.backup_id} has no data for table {table.name}"
                )
            cols = list(entry.columns)
            unknown = sorted(set(cols) - set(columns[table.name]))
            if unknown:
                raise VaultRestoreError(
                    f"backup {manifest.backup_id} has columns {', '.join(unknown)} in "
                    f"{table.name} that this vault schema lacks (restore with a newer payapi)"
                )
            col_sql = ", ".join(cols)
            if manifest.type == "full" or entry.replace:
                db.execute(f"TRUNCATE {table.stage}")
            elif manifest.entry(table.keys_object) is not None:
                for batch, _n in json_batches(
                    lines(repo.iter_object(manifest.backup_id, table.keys_object))
                ):
                    db.execute(
                        f"DELETE FROM {table.stage} s USING json_populate_recordset("  # noqa: S608
                        f"NULL::{table.stage}, $1::json) k WHERE {table.pk_join('s', 'k')}",
                        batch,
                    )
                keep_alive()
            count = 0
            for batch, n in json_batches(
                lines(repo.iter_object(manifest.backup_id, table.rows_object))
            ):
                db.execute(
                    f"INSERT INTO {table.stage} ({col_sql}) SELECT {col_sql} "  # noqa: S608
                    f"FROM json_populate_recordset(NULL::{table.stage}, $1::json)",
                    batch,
                )
                count += n
            keep_alive()
            if count != entry.rows:
                raise VaultRestoreError(
                    f"backup {manifest.backup_id}: {table.name} holds {count} rows, "
                    f"its manifest says {entry.rows}"
                )
        say(f"vault: staged {manifest.type} backup {manifest.backup_id}")


def _check_key(
    db: VaultDb, settings: Settings, data_key: bytes, backup_id: str, say: Callable[[str], None]
) -> None:
    """The configured key must match the backup's check value AND open every secret."""
    stored = db.fetchval(
        f"SELECT value FROM {BY_NAME['vault_meta'].stage} WHERE name = $1",  # noqa: S608
        vault_db.KEY_CHECK_NAME,
    )
    if stored is not None and stored != key_check_value(data_key):
        raise _wrong_key(settings, f"backup {backup_id}")
    cipher = SecretCipher.from_data_key(data_key)
    checked = 0
    tr = db.conn.transaction()
    db.run(tr.start())
    try:
        for batch in db.batches(
            f"SELECT resource_id, version, sealed FROM {BY_NAME['secrets'].stage}"  # noqa: S608
        ):
            for r in batch:
                try:
                    cipher.open(r["resource_id"], int(r["version"]), bytes(r["sealed"]))
                except DecryptionError:
                    raise _wrong_key(
                        settings,
                        f"the secrets of backup {backup_id} ({r['resource_id']} version "
                        f"{r['version']} does not open)",
                    ) from None
                checked += 1
    finally:
        db.run(tr.rollback())
    say(f"vault: data key checked: {checked} secret versions decrypt")


def _replace(db: VaultDb, chain: list[Manifest], columns: dict[str, list[str]]) -> dict[str, int]:
    """Replace the vault's tables with the staged state, in one transaction."""
    names = ", ".join(t.name for t in TABLES)
    rows: dict[str, int] = {}
    tr = db.conn.transaction()
    db.run(tr.start())
    try:
        db.execute("SET LOCAL payapi.vault_restore = 'on'")
        db.execute(f"SET LOCAL lock_timeout = '{_LOCK_TIMEOUT}'")
        db.execute(
            f"LOCK TABLE {names}, vault_changes, vault_backup_state IN ACCESS EXCLUSIVE MODE"
        )
        db.execute(f"TRUNCATE {names}, vault_changes")
        for table in TABLES:
            cols = ", ".join(c for c in columns[table.name])
            status = db.execute(
                f"INSERT INTO {table.name} ({cols}) SELECT {cols} FROM {table.stage}"  # noqa: S608
            )
            rows[table.name] = int(status.rsplit(" ", 1)[-1])
        db.execute(
            """UPDATE vault_backup_state SET lineage = gen_random_uuid()::text,
                   pruned_below = '0'::xid8, restored_at = now(), restored_from = $1""",
            chain[-1].backup_id,
        )
        db.execute("SET CONSTRAINTS ALL IMMEDIATE")  # deferred FKs fail here, not at COMMIT
        db.run(tr.commit())
    except BaseException:
        db.run(tr.rollback())
        raise
    for table in TABLES:
        db.execute(f"DROP TABLE IF EXISTS pg_temp.{table.stage}")
    return rows


# --------------------------------------------------------------------------- health


def vault_url(settings: Settings) -> str:
    url = settings.vault.url or f"http://{settings.vault.host}:{settings.vault.port}"
    return url.rstrip("/")


def wait_vault_healthy(settings: Settings, timeout: float = 60.0) -> None:
    """Wait until the vault's ``/health`` answers ``{"status": "ok"}``; raise after ``timeout``."""
    url = vault_url(settings) + "/health"
    deadline = time.monotonic() + timeout
    last = "no answer"
    with httpx.Client(timeout=5.0, trust_env=False) as http:
        while True:
            try:
                resp = http.get(url)
                if resp.status_code == 200 and resp.json().get("status") == "ok":
                    return
                last = f"HTTP {resp.status_code}"
            except (httpx.HTTPError, ValueError) as exc:
                last = type(exc).__name__
            if time.monotonic() >= deadline:
                raise VaultBackupError(
                    f"the vault at {vault_url(settings)} did not answer its health check "
                    f"within {timeout:.0f}s (last: {last})"
                )
            time.sleep(0.25)
