"""`payapi failover --component db|vault|redis [--region R] [--to MEMBER] [--switchover]
[--json]`: ask for an in-region failover and wait until it has happened.

The work is :func:`payapi.replication.failover.failover` (deciding is
:func:`payapi.replication.decide.choose_failover_target`); this module parses and prints.
Exit 0 done, 1 failed (the steps so far are still printed), 2 refused or bad usage; the
error is one line.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from payapi.cli.context import get_ctx
from payapi.cli.output import EXIT_FAILED, EXIT_USAGE, console, emit, fail, journal
from payapi.core.errors import PayapiError
from payapi.core.plan import PlanError, load_plan
from payapi.core.topology import topology_from_settings


def _print_human(data: dict[str, Any]) -> None:
    table = Table(title_justify="left", show_header=True)
    for col in ("Step", "Status", "Seconds"):
        table.add_column(col)
    for s in data["steps"]:
        table.add_row(s["name"], s["status"], f"{s['seconds']:.1f}")
    console.print(table)
    line = (
        f"{data['component']} in region {data['region']}: {data['from'] or '(no leader)'} -> "
        f"{data['to']} in {data['seconds']:.1f}s"
    )
    if data.get("vault"):
        line += f"; vault serving: {', '.join(data['vault'])}"
    console.print(line, markup=False, highlight=False)


def failover(
    ctx: typer.Context,
    component: str = typer.Option(..., "--component", "-c", help="db, vault or redis."),
    region: str | None = typer.Option(
        None, "--region", help="The region (default: the configured primary region)."
    ),
    to: str | None = typer.Option(
        None, "--to", help="The member to promote (default: the best candidate)."
    ),
    switchover: bool = typer.Option(
        False,
        "--switchover",
        help="A planned switchover: a running leader hands over to a target in sync.",
    ),
    timeout: float = typer.Option(
        60.0, "--timeout", help="Seconds to wait for each step (new leader, writable)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (for automation)."),
) -> None:
    """Fail the database (db), the vault (the database, then the standby vault serving)
    or Redis over within a region; refused when the target does not exist, is not in sync
    (switchover) or lags beyond the plan's RPO / maximum_lag_on_failover."""
    from payapi.replication import failover as fo

    try:
        settings = get_ctx(ctx).settings
        plan = load_plan(settings.plan_file)
        topology = topology_from_settings(settings)
        where = topology.region(region) if region is not None else topology.primary
    except PlanError as exc:
        fail(f"failover: {exc}", EXIT_USAGE)
    except PayapiError as exc:  # the config, an unknown region
        fail(str(exc), exc.exit_code)
    try:
        # Deciding prints nothing, so that a refusal is exactly one line.
        prepared = fo.prepare(
            where,
            component,
            plan,
            to=to,
            switchover=switchover,
            maximum_lag_on_failover=settings.patroni.maximum_lag_on_failover,
            write_rate_bytes_per_second=settings.patroni.write_rate_bytes_per_second,
            timeout=timeout,
        )
        with journal(quiet=as_json, prefix="failover: ") as j:
            result = fo.run(prepared, j)
    except fo.FailoverRefused as exc:
        fail(str(exc), EXIT_USAGE)
    except fo.FailoverFailed as exc:
        emit(exc.result.to_json(), as_json=as_json, human=_print_human)
        fail(str(exc), EXIT_FAILED)
    emit(result.to_json(), as_json=as_json, human=_print_human)
