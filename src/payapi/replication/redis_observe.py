"""Observing a region's Redis: which server Sentinel names primary, and that primary's
``INFO replication`` (its replicas, their offsets and lag). It decides nothing
(:mod:`payapi.ops.health` and :mod:`payapi.ops.rpo_cover` judge) and never raises for an
unreachable server: that is an observation, with why.

Without Sentinels (a DR region's single Redis, seeded from snapshots) the first
configured member is asked directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from payapi.core.errors import PayapiError
from payapi.core.topology import Region, Service
from payapi.systems.redis import ReplicationInfo, parse_url, replication_info, sentinel_master

__all__ = ["RedisObservation", "observe_redis"]


@dataclass(frozen=True)
class RedisObservation:
    """One region's Redis as seen at ``observed_at``."""

    region: str
    observed_at: datetime
    members: int  # configured Redis members
    sentinels: int  # configured Sentinels
    primary: str | None = None  # the member (or host:port) that answered as primary
    info: ReplicationInfo | None = None  # that server's INFO replication
    error: str | None = None  # why there is no info

    @property
    def configured(self) -> bool:
        return self.members > 0


def _addr(url: str) -> tuple[str, int]:
    params = parse_url(url)
    return str(params.get("host", "")), int(params.get("port", 6379))


def _utcnow() -> datetime:
    return datetime.now(UTC)


def observe_redis(
    region: Region, *, timeout: float = 1.0, clock: Callable[[], datetime] = _utcnow
) -> RedisObservation:
    members = region.members_of(Service.REDIS)
    base = RedisObservation(region.name, clock(), len(members), len(region.sentinels))
    if not members:
        return base
    target = members[0]
    if region.sentinels and region.sentinel_master:
        addr = sentinel_master(region.sentinels, region.sentinel_master, timeout=timeout)
        if addr is None:
            why = f"no Sentinel sees a running primary of {region.sentinel_master!r}"
            return replace(base, error=why)
        found = next((m for m in members if _addr(m.url) == addr), None)
        if found is None:
            why = "Sentinel names a server that is not a configured member"
            return replace(base, primary=f"{addr[0]}:{addr[1]}", error=why)
        target = found
    try:
        info = replication_info(target.url, timeout=timeout)
    except PayapiError as exc:
        return replace(base, primary=target.name, error=str(exc))
    return replace(base, primary=target.name, info=info)
