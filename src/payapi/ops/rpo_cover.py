"""The RPO check's covers besides the database's replication (pure): Redis's replicas,
and the standby deployments of the stateless services. :mod:`payapi.ops.rpo` combines
each with the component's backups and keeps the better of the two.

- **Redis** (the token cache) is covered by its in-region replicas, as the plan says
  ("Asynchronous replication"): losing the primary loses what the best online replica
  has not acknowledged. Redis acknowledges every second, so a replica whose offset
  equals the primary's loses nothing, and one behind loses at most the seconds since
  its last acknowledgement, plus one. A region loss is not covered by replication: the
  DR region's Redis starts from the newest snapshot, and the tokens written since are
  lost (a cache: clients authenticate again). That is a note, not the figure.
- **Payment-EAPI and Payment-SAPI** keep no data ("Stateless, no data loss"): what a
  region loss could lose is their configuration. When every standby region has the
  service deployed already (scaled to zero, as the seed's ``kubectl scale`` assumes),
  a region loss loses nothing; otherwise it is redeployed from the configuration
  backup, whose age is the exposure (as before).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from payapi.core.plan import Component
from payapi.replication.redis_observe import RedisObservation

__all__ = ["Cover", "StandbyServices", "cover_for", "redis_cover", "stateless_cover"]

_CACHE = frozenset({"redis", "cache"})
_STATELESS = {"payment-eapi": "eapi", "eapi": "eapi", "payment-sapi": "sapi", "sapi": "sapi"}


@dataclass(frozen=True)
class Cover:
    """What protects a component besides its backups, as judged at one time."""

    by: str  # "redis replication", "standby deployment"
    exposure: timedelta | None  # None: this cover does not hold now
    at_risk: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    detail: Mapping[str, Any] = field(default_factory=dict)

    def combine(
        self, exposure: timedelta | None, point: datetime | None, now: datetime
    ) -> tuple[timedelta | None, datetime | None, list[str]]:
        """The better of the backups' exposure and this cover's, with the notes."""
        notes = list(self.notes)
        if self.exposure is None or (exposure is not None and exposure <= self.exposure):
            return exposure, point, notes
        if exposure is None:
            notes.append(f"no backup yet: {self.by} protects it (backups are the fallback)")
        return self.exposure, now - self.exposure, notes

    def to_json(self) -> dict[str, Any]:
        exposure = None if self.exposure is None else round(self.exposure.total_seconds(), 3)
        return {"by": self.by, "exposure_seconds": exposure, **self.detail}


@dataclass(frozen=True)
class StandbyServices:
    """The standby regions, and per stateless service (``eapi``, ``sapi``) the standby
    regions that have it deployed (configured, at any replica count)."""

    standbys: tuple[str, ...]
    deployed: Mapping[str, frozenset[str]]


def redis_cover(obs: RedisObservation | None, now: datetime) -> Cover | None:
    """Redis's replicas' protection; None when no Redis member is configured."""
    if obs is None or not obs.configured:
        return None
    by = "redis replication"
    staleness = max(now - obs.observed_at, timedelta(0))
    region_loss = (
        "a region loss loses the tokens written since the DR region's newest snapshot "
        "(a cache: clients authenticate again)"
    )
    if obs.info is None:
        why = f"Redis replication unknown in region {obs.region}: {obs.error or 'no answer'}"
        return Cover(by, None, at_risk=(why,))
    online = [r for r in obs.info["replicas"] if r["state"] == "online"]
    if not online:
        if obs.members > 1:
            why = (
                f"no Redis replica is online in region {obs.region}: losing the primary "
                "loses what was written since the newest snapshot"
            )
            return Cover(by, None, at_risk=(why,))
        return Cover(by, None, notes=(f"one Redis in region {obs.region}: snapshots protect it",))
    best = min(online, key=lambda r: (r["lag_bytes"], r["lag"]))
    seconds = 0.0 if best["lag_bytes"] == 0 else float(best["lag"] + 1)
    where = f"{best['host']}:{best['port']}"
    note = f"Redis replica {where} online, {best['lag_bytes']} bytes behind: " + (
        "a primary loss loses nothing" if seconds == 0 else f"a primary loss loses {seconds:g}s"
    )
    detail = {
        "region": obs.region,
        "primary": obs.primary,
        "replica": where,
        "lag_bytes": best["lag_bytes"],
        "observation_age_seconds": round(staleness.total_seconds(), 3),
    }
    return Cover(
        by, timedelta(seconds=seconds) + staleness, notes=(note, region_loss), detail=detail
    )


def stateless_cover(service: str, standby: StandbyServices | None) -> Cover | None:
    """A stateless service's standby deployments; None unless every standby region has
    the service deployed (then the configuration backup is what protects it)."""
    if standby is None or not standby.standbys:
        return None
    have = standby.deployed.get(service, frozenset())
    if any(r not in have for r in standby.standbys):
        return None
    regions = ", ".join(standby.standbys)
    note = (
        f"stateless and deployed in standby region {regions} already: a region loss loses "
        "nothing (its configuration is there; keep the regions' configurations in step)"
    )
    return Cover("standby deployment", timedelta(0), notes=(note,), detail={"regions": regions})


def cover_for(
    component: Component,
    redis: RedisObservation | None,
    standby: StandbyServices | None,
    now: datetime,
) -> Cover | None:
    """The cover of ``component`` besides database replication, if any."""
    words = {component.name, *component.aliases}
    if words & _CACHE:
        return redis_cover(redis, now)
    service = next((_STATELESS[w] for w in sorted(words) if w in _STATELESS), None)
    if service is not None:
        return stateless_cover(service, standby)
    return None
