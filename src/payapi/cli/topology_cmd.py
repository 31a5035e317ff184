"""`payapi topology show`: the regions, members and global endpoint the config describes.

Building the topology is :func:`payapi.core.topology.topology_from_settings`; this module
only prints. Every DSN and URL is shown without its password.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from payapi.cli.context import get_ctx
from payapi.cli.output import console, emit
from payapi.core.topology import topology_from_settings

app = typer.Typer(help="topology", no_args_is_help=True)

JSON_OPTION = typer.Option(False, "--json", help="Print JSON (for automation).")


def _dash(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def _print_human(data: dict[str, Any]) -> None:
    table = Table(title="Topology", title_justify="left")
    for col in ("Region", "Role", "Service", "Member", "Member role", "URL", "Patroni"):
        table.add_column(col, overflow="fold")
    for region in data["regions"]:
        name = region["name"]
        role = region["role"] + (" *" if name == data["primary"] else "")
        rows: list[tuple[str, str, str, str, str]] = [
            (m["service"], m["name"], m["role"], m["url"], _dash(m["patroni_url"]))
            for m in region["members"]
        ]
        for service in ("eapi", "sapi"):
            dep = region[service]
            rows.append((service, "-", f"replicas {dep['replicas']}", _dash(dep["url"]), "-"))
        if region["etcd_urls"]:
            rows.append(("etcd", "-", "-", ", ".join(region["etcd_urls"]), "-"))
        if region["sentinels"]:
            master = _dash(region["sentinel_master"])
            rows.append(("sentinel", "-", f"master {master}", ", ".join(region["sentinels"]), "-"))
        for i, row in enumerate(rows):
            cells = (name if i == 0 else "", role if i == 0 else "", *row)
            table.add_row(*(Text(c) for c in cells))  # literal: [redacted] is not markup
        table.add_section()
    console.print(table)
    endpoint = data["endpoint"]
    if endpoint is not None:
        console.print(
            f"endpoint {_dash(endpoint['url'])}  dns {_dash(endpoint['dns_record'])} "
            f"(zone {_dash(endpoint['dns_zone'])}, ttl {endpoint['dns_ttl_seconds']}s)",
            markup=False,
            highlight=False,
        )


@app.command("show")
def show(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """Show the regions (* marks the primary), their members and the global endpoint."""
    topology = topology_from_settings(get_ctx(ctx).settings)
    emit(topology.describe(), as_json=as_json, human=_print_human)
