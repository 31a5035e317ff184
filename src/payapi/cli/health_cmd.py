"""`payapi health check [--environment REGION] [--json]`: every component of one region.

Observing is :func:`payapi.ops.health_observe.observe`, deciding
:func:`payapi.ops.health.assess`; this module prints. Exit 0 only when every component is
healthy, 1 otherwise, 2 for an unknown environment (or an invalid config or plan).
"""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from payapi.cli.context import get_ctx
from payapi.cli.output import EXIT_USAGE, console, emit, fail
from payapi.core.errors import PayapiError
from payapi.core.plan import PlanError, load_plan

app = typer.Typer(help="health", no_args_is_help=True)


def _print_human(data: dict[str, Any]) -> None:
    table = Table(title=f"Health of {data['environment']}", title_justify="left")
    for col in ("Component", "Healthy", "Detail"):
        table.add_column(col, overflow="fold")
    for name, c in data["components"].items():
        mark = Text("yes", "green") if c["healthy"] else Text("NO", "bold red")
        table.add_row(Text(name), mark, Text(str(c["detail"])))
    console.print(table)
    verdict = "healthy" if data["healthy"] else "NOT healthy"
    console.print(f"{data['environment']}: {verdict}", markup=False, highlight=False)


@app.command("check")
def check(
    ctx: typer.Context,
    environment: str | None = typer.Option(
        None,
        "--environment",
        "-e",
        help="The region to check (primary, dr, ...; default: the configured primary).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (for automation)."),
) -> None:
    """Patroni members and roles, replication lag against the plan's RPO, the vault, SAPI
    and EAPI (and, as they land, Redis Sentinel and the DNS record) of one region.

    Exit 0 when all are healthy, 1 when one is not, 2 for an unknown environment.
    """
    from payapi.ops import health, health_observe

    try:
        settings = get_ctx(ctx).settings
        plan = load_plan(settings.plan_file)
        observations = health_observe.observe(settings, environment)
    except PlanError as exc:
        fail(f"health check: {exc}", EXIT_USAGE)
    except PayapiError as exc:  # an unknown environment (exit 2), an invalid config
        fail(f"health check: {exc}", exc.exit_code)
    report = health.assess(observations, health_observe.context(settings, plan))
    emit(report.to_json(), as_json=as_json, human=_print_human)
    raise typer.Exit(report.exit_code)
