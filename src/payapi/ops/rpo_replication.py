"""The RPO check's replication half: what streaming replication protects the database and
the vault with right now (pure; :mod:`payapi.ops.rpo` combines it with the backups).

The data of the region's database (the payments, and the vault's secrets, which live in
the same cluster) survives a failure on the best copy that survives it:

- the loss of the **leader** is covered by the synchronous standby: with it streaming, a
  commit is acknowledged only once the standby has it, so nothing acknowledged is lost;
- the loss of the **whole primary region** is covered by the DR region's standby cluster,
  which loses what it has not replayed yet (:func:`payapi.replication.lag.dr_lag`), or by
  the backups and the WAL archive, whichever is newer.

The exposure the check reports is the worst of those scenarios, which is the region loss:
``min(DR lag, backup exposure)``. A lost synchronous standby does not move that figure,
but it is AT RISK (a leader loss would now lose the asynchronous lag). A DR lag is measured
at the observation; judged later (``schedule run`` re-judges at every scrape), the time
since is added, since replication may have stopped right after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from payapi.core.plan import Component
from payapi.replication.lag import DrLag, MemberLag, dr_lag, member_lags, sync_standby
from payapi.replication.observe import RegionObservation

__all__ = ["Protection", "ReplicationObservations", "protection", "replicated"]

# The plan components whose data lives in the region's database (by name or alias).
_REPLICATED = frozenset({"database", "db", "postgres", "postgresql", "vault", "conjur"})


def replicated(component: Component) -> bool:
    return bool({component.name, *component.aliases} & _REPLICATED)


@dataclass(frozen=True)
class ReplicationObservations:
    """Every region observed (the primary by name), with the write rate that turns a lag
    in bytes into time (``[patroni] write_rate_bytes_per_second``)."""

    primary: str
    regions: tuple[RegionObservation, ...]
    write_rate_bytes_per_second: float | None = None

    def region(self, name: str) -> RegionObservation | None:
        return next((r for r in self.regions if r.region == name), None)


@dataclass(frozen=True)
class Protection:
    """Replication's protection as judged at one time."""

    exposure: timedelta | None  # a region loss's, from the best DR region; None: no DR cover
    primary: str
    sync_standby: str | None
    sync_expected: bool
    dr: tuple[DrLag, ...]
    members: tuple[MemberLag, ...]
    staleness: timedelta
    at_risk: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def within(self, rpo: timedelta) -> bool:
        """Replication alone keeps the data within ``rpo``."""
        return self.exposure is not None and self.exposure <= rpo

    def combine(
        self, exposure: timedelta | None, point: datetime | None, now: datetime
    ) -> tuple[timedelta | None, datetime | None, list[str]]:
        """The exposure and recovery point of backups and replication together (the
        better of the two), and the notes that explain it."""
        notes = list(self.notes)
        if self.exposure is None or (exposure is not None and exposure <= self.exposure):
            return exposure, point, notes
        if exposure is None:
            notes.append("no backup yet: replication protects it (backups are the fallback)")
        return self.exposure, now - self.exposure, notes

    def to_json(self) -> dict[str, Any]:
        return {
            "exposure_seconds": _secs(self.exposure),
            "in_region": {
                "region": self.primary,
                "sync_standby": self.sync_standby,
                "exposure_seconds": 0 if self.sync_standby is not None else None,
            },
            "dr": [
                {
                    "region": d.region,
                    "member": d.member,
                    "lag_bytes": d.lag_bytes,
                    "lag_seconds": d.seconds,
                    "measured_by": d.measured_by,
                    "why": d.why,
                }
                for d in self.dr
            ],
            "observation_age_seconds": _secs(self.staleness),
        }


def _secs(value: timedelta | None) -> float | None:
    return None if value is None else round(value.total_seconds(), 3)


def protection(obs: ReplicationObservations, now: datetime) -> Protection | None:
    """What replication protects with at ``now``; None when the primary was not observed."""
    primary = obs.region(obs.primary)
    if primary is None:
        return None
    staleness = max(now - primary.observed_at, timedelta(0))
    at_risk: list[str] = []
    notes: list[str] = []
    sync = sync_standby(primary)
    if sync is None and primary.sync_expected:
        at_risk.append(
            f"no synchronous standby is streaming in region {primary.region}: losing the "
            "leader would lose what it has not sent yet"
        )
    elif sync is not None:
        notes.append(f"synchronous standby {sync} streaming: a leader loss loses nothing")
    lags = tuple(
        dr_lag(primary, r, write_rate_bytes_per_second=obs.write_rate_bytes_per_second)
        for r in obs.regions
        if r.region != obs.primary
    )
    known = [d for d in lags if d.seconds is not None]
    exposure: timedelta | None = None
    if known:
        best = min(known, key=lambda d: d.seconds or 0.0)
        exposure = timedelta(seconds=best.seconds or 0.0) + staleness
        notes.append(
            f"DR region {best.region} ({best.member}) is {best.seconds:.1f}s behind "
            f"({best.measured_by})"
        )
    elif lags:
        at_risk.append(
            "DR lag unknown ("
            + "; ".join(f"{d.region}: {d.why}" for d in lags)
            + "): a region loss falls back to the backups"
        )
    else:
        notes.append("no standby region: a region loss falls back to the backups")
    members = tuple(m for r in obs.regions for m in member_lags(r))
    return Protection(
        exposure,
        primary.region,
        sync,
        primary.sync_expected,
        lags,
        members,
        staleness,
        tuple(at_risk),
        tuple(notes),
    )
