"""`payapi dns show|set`: the global endpoint's DNS record in its Route53 hosted zone.

``show`` reads the record (ListResourceRecordSets) and names the region it points at;
``set --region R`` points it at R (ChangeResourceRecordSets UPSERT, waiting for INSYNC).
An unknown region is refused with one line and exit 2 before anything changes. The work
is :mod:`payapi.systems.dns`; this module only prints.
"""

from __future__ import annotations

from typing import Any

import typer

from payapi.cli.context import get_ctx
from payapi.cli.output import console, emit

app = typer.Typer(help="dns", no_args_is_help=True)

JSON_OPTION = typer.Option(False, "--json", help="Print JSON (for automation).")


def _print_show(data: dict[str, Any]) -> None:
    region = data["region"] or "?"
    console.print(
        f"{data['record']} CNAME {data['target']} (ttl {data['ttl']}s) -> region {region}"
        + (f", EAPI {data['eapi_url']}" if data["eapi_url"] else ""),
        markup=False,
        highlight=False,
    )
    if data["problem"]:
        console.print(f"note: {data['problem']}", markup=False, highlight=False)


def _print_set(data: dict[str, Any]) -> None:
    console.print(
        f"{data['record']} CNAME {data['target']} (ttl {data['ttl']}s): region "
        f"{data['region']}, change {data['change_id']} INSYNC in {data['seconds']:.1f}s",
        markup=False,
        highlight=False,
    )


@app.command("show")
def show(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """The record, the name it points at, its TTL and the region that means."""
    from payapi.systems.dns import show_record

    emit(show_record(get_ctx(ctx).settings).to_json(), as_json=as_json, human=_print_show)


@app.command("set")
def set_(
    ctx: typer.Context,
    region: str = typer.Option(..., "--region", help="The region the record should name."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Point the record at REGION's name (UPSERT) and wait until Route53 has it INSYNC."""
    from payapi.systems.dns import point_at

    emit(point_at(get_ctx(ctx).settings, region).to_json(), as_json=as_json, human=_print_set)
