"""`payapi health check`: is every component of one region healthy? (deciding, pure)

:func:`payapi.ops.health_observe.observe` reads the region into
:class:`HealthObservations`; :func:`assess` judges them with one function per component,
registered in :data:`CHECKS` (the seed's ``./scripts/health-check.sh --environment dr``).
A component is ``{"healthy": bool, "detail": str}``; the region is healthy when all are.

What "healthy" means depends on whether the region is **active** (it serves: its database
takes writes) or a **standby** (its database replays the primary's). Active is observed,
not configured: a DR region whose standby cluster was promoted is active, so that after a
regional failover ``health check --environment dr`` asks of it what it asks of a primary.

- ``postgres``: Patroni answers; its leader runs (``leader`` when active,
  ``standby_leader`` on a standby); every configured member runs or streams; the leader
  answers, and takes writes when active.
- ``replication``: active: the synchronous standby streams (where one is configured) and
  every replica lags within ``maximum_lag_on_failover``; standby: the DR lag behind the
  primary region is known and within the plan's RPO for the data in the database.
- ``vault``: every vault member's ``/health`` is ok; when active, none is on a read-only
  database.
- ``sapi``, ``eapi``: active: the service answers its health route (``degraded`` is
  healthy, with the detail). Standby with ``replicas = 0``: not running is what a standby
  should be (the seed scales the services up on failover), so it is **healthy** with the
  detail ``standby: replicas 0, not running``; a standby with replicas above 0 is a warm
  standby and must answer like an active region.
- ``redis``: active: the primary Sentinel names (or the one member) answers as master,
  and where the region has replicas one of them is online; standby: its Redis answers
  (it is seeded from the primary's snapshots, a cache).
- ``dns``: the record (Route53 ``ListResourceRecordSets``) names the region when it is
  active, and another region when it is a standby: two regions served is unhealthy.

A component with nothing configured reports ``not configured`` and counts as healthy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from payapi.replication.lag import dr_lag, member_lags, sync_standby
from payapi.replication.observe import RegionObservation
from payapi.replication.redis_observe import RedisObservation

__all__ = [
    "CHECKS",
    "ComponentHealth",
    "DnsObservation",
    "HealthContext",
    "HealthObservations",
    "HealthReport",
    "ServiceObservation",
    "assess",
]

NOT_CONFIGURED = "not configured"
UP_STATES = frozenset({"running", "streaming"})


@dataclass(frozen=True)
class ServiceObservation:
    """SAPI's or EAPI's health route, as answered (or not)."""

    name: str
    url: str | None  # redacted; None: no URL configured
    replicas: int
    reachable: bool
    http_status: int | None = None
    status: str | None = None  # the body's "status": ok, degraded, down
    error: str | None = None


@dataclass(frozen=True)
class DnsObservation:
    """The global record, as read: the region it names (None: none, with why)."""

    record: str
    target: str | None
    region: str | None
    error: str | None = None


@dataclass(frozen=True)
class HealthContext:
    """What the configuration and the plan say the figures are judged against."""

    rpo_seconds: float | None = None  # the tightest RPO of the data in the database
    maximum_lag_on_failover: int = 1_048_576
    write_rate_bytes_per_second: float | None = None


@dataclass(frozen=True)
class HealthObservations:
    environment: str
    region: RegionObservation
    primary: RegionObservation | None = None  # for a standby region: the primary's (DR lag)
    services: tuple[ServiceObservation, ...] = ()
    redis: RedisObservation | None = None
    dns: DnsObservation | None = None  # None: no DNS record configured

    @property
    def active(self) -> bool:
        promoted = self.region.promoted
        return promoted if promoted is not None else self.region.configured_role == "primary"

    def service(self, name: str) -> ServiceObservation | None:
        return next((s for s in self.services if s.name == name), None)


@dataclass(frozen=True)
class ComponentHealth:
    healthy: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"healthy": self.healthy, "detail": self.detail}


@dataclass(frozen=True)
class HealthReport:
    environment: str
    components: Mapping[str, ComponentHealth]

    @property
    def healthy(self) -> bool:
        return all(c.healthy for c in self.components.values())

    @property
    def exit_code(self) -> int:
        return 0 if self.healthy else 1

    def to_json(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "healthy": self.healthy,
            "components": {name: c.to_json() for name, c in self.components.items()},
        }


Check = Callable[[HealthObservations, HealthContext], ComponentHealth]


def _join(parts: list[str]) -> str:
    return "; ".join(parts)


# --------------------------------------------------------------------------- postgres


def check_postgres(obs: HealthObservations, ctx: HealthContext) -> ComponentHealth:
    region = obs.region
    if not region.postgres_members:
        return ComponentHealth(True, NOT_CONFIGURED)
    problems: list[str] = []
    if region.patroni_configured:
        if region.cluster is None:
            return ComponentHealth(False, f"Patroni: {region.patroni_error or 'no answer'}")
        want = "leader" if obs.active else "standby_leader"
        leader = region.cluster.leader
        if leader is None or leader.state not in UP_STATES:
            problems.append(f"no running {want}")
        elif leader.role != want:
            problems.append(f"{leader.name} is {leader.role}, expected {want}")
        for name in region.postgres_members:
            m = region.cluster.member(name)
            if m is None:
                problems.append(f"{name} is not in the cluster")
            elif m.state not in UP_STATES:
                problems.append(f"{name} is {m.state}")
        listed = [f"{m.name} {m.role} {m.state}" for m in region.cluster.members]
    else:
        listed = []
        for name in region.postgres_members:
            pg = region.pg(name)
            if pg is None or not pg.reachable:
                problems.append(f"{name} unreachable ({pg.error if pg else 'not observed'})")
            else:
                listed.append(f"{name} {'standby' if pg.in_recovery else 'writable'}")
    pg_leader = region.leader
    if pg_leader is None:
        if not problems:
            problems.append("no member takes writes" if obs.active else "no member answers")
    elif not pg_leader.reachable:
        problems.append(f"{pg_leader.member} leads but does not answer ({pg_leader.error})")
    elif obs.active and not pg_leader.writable:
        problems.append(f"{pg_leader.member} does not take writes (in recovery)")
    if problems:
        return ComponentHealth(False, _join(problems))
    return ComponentHealth(True, ", ".join(listed))


# --------------------------------------------------------------------------- replication


def check_replication(obs: HealthObservations, ctx: HealthContext) -> ComponentHealth:
    region = obs.region
    if not region.postgres_members:
        return ComponentHealth(True, NOT_CONFIGURED)
    if obs.active:
        return _in_region(obs, ctx)
    return _dr(obs, ctx)


def _in_region(obs: HealthObservations, ctx: HealthContext) -> ComponentHealth:
    region = obs.region
    problems: list[str] = []
    details: list[str] = []
    sync = sync_standby(region)
    if sync is not None:
        details.append(f"synchronous standby {sync} streaming")
    elif region.sync_expected:
        problems.append("no synchronous standby is streaming")
    for lag in member_lags(region):
        if lag.role in ("leader", "standby_leader"):
            continue
        if lag.lag_bytes is not None and lag.lag_bytes > ctx.maximum_lag_on_failover:
            problems.append(
                f"{lag.member} lags {lag.lag_bytes} bytes (beyond maximum_lag_on_failover "
                f"{ctx.maximum_lag_on_failover})"
            )
        elif lag.up:
            shown = "unknown" if lag.lag_bytes is None else f"{lag.lag_bytes} bytes"
            details.append(f"{lag.member} lag {shown}")
    if len(region.postgres_members) == 1 and not details:
        details.append("one member: no standby in this region")
    if problems:
        return ComponentHealth(False, _join(problems))
    return ComponentHealth(True, ", ".join(details))


def _dr(obs: HealthObservations, ctx: HealthContext) -> ComponentHealth:
    if obs.primary is None:
        return ComponentHealth(False, "the primary region was not observed: DR lag unknown")
    lag = dr_lag(
        obs.primary, obs.region, write_rate_bytes_per_second=ctx.write_rate_bytes_per_second
    )
    if lag.seconds is None:
        return ComponentHealth(False, f"DR lag unknown: {lag.why}")
    shown = f"{lag.member} {lag.seconds:.1f}s behind {obs.primary.region} ({lag.measured_by}"
    shown += f", {lag.lag_bytes} bytes)" if lag.lag_bytes is not None else ")"
    if ctx.rpo_seconds is not None and lag.seconds > ctx.rpo_seconds:
        return ComponentHealth(False, f"{shown}: beyond the RPO of {ctx.rpo_seconds:g}s")
    return ComponentHealth(True, shown)


# --------------------------------------------------------------------------- vault, services


def check_vault(obs: HealthObservations, ctx: HealthContext) -> ComponentHealth:
    if not obs.region.vault:
        return ComponentHealth(True, NOT_CONFIGURED)
    problems: list[str] = []
    details: list[str] = []
    for v in obs.region.vault:
        if not v.healthy:
            problems.append(f"{v.member} {v.error or v.status or 'unhealthy'}")
        elif obs.active and v.role == "standby":
            problems.append(f"{v.member} is on a read-only database")
        else:
            details.append(f"{v.member} ok" + (f" ({v.role})" if v.role else ""))
    if problems:
        return ComponentHealth(False, _join(problems))
    return ComponentHealth(True, ", ".join(details))


def _service(name: str) -> Check:
    def check(obs: HealthObservations, ctx: HealthContext) -> ComponentHealth:
        s = obs.service(name)
        if s is None:
            return ComponentHealth(not obs.active, "not observed")
        answered = s.reachable and s.http_status == 200
        if not obs.active and s.replicas == 0:
            if answered:
                return ComponentHealth(True, f"standby: running although replicas 0 ({s.status})")
            return ComponentHealth(True, "standby: replicas 0, not running (started on failover)")
        if s.url is None:
            return ComponentHealth(False, "not running: no URL configured")
        if not answered:
            why = s.error or (f"HTTP {s.http_status}" if s.http_status else "no answer")
            return ComponentHealth(False, f"{s.url}: {why}")
        return ComponentHealth(True, f"{s.url}: {s.status or 'ok'}")

    return check


# --------------------------------------------------------------------------- redis, dns


def check_redis(obs: HealthObservations, ctx: HealthContext) -> ComponentHealth:
    r = obs.redis
    if r is None or not r.configured:
        return ComponentHealth(True, NOT_CONFIGURED)
    if r.info is None:
        return ComponentHealth(False, r.error or "no answer")
    if not obs.active:
        return ComponentHealth(True, f"standby: {r.primary} answers ({r.info['role']})")
    if r.info["role"] != "master":
        return ComponentHealth(False, f"{r.primary} is a {r.info['role']}, expected the primary")
    online = [x for x in r.info["replicas"] if x["state"] == "online"]
    via = " (Sentinel's choice)" if r.sentinels else ""
    shown = [f"primary {r.primary}{via}"]
    shown += [f"replica {x['host']}:{x['port']} {x['lag_bytes']} bytes behind" for x in online]
    if r.members > 1 and not online:
        return ComponentHealth(False, f"primary {r.primary}: no replica online")
    return ComponentHealth(True, ", ".join(shown))


def check_dns(obs: HealthObservations, ctx: HealthContext) -> ComponentHealth:
    d = obs.dns
    if d is None:
        return ComponentHealth(True, NOT_CONFIGURED)
    if d.error is not None:
        return ComponentHealth(False, f"{d.record}: {d.error}")
    shown = f"{d.record} → {d.target} (region {d.region or 'unknown'})"
    if obs.active and d.region != obs.environment:
        return ComponentHealth(False, f"{shown}: the record does not name this active region")
    if not obs.active and d.region == obs.environment:
        return ComponentHealth(False, f"{shown}: the record names this standby region")
    return ComponentHealth(True, shown)


CHECKS: dict[str, Check] = {
    "postgres": check_postgres,
    "replication": check_replication,
    "vault": check_vault,
    "sapi": _service("sapi"),
    "eapi": _service("eapi"),
    "redis": check_redis,
    "dns": check_dns,
}


def assess(
    obs: HealthObservations, ctx: HealthContext, checks: Mapping[str, Check] = CHECKS
) -> HealthReport:
    """Every component's health, in :data:`CHECKS` order (pure)."""
    return HealthReport(obs.environment, {name: check(obs, ctx) for name, check in checks.items()})
