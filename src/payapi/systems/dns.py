"""The global endpoint's DNS record, from configuration: read it, point it at a region,
and resolve it to an upstream for the forwarder.

``[topology]`` names the record (``dns_record``), its hosted zone (``dns_zone``), the TTL
to write (``dns_ttl_seconds``) and the Route53 API (``dns_endpoint_url``; None is AWS).
The record is a CNAME to ``<region>.<zone>`` (:mod:`payapi.systems.route53`); the region
it names is mapped to that region's EAPI through the topology (``[regions.NAME.eapi]
url``, or ``[eapi]`` in a one-region config). ``payapi dns show|set``, the endpoint
(``payapi serve endpoint``) and a regional failover all go through these functions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from payapi.core.redaction import redact_url
from payapi.core.settings import ConfigError, Settings
from payapi.core.topology import Topology, topology_from_settings
from payapi.servers.endpoint_route import Resolved, Upstream
from payapi.systems.route53 import DnsError, Route53Dns, normalize, region_of, target_for

__all__ = [
    "DnsChange",
    "RecordView",
    "dns_from_settings",
    "endpoint_listen",
    "endpoint_lookup",
    "point_at",
    "record_name",
    "show_record",
    "upstream_for",
]

_DEFAULT_PORTS = {"http": 80, "https": 443}


def dns_from_settings(settings: Settings) -> Route53Dns:
    """The configured hosted zone through the configured Route53 API."""
    t = settings.topology
    if not t.dns_zone:
        raise ConfigError("[topology] dns_zone is not set (the Route53 hosted zone)")
    return Route53Dns(t.dns_zone, endpoint_url=t.dns_endpoint_url)


def record_name(settings: Settings) -> str:
    """The configured record, normalized (``api.payments.lab.``)."""
    if not settings.topology.dns_record:
        raise ConfigError("[topology] dns_record is not set (the global endpoint's name)")
    return normalize(settings.topology.dns_record)


def _address(url: str, where: str) -> tuple[str, int]:
    try:
        parts = urlsplit(url)
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        port = None
        parts = None
    if parts is None or not parts.hostname or port is None:
        raise ConfigError(f"{where} is not an http(s)://host:port URL")
    return parts.hostname, port


def upstream_for(topology: Topology, region: str) -> Upstream:
    """Where the endpoint forwards when ``region`` serves: that region's EAPI."""
    url = topology.region(region).eapi.url
    if not url:
        raise ConfigError(f"region {region!r} has no EAPI url ([regions.{region}.eapi] url)")
    host, port = _address(url, f"region {region!r}: the EAPI url")
    return Upstream(region, host, port)


def endpoint_listen(settings: Settings) -> tuple[str, int]:
    """The host and port the global endpoint listens on (``[topology] endpoint``)."""
    if not settings.topology.endpoint:
        raise ConfigError("[topology] endpoint is not set (the global endpoint's URL)")
    return _address(settings.topology.endpoint, "[topology] endpoint")


@dataclass(frozen=True, slots=True)
class RecordView:
    """What the record says now, and which region and EAPI that means here."""

    record: str
    zone: str
    zone_id: str
    target: str
    ttl: int
    region: str | None  # None: the target is not <region>.<zone> of a configured region
    eapi_url: str | None
    dns_api: str
    problem: str | None = None  # why region is None

    def to_json(self) -> dict[str, Any]:
        return {
            "record": self.record,
            "zone": self.zone,
            "zone_id": self.zone_id,
            "target": self.target,
            "ttl": self.ttl,
            "region": self.region,
            "eapi_url": self.eapi_url,
            "dns_api": self.dns_api,
            "problem": self.problem,
        }


def show_record(settings: Settings, dns: Route53Dns | None = None) -> RecordView:
    """Read the record (ListResourceRecordSets) and name the region it points at."""
    record = record_name(settings)
    zone = dns or dns_from_settings(settings)
    answer = zone.lookup(record)
    region: str | None = None
    eapi: str | None = None
    problem: str | None = None
    try:
        topology = topology_from_settings(settings)
        name = region_of(answer.target, zone.zone_name)
        upstream_for(topology, name)
        region = name
        url = topology.region(name).eapi.url
        eapi = None if url is None else redact_url(url)
    except (DnsError, ConfigError) as exc:
        problem = str(exc)
    return RecordView(
        record,
        zone.zone_name,
        zone.zone_id,
        answer.target,
        answer.ttl,
        region,
        eapi,
        zone.api,
        problem,
    )


@dataclass(frozen=True, slots=True)
class DnsChange:
    """One UPSERT of the record, done and INSYNC."""

    record: str
    region: str
    target: str
    ttl: int
    change_id: str
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "record": self.record,
            "region": self.region,
            "target": self.target,
            "ttl": self.ttl,
            "change_id": self.change_id,
            "seconds": round(self.seconds, 3),
        }


def point_at(settings: Settings, region: str, dns: Route53Dns | None = None) -> DnsChange:
    """Point the record at ``region`` (the DNS step of a regional failover).

    The region must be configured and have an EAPI url (else an error, exit 2 for an
    unknown name) before anything is changed: a record naming a region nobody can
    forward to would leave the endpoint on its last answer.
    """
    record = record_name(settings)
    upstream_for(topology_from_settings(settings), region)
    zone = dns or dns_from_settings(settings)
    target = target_for(region, zone.zone_name)
    ttl = settings.topology.dns_ttl_seconds
    started = time.monotonic()
    change_id = zone.upsert_cname(
        record, target, ttl, sync_timeout=settings.topology.dns_sync_timeout_seconds
    )
    return DnsChange(record, region, target, ttl, change_id, time.monotonic() - started)


def endpoint_lookup(settings: Settings, dns: Route53Dns | None = None) -> Callable[[], Resolved]:
    """The forwarder's ``lookup``: read the record, map its region to that region's EAPI.

    Fails (keeping the endpoint on its last answer) when the record is missing, names no
    configured region, or that region has no EAPI url.
    """
    record = record_name(settings)
    topology = topology_from_settings(settings)
    zone = dns or dns_from_settings(settings)

    def lookup() -> Resolved:
        answer = zone.lookup(record)
        region = region_of(answer.target, zone.zone_name)
        try:
            upstream = upstream_for(topology, region)
        except ConfigError as exc:
            raise DnsError(f"the record names region {region!r}: {exc}") from None
        return Resolved(upstream, float(answer.ttl))

    return lookup
