"""`payapi dns show` / `dns set --region R`: the record that names the serving region.

``dns set`` is the DNS step of a regional failover on its own (the seed's Route53
``change-resource-record-sets``); prefer ``region failover``, which promotes the database
before it lets traffic in. ``dns show`` is the seed's ``dig``.
"""

from __future__ import annotations

from typing import Any

import typer

from payapi.cli.context import get_ctx
from payapi.cli.output import console, emit
from payapi.core.errors import UsageError

app = typer.Typer(help="The DNS record that names the serving region.", no_args_is_help=True)

JsonOpt = typer.Option(False, "--json", help="Machine-readable output.")


def _dns(ctx: typer.Context) -> tuple[Any, str, str, int]:
    from payapi.systems.route53 import Route53Dns

    topo = get_ctx(ctx).settings.topology
    if not (topo.dns_zone and topo.dns_record):
        raise UsageError("no DNS record is configured ([topology] dns_zone and dns_record)")
    dns = Route53Dns(topo.dns_zone, endpoint_url=topo.dns_endpoint_url)
    return dns, topo.dns_zone, topo.dns_record, topo.dns_ttl_seconds


def _show(d: dict[str, Any]) -> None:
    console.print(f"{d['record']} → {d['target']} (region {d['region']}, TTL {d['ttl']}s)")


@app.command("show")
def show(ctx: typer.Context, as_json: bool = JsonOpt) -> None:
    """The record, the region it names and its TTL."""
    from payapi.systems.route53 import region_of

    dns, zone, record, _ = _dns(ctx)
    answer = dns.lookup(record)
    data = {
        "record": answer.record,
        "target": answer.target,
        "region": region_of(answer.target, zone),
        "ttl": answer.ttl,
        "zone_id": dns.zone_id,
    }
    emit(data, as_json=as_json, human=_show)


@app.command("set")
def set_(
    ctx: typer.Context,
    region: str = typer.Option(..., "--region", help="The region the record names."),
    as_json: bool = JsonOpt,
) -> None:
    """UPSERT the record to name REGION (and read it back)."""
    from payapi.systems.route53 import region_of, target_for

    regions = get_ctx(ctx).settings.regions
    if region not in regions:
        known = ", ".join(sorted(regions)) or "none configured"
        raise UsageError(f"unknown region {region!r} (regions: {known})")
    dns, zone, record, ttl = _dns(ctx)
    dns.upsert_cname(record, target_for(region, zone), ttl)
    answer = dns.lookup(record)
    data = {
        "record": answer.record,
        "target": answer.target,
        "region": region_of(answer.target, zone),
        "ttl": answer.ttl,
        "zone_id": dns.zone_id,
    }
    emit(data, as_json=as_json, human=_show)
