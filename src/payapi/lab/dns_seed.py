"""The lab's DNS: the hosted zone and the record in moto's Route53, (re)created when moto
starts (it keeps its state in memory)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from payapi.core.errors import PayapiError
from payapi.lab.region import PRIMARY

if TYPE_CHECKING:
    from payapi.lab.regions import TwoRegionLab
    from payapi.systems.route53 import Route53Dns


def _dns(lab: TwoRegionLab) -> Route53Dns:
    from payapi.lab.regions import DNS_ZONE
    from payapi.systems.route53 import Route53Dns

    return Route53Dns(DNS_ZONE, endpoint_url=lab.dns_server.url)


def ensure_record(lab: TwoRegionLab, region: str = PRIMARY, *, only_if_missing: bool) -> None:
    """The zone, and the record naming ``region`` (kept as it is when it exists and
    ``only_if_missing``: after a failover the record names DR, and a restart of the lab
    must not move it back)."""
    from payapi.lab.regions import DNS_RECORD, DNS_TTL_SECONDS, DNS_ZONE
    from payapi.systems.route53 import DnsRecordMissing, target_for

    dns = _dns(lab)
    dns.ensure_zone()
    if only_if_missing:
        try:
            dns.lookup(DNS_RECORD)
            return
        except DnsRecordMissing:
            pass
    dns.upsert_cname(DNS_RECORD, target_for(region, DNS_ZONE), DNS_TTL_SECONDS)


def zone_id(lab: TwoRegionLab) -> str | None:
    try:
        return _dns(lab).zone_id
    except PayapiError:
        return None
