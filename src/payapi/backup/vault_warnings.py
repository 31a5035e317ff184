"""What a vault restore would undo: the staged backup compared with the live vault (newer
secret versions, emergency rotations, rotated API keys, resources created since) and with
the audit log's emergency rotations. Metadata only: no secret value leaves the database,
except the rotation markers (``previous-valid-until``) that are opened to spot an
emergency rotation."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta

import asyncpg
import orjson

from payapi.backup.manifest import Manifest
from payapi.backup.vault_db import VaultDb
from payapi.backup.vault_format import (
    BY_NAME,
    VaultBackupError,
    VaultMeta,
    utc,
)
from payapi.core.settings import Settings
from payapi.vault.crypto import DecryptionError, SecretCipher

# Changes closer together than this are one rotation event in the warnings.
_EVENT_GAP = timedelta(minutes=10)


_CMP_TABLES = {
    "payapi_cmp_secrets": "resource_id text, version int, created_at timestamptz, sealed bytea",
    "payapi_cmp_credentials": "role_id text, api_key_sha256 bytea, rotated_at timestamptz",
    "payapi_cmp_resources": "resource_id text, kind text",
}
_PVU = "/previous-valid-until"


def _cmp_queries() -> dict[str, str]:
    return {
        "payapi_cmp_secrets": f"""SELECT resource_id, version, created_at,
                   CASE WHEN resource_id LIKE '%{_PVU}' THEN sealed END AS sealed
               FROM secrets""",  # noqa: S608 - constants only
        "payapi_cmp_credentials": "SELECT role_id, api_key_sha256, rotated_at FROM credentials",
        "payapi_cmp_resources": "SELECT resource_id, kind FROM resources",
    }


def _load_live(
    db: VaultDb, settings: Settings, in_place: bool, dsn: str, say: Callable[[str], None]
) -> bool:
    """Copy what the live vault holds now (metadata only) into comparison tables."""
    for name, cols in _CMP_TABLES.items():
        db.execute(f"DROP TABLE IF EXISTS pg_temp.{name}")
        db.execute(f"CREATE TEMP TABLE {name} ({cols})")
    if in_place:
        for name, sql in _cmp_queries().items():
            db.execute(f"INSERT INTO {name} {sql}")
        return True
    live_dsn = settings.vault.dsn or settings.postgres.vault_dsn
    if not live_dsn or live_dsn == dsn:
        return False
    try:
        live = VaultDb(live_dsn, "the live vault database", timeout=5.0)
    except VaultBackupError as exc:
        say(f"vault: live vault not compared: {exc}")
        return False
    with live:
        try:
            tr = live.conn.transaction(isolation="repeatable_read", readonly=True)
            live.run(tr.start())
            try:
                for name, sql in _cmp_queries().items():
                    names = [c.split()[0] for c in _CMP_TABLES[name].split(", ")]
                    for batch in live.batches(sql):
                        db.copy_records(name, [tuple(r) for r in batch], names)
            finally:
                live.run(tr.rollback())
        except asyncpg.PostgresError as exc:  # e.g. not a vault database
            say(f"vault: live vault not compared ({type(exc).__name__})")
            return False
    return True


def _clusters(times: list[tuple[datetime, str]]) -> list[tuple[datetime, set[str]]]:
    """Group (time, name) pairs into events separated by more than ``_EVENT_GAP``."""
    out: list[tuple[datetime, set[str]]] = []
    last: datetime | None = None
    for at, name in sorted(times):
        if last is None or at - last > _EVENT_GAP:
            out.append((at, set()))
        out[-1][1].add(name)
        last = at
    return out


def restore_warnings(
    db: VaultDb,
    settings: Settings,
    chain: list[Manifest],
    data_key: bytes,
    in_place: bool,
    dsn: str,
    say: Callable[[str], None],
) -> list[str]:
    """What restoring this state undoes, compared with the live vault and the audit log."""
    warnings: list[str] = []
    snapshot_at = VaultMeta.of(chain[-1]).snapshot_time
    stage_secrets = BY_NAME["secrets"].stage
    stage_resources = BY_NAME["resources"].stage
    stage_credentials = BY_NAME["credentials"].stage
    emergencies: list[tuple[datetime, set[str]]] = []
    if _load_live(db, settings, in_place, dsn, say):
        newer = db.fetch(
            f"""SELECT c.resource_id, c.version, c.created_at, c.sealed
                FROM payapi_cmp_secrets c
                JOIN {stage_resources} r ON r.resource_id = c.resource_id
                LEFT JOIN (SELECT resource_id, max(version) AS v FROM {stage_secrets}
                           GROUP BY resource_id) s ON s.resource_id = c.resource_id
                WHERE c.version > coalesce(s.v, 0)
                ORDER BY c.created_at"""  # noqa: S608
        )
        cipher = SecretCipher.from_data_key(data_key)
        from payapi.core.naming import CLIENTS_PREFIX
        from payapi.credentials.service import EPOCH

        pvu = re.compile(rf"^[^:]+:variable:{re.escape(CLIENTS_PREFIX)}/([^/]+){_PVU}$")
        emergency_times: list[tuple[datetime, str]] = []
        for r in newer:
            m = pvu.match(r["resource_id"])
            if m is None or r["sealed"] is None:
                continue
            try:
                value = cipher.open(r["resource_id"], int(r["version"]), bytes(r["sealed"]))
            except DecryptionError:
                continue
            if value.decode("utf-8", "replace") == EPOCH:
                emergency_times.append((r["created_at"], m.group(1)))
        emergencies = _clusters(emergency_times)
        for at, names in emergencies:
            warnings.append(
                f"this backup predates an emergency rotation of {len(names)} clients on "
                f"{utc(at)}: it brings back rotated credentials"
            )
        if newer:
            variables = {r["resource_id"] for r in newer}
            warnings.append(
                f"{len(variables)} variables have {len(newer)} secret versions newer than "
                f"this backup (the newest written {utc(newer[-1]['created_at'])}); "
                "restoring brings back their older values"
            )
        keys = db.fetch(
            f"""SELECT c.role_id FROM payapi_cmp_credentials c
                JOIN {stage_credentials} s ON s.role_id = c.role_id
                WHERE c.api_key_sha256 <> s.api_key_sha256 ORDER BY c.role_id"""  # noqa: S608
        )
        if keys:
            shown = ", ".join(r["role_id"] for r in keys[:5]) + (" ..." if len(keys) > 5 else "")
            warnings.append(
                f"the API keys of {len(keys)} roles were rotated after this backup: the "
                f"restored vault accepts their old keys and rejects the current ones ({shown})"
            )
        created = db.fetch(
            f"""SELECT c.kind, count(*) AS n FROM payapi_cmp_resources c
                WHERE NOT EXISTS (SELECT 1 FROM {stage_resources} s
                                  WHERE s.resource_id = c.resource_id)
                GROUP BY c.kind ORDER BY c.kind"""  # noqa: S608
        )
        if created:
            what = ", ".join(f"{r['n']} {r['kind']}s" for r in created)
            warnings.append(f"created after this backup, removed by restoring it: {what}")
    elif not in_place:
        warnings.append(
            "the live vault could not be compared with this backup: rotations after it "
            "are detected from the audit log only"
        )
    for name in _CMP_TABLES:
        db.execute(f"DROP TABLE IF EXISTS pg_temp.{name}")
    if snapshot_at is not None:
        warnings[:0] = _audit_warnings(settings, snapshot_at, emergencies, say)
    return warnings


def _audit_warnings(
    settings: Settings,
    snapshot_at: datetime,
    known: list[tuple[datetime, set[str]]],
    say: Callable[[str], None],
) -> list[str]:
    """Emergency rotations after ``snapshot_at`` in the audit log, unless already known."""
    dsn = settings.postgres.payment_dsn
    if not dsn:
        return []
    try:
        with VaultDb(dsn, "the audit log", timeout=5.0) as audit:
            rows = audit.fetch(
                """SELECT occurred_at, details::text AS details FROM audit_events
                   WHERE type = 'credentials.emergency_rotation' AND occurred_at > $1
                   ORDER BY occurred_at""",
                snapshot_at,
            )
    except VaultBackupError as exc:
        say(f"vault: audit log not consulted: {exc}")
        return []
    except asyncpg.PostgresError as exc:
        say(f"vault: audit log not consulted ({type(exc).__name__})")
        return []
    out: list[str] = []
    for r in rows:
        at: datetime = r["occurred_at"]
        if any(abs(at - k_at) <= _EVENT_GAP for k_at, _ in known):
            continue
        try:
            clients = int(orjson.loads(r["details"]).get("clients", 0))
        except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError):
            clients = 0
        out.append(
            f"this backup predates an emergency rotation of {clients} clients on "
            f"{utc(at)}: it brings back rotated credentials"
        )
    return out
