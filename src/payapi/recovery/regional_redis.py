"""The Redis of a region taking over: the newest snapshot of the primary's Redis restored
into it, or, without a snapshot, the Redis as it is (a cache: clients authenticate again).

The DR region's Redis does not replicate from the primary region (the seed: "periodic
snapshots to the DR region"). At a regional failover, and whenever an operator or the
schedule seeds it (``payapi region seed-redis``), the newest Redis snapshot in the
backup repository is restored into it with :func:`payapi.backup.redis_restore.restore_redis`:
its verification entries dropped, and tokens kept only when the audit log (replicated to
the region's database) shows them unrevoked since the snapshot, so that a failover never
resurrects a revoked token while bearer tokens issued before the outage keep working.

Restoring in place needs the region's own configuration (``[regions.NAME.sapi]
config_file``, as the lab writes it) with ``[redis] control``; without it (a production
region whose Redis someone else operates) the step only checks that a Redis answers.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import redis

from payapi.core.errors import PayapiError
from payapi.core.journal import Journal
from payapi.core.settings import RegionSettings, Settings, load_settings
from payapi.systems.redis import client

__all__ = ["RegionRedisError", "redis_answers", "region_own_settings", "seed_redis"]


class RegionRedisError(PayapiError):
    """The region's Redis could not be made ready (exit 1)."""


def _any_server(dsn: str) -> str:
    """``dsn`` accepting a standby too (``target_session_attrs=any``)."""
    parts = urlsplit(dsn)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "target_session_attrs"]
    query.append(("target_session_attrs", "any"))
    return urlunsplit(parts._replace(query=urlencode(query)))


def region_own_settings(region: RegionSettings) -> Settings | None:
    """The configuration the region's services run with, when it is on this host."""
    path = region.sapi.config_file or region.eapi.config_file
    return load_settings(path) if path is not None and path.exists() else None


def redis_answers(region: RegionSettings) -> str:
    for m in region.redis:
        try:
            conn = client(m.url, 2.0)
            try:
                answered = bool(conn.ping())
            finally:
                conn.close()
        except (redis.RedisError, OSError):
            answered = False
        if answered:
            return f"{m.name} answers"
    raise RegionRedisError("no Redis of the region answers")


def seed_redis(region: RegionSettings, journal: Journal | None = None) -> str:
    """Restore the newest Redis snapshot into the region's Redis (one line on what was
    done); only check that it answers when it cannot be restored in place."""
    from payapi.backup.errors import NotFound
    from payapi.backup.redis_backup import COMPONENT
    from payapi.backup.redis_restore import restore_redis, revocations_from_audit
    from payapi.backup.service import component_lock, open_repository
    from payapi.systems.redis import redis_control

    own = region_own_settings(region)
    if own is None or own.redis.control == "none" or own.redis.uses_sentinel:
        return redis_answers(region) + " (not restored here: no local control of it)"
    # The audit log is only read, and a standby region's database is read-only.
    dsn = _any_server(own.postgres.payment_dsn) if own.postgres.payment_dsn else ""

    def revocations(since: datetime) -> Any:
        if not dsn:
            return None
        try:
            return asyncio.run(revocations_from_audit(dsn, since))
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return None  # unknown revocations: every token is dropped, the safe side

    try:
        with (
            open_repository(own) as repo,
            component_lock(repo, COMPONENT, "regional redis seed", wait=timedelta(seconds=30)),
        ):
            if not repo.list_backups(COMPONENT):
                answers = redis_answers(region)
                return f"{answers}: no Redis snapshot yet, it serves as it is (a cache)"
            result = restore_redis(
                repo,
                own.redis,
                redis_control(own.redis),
                revocations=revocations,
                journal=journal,
            )
    except NotFound as exc:
        raise RegionRedisError(f"redis seed: {exc}") from None
    data = result.to_json()
    return (
        f"restored snapshot {data['backup_id']}: {data['final_keys']} keys, tokens {data['tokens']}"
    )
