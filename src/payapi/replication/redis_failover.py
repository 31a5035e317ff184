"""`payapi failover --component redis`: Sentinel promotes a replica of the region's Redis.

Sentinel decides which replica (its own election, by replica priority and offset), so
``--to`` is refused for Redis. When the primary is up this is the lossless switchover of
:func:`payapi.systems.redis.sentinel_failover` (writes paused until every online replica
has the whole stream, then ``SENTINEL FAILOVER``); when it is down, a failover. With
``--switchover`` a primary that is down is refused: a planned switchover needs one.

:func:`prepare` observes and decides and prints nothing; :func:`run` acts, timed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from payapi.core.hostport import parse_hostport
from payapi.core.journal import Journal
from payapi.core.topology import Region, Service
from payapi.systems.redis import parse_url, sentinel_failover, sentinel_master

__all__ = ["PreparedRedis", "member_at", "prepare", "run"]


@dataclass(frozen=True)
class PreparedRedis:
    region: Region
    sentinels: tuple[str, ...]
    master_name: str
    old: tuple[str, int] | None  # the primary Sentinel names, None: none it believes up
    password: str | None  # the Redis servers' (from a member URL), never printed
    timeout: float
    started: float
    steps: tuple[dict[str, Any], ...]

    def __repr__(self) -> str:  # the password stays out of any log or traceback
        return f"PreparedRedis(region={self.region.name!r}, master={self.master_name!r})"


def member_at(region: Region, addr: tuple[str, int] | None) -> str | None:
    """The configured Redis member at ``addr`` (by its URL's host:port), else host:port."""
    if addr is None:
        return None
    for m in region.members_of(Service.REDIS):
        params = parse_url(m.url)
        if (str(params.get("host", "")), int(params.get("port", 6379))) == addr:
            return m.name
    return f"{addr[0]}:{addr[1]}"


def _password(region: Region) -> str | None:
    for m in region.members_of(Service.REDIS):
        password = parse_url(m.url).get("password")
        if password:
            return str(password)
    return None


def prepare(
    region: Region,
    *,
    to: str | None,
    switchover: bool,
    timeout: float,
    refused: type[Exception],
) -> PreparedRedis:
    """Check the request and ask Sentinel which primary it sees; ``refused`` (the caller's
    refusal error) for anything that cannot be carried out."""
    started = time.monotonic()
    if to is not None:
        raise refused("redis failover: Sentinel chooses the replica to promote; drop --to")
    if not region.sentinels or region.sentinel_master is None:
        raise refused(
            f"region {region.name}: no Sentinel configured ([regions.{region.name}] "
            "sentinels and sentinel_master)"
        )
    for addr in region.sentinels:
        try:
            parse_hostport(addr)
        except ValueError as exc:
            raise refused(f"region {region.name}: Sentinel address {exc}") from None
    j = Journal.silent()
    with j.step("ask Sentinel for the primary"):
        old = sentinel_master(region.sentinels, region.sentinel_master)
    if old is None and switchover:
        raise refused(
            f"failover refused: no Sentinel sees a running primary of "
            f"{region.sentinel_master!r} to switch over from: ask for a failover instead"
        )
    steps = tuple(
        {"name": s.name, "status": str(s.status), "seconds": round(s.duration or 0.0, 3)}
        for s in j.steps
    )
    return PreparedRedis(
        region,
        tuple(region.sentinels),
        region.sentinel_master,
        old,
        _password(region),
        timeout,
        started,
        steps,
    )


def run(p: PreparedRedis, journal: Journal) -> tuple[str | None, str | None]:
    """Ask Sentinel and wait until it names the promoted replica; (from, to) member names.
    :class:`~payapi.systems.redis.SentinelError` when Sentinel refuses or does not promote
    in time."""
    kind = "switchover" if p.old is not None else "failover"
    with journal.step(f"Sentinel {kind} of {p.master_name}"):
        new = sentinel_failover(p.sentinels, p.master_name, password=p.password, timeout=p.timeout)
    return member_at(p.region, p.old), member_at(p.region, new)
