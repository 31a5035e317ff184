"""The lab's DNS: the hosted zone and the record in moto's Route53, (re)created when moto
starts (it keeps its state in memory)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from payapi.lab.region import PRIMARY

if TYPE_CHECKING:
    from payapi.lab.regions import TwoRegionLab


def _dns(lab: TwoRegionLab):  # type: ignore[no-untyped-def]
    from payapi.lab.regions import DNS_ZONE
    from payapi.systems.route53 import Route53Dns

    return Route53Dns(DNS_ZONE, endpoint_url=lab.dns_server.url)


def ensure_record(lab: TwoRegionLab, region: str = PRIMARY, *, only_if_missing: bool) -> None:
    from payapi.lab.regions import DNS_RECORD, DNS_TTL_SECONDS, DNS_ZONE
    from payapi.systems.route53 import target_for

    dns = _dns(lab)
    dns.ensure_zone()
    if only_if_missing:
        try:
            dns.lookup(DNS_RECORD)
            return
        except Exception:  # noqa: S110 - no record yet: create it below
            pass
    dns.upsert_cname(DNS_RECORD, target_for(region, DNS_ZONE), DNS_TTL_SECONDS)


def zone_id(lab: TwoRegionLab) -> str | None:
    try:
        return str(_dns(lab).zone_id)
    except Exception:
        return None
