"""Observing for `payapi health check`: one region's servers (through
:mod:`payapi.replication.observe`), the primary region's too when the region is a standby
(its DR lag is measured against it), the region's SAPI and EAPI health routes, its Redis,
and the global DNS record. It decides nothing (:func:`payapi.ops.health.assess` does)
and never raises for an unreachable server."""

from __future__ import annotations

import asyncio

import httpx

from payapi.core.errors import PayapiError
from payapi.core.plan import Plan
from payapi.core.settings import Settings
from payapi.core.topology import Deployment, Region, topology_from_settings
from payapi.ops.health import (
    DnsObservation,
    HealthContext,
    HealthObservations,
    ServiceObservation,
)
from payapi.replication.decide import replicated_rpo_seconds
from payapi.replication.observe import DEFAULT_TIMEOUT, observe_regions
from payapi.replication.redis_observe import observe_redis

HEALTH_PATHS = {"sapi": "/api/internal-health", "eapi": "/api/health"}


async def observe_service(
    name: str, deployment: Deployment, *, timeout: float = DEFAULT_TIMEOUT
) -> ServiceObservation:
    """A service's health route; its body's ``status`` when it is JSON."""
    if deployment.url is None:
        return ServiceObservation(name, None, deployment.replicas, reachable=False)
    shown = deployment.describe()["url"]
    try:
        async with httpx.AsyncClient(timeout=timeout) as http:
            r = await http.get(deployment.url.rstrip("/") + HEALTH_PATHS[name])
    except httpx.HTTPError as exc:
        return ServiceObservation(
            name,
            shown,
            deployment.replicas,
            reachable=False,
            error=f"unreachable ({type(exc).__name__})",
        )
    try:
        body = r.json()
    except ValueError:
        body = None
    status = body.get("status") if isinstance(body, dict) else None
    return ServiceObservation(
        name,
        shown,
        deployment.replicas,
        reachable=True,
        http_status=r.status_code,
        status=str(status) if status is not None else None,
    )


async def _services(region: Region, timeout: float) -> tuple[ServiceObservation, ...]:
    return tuple(
        await asyncio.gather(
            observe_service("sapi", region.sapi, timeout=timeout),
            observe_service("eapi", region.eapi, timeout=timeout),
        )
    )


def observe(
    settings: Settings, environment: str | None = None, *, timeout: float = DEFAULT_TIMEOUT
) -> HealthObservations:
    """Observe the region named ``environment`` (default: the configured primary).
    :class:`~payapi.core.topology.UnknownRegionError` (exit 2) for an unknown name."""
    topology = topology_from_settings(settings)
    region = topology.region(environment) if environment is not None else topology.primary
    names = {region.name, topology.primary.name}
    seen = observe_regions(topology, names, timeout=timeout)
    primary = seen[topology.primary.name] if region.name != topology.primary.name else None
    services = asyncio.run(_services(region, timeout))
    redis = observe_redis(region, timeout=min(timeout, 1.0))
    return HealthObservations(
        region.name, seen[region.name], primary, services, redis, observe_dns(settings)
    )


def observe_dns(settings: Settings) -> DnsObservation | None:
    """The global record through the Route53 API; None when no record is configured."""
    from payapi.systems.dns import show_record

    t = settings.topology
    if not (t.dns_zone and t.dns_record):
        return None
    try:
        view = show_record(settings)
    except PayapiError as exc:
        return DnsObservation(t.dns_record, None, None, str(exc))
    return DnsObservation(view.record, view.target, view.region, view.problem)


def context(settings: Settings, plan: Plan) -> HealthContext:
    return HealthContext(
        rpo_seconds=replicated_rpo_seconds(plan),
        maximum_lag_on_failover=settings.patroni.maximum_lag_on_failover,
        write_rate_bytes_per_second=settings.patroni.write_rate_bytes_per_second,
    )
