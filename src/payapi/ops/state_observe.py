"""Reading the platform for `payapi state document` (acting; :mod:`payapi.ops.state`
decides what the document says).

One region (``environment``, default the configured primary) is read: its health and
replication through :mod:`payapi.ops.health_observe` (which reuses
:mod:`payapi.replication.observe`: Patroni's members and each PostgreSQL's LSNs), the
payments of the member that leads its database, its vault's variables (as the vault
admin: the listing, never a value), its Redis keyspace (key names classified, never
values read), the audit chain's newest seq and the servers' versions.

A part that cannot be read is ``null`` in the document with an ``errors`` entry naming
the part (never a DSN or a secret): the document of a broken platform is still written,
and comparing it with a healthy one shows what is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from payapi import __version__
from payapi.core.plan import Plan
from payapi.core.settings import Settings, read_secret_file
from payapi.core.topology import Region, Service, topology_from_settings
from payapi.ops import health, health_observe
from payapi.ops.state import SCHEMA, PaymentRow, payments_summary, redis_summary, vault_summary

__all__ = ["document", "write_document"]

TIMEOUT = 5.0

_PAYMENTS_SQL = """
SELECT id::text AS id, client_id, amount, currency, status, reference, created_at,
       idempotency_key
FROM payments
"""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:200]


def _member_url(region: Region, service: Service, name: str | None) -> str | None:
    members = region.members_of(service)
    found = next((m for m in members if m.name == name), None)
    if found is None:
        found = region.leader_of(service) or (members[0] if members else None)
    return found.url if found is not None else None


async def _database(dsn: str) -> dict[str, Any]:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=TIMEOUT, command_timeout=120)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            rows = [
                PaymentRow(
                    id=r["id"],
                    client_id=r["client_id"],
                    amount=r["amount"],
                    currency=r["currency"],
                    status=r["status"],
                    reference=r["reference"],
                    created_at=r["created_at"],
                    idempotency_key=r["idempotency_key"],
                )
                async for r in conn.cursor(_PAYMENTS_SQL, prefetch=2000)
            ]
            try:
                head = await conn.fetchval("SELECT max(seq) FROM audit_events")
            except asyncpg.UndefinedTableError:
                head = None
            version = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    return {
        "payments": payments_summary(rows),
        "audit": {"head_seq": int(head) if head is not None else 0},
        "postgresql": str(version),
    }


async def _vault(settings: Settings, region: Region) -> dict[str, Any]:
    from payapi.vault.client import VaultClient

    urls = [m.url for m in region.members_of(Service.VAULT)] or settings.vault.endpoints()
    key = read_secret_file(settings.vault.admin_api_key_file, "vault admin API key")
    async with VaultClient(urls, settings.vault.account, settings.vault.admin_login, key) as v:
        resources = await v.list_resources(kind="variable")
    return vault_summary(resources)


def _redis(url: str) -> dict[str, Any]:
    from payapi.eapi.cachekeys import classify_key
    from payapi.systems.redis import client

    conn = client(url, TIMEOUT)
    try:
        kinds: dict[str, int] = {}
        for key in conn.scan_iter(count=1000):
            kind = classify_key(key if isinstance(key, bytes) else str(key).encode())
            kinds[kind] = kinds.get(kind, 0) + 1
        info = conn.info("server")
    finally:
        conn.close()
    out = redis_summary(kinds)
    out["version"] = str(info.get("redis_version", "unknown"))
    return out


def _replication(obs: health.HealthObservations) -> dict[str, Any]:
    region = obs.region
    out: dict[str, Any] = {}
    for pg in region.postgres:
        member = region.cluster.member(pg.member) if region.cluster is not None else None
        out[pg.member] = {
            "role": member.role if member is not None else None,
            "state": member.state if member is not None else None,
            "in_recovery": pg.in_recovery,
            "position": pg.position,
        }
    return out


def _part(errors: dict[str, str], name: str, fn: Callable[[], Any]) -> Any:
    """``fn()``, or None with why: the drivers' own error classes (asyncpg, redis, httpx)
    as well as ours; their messages name servers and users, never a password."""
    try:
        return fn()
    except Exception as exc:
        errors[name] = _one_line(exc)
        return None


def document(
    settings: Settings,
    plan: Plan,
    environment: str | None = None,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> dict[str, Any]:
    """The state of one region (see :mod:`payapi.ops.state` for the shape).
    :class:`~payapi.core.topology.UnknownRegionError` (exit 2) for an unknown name."""
    topology = topology_from_settings(settings)
    region = topology.region(environment) if environment is not None else topology.primary
    taken_at = clock()
    obs = health_observe.observe(settings, region.name)
    report = health.assess(obs, health_observe.context(settings, plan))
    errors: dict[str, str] = {}

    leader = obs.region.leader
    dsn = _member_url(region, Service.POSTGRES, leader.member if leader else None)
    db = _part(errors, "postgres", lambda: asyncio.run(_database(dsn))) if dsn else None
    vault = _part(errors, "vault", lambda: asyncio.run(_vault(settings, region)))
    redis_url = _member_url(region, Service.REDIS, obs.redis.primary if obs.redis else None)
    redis = _part(errors, "redis", lambda: _redis(redis_url)) if redis_url else None
    redis_version = redis.pop("version") if redis else None
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "taken_at": taken_at.isoformat(timespec="milliseconds"),
        "environment": region.name,
        "payments": db["payments"] if db else None,
        "vault": vault,
        "redis": redis,
        "audit": db["audit"] if db else None,
        "components": {n: c.to_json() for n, c in report.components.items()},
        "replication": _replication(obs),
        "versions": {
            "payapi": __version__,
            "postgresql": db["postgresql"] if db else None,
            "redis": redis_version,
        },
    }
    if errors:
        doc["errors"] = errors
    return doc


def write_document(path: Path, doc: dict[str, Any]) -> None:
    """Write atomically: a temp file in the same folder, fsynced, renamed over ``path``
    (a reader sees the old document or the new one, never half of one)."""
    path = path.expanduser()
    folder = path.parent if str(path.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(doc, indent=2, sort_keys=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
