"""`payapi verify system [--environment R] [--comprehensive] [--json]`: the seed's
"Recovery Verification" (component health, the functional curls, a performance check
against the recorded baseline, the security check).

Running is :mod:`payapi.ops.verify_run`, the verdicts :mod:`payapi.ops.verify`; this
module prints. Exit 0 only when every check passes, 1 otherwise, 2 for bad usage.
"""

from __future__ import annotations

import typer

from payapi.cli.context import get_ctx
from payapi.cli.output import EXIT_USAGE, emit, fail
from payapi.cli.security_cmd import print_checks
from payapi.core.errors import PayapiError
from payapi.core.plan import PlanError, load_plan

app = typer.Typer(help="verify", no_args_is_help=True)


@app.command("system")
def system_cmd(
    ctx: typer.Context,
    environment: str | None = typer.Option(
        None, "--environment", "-e", help="The region (primary, dr, ...; default: the primary)."
    ),
    comprehensive: bool = typer.Option(
        False, "--comprehensive", help="The comprehensive security check (every backup object)."
    ),
    payments: int = typer.Option(
        200, "--payments", min=0, help="Payments of the performance check (0: skip it)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (for automation)."),
) -> None:
    """Health of every component, authenticate + pay + read back with a dedicated
    verification client, p50/p99 of a few hundred payments against the baseline (the
    first run records it; p99 beyond 3x fails), and the security check."""
    from payapi.ops import verify_run

    try:
        settings = get_ctx(ctx).settings
        plan = load_plan(settings.plan_file)
        report = verify_run.run(
            settings, plan, environment, comprehensive=comprehensive, payments=payments
        )
    except PlanError as exc:
        fail(f"verify system: {exc}", EXIT_USAGE)
    except PayapiError as exc:
        fail(f"verify system: {exc}", exc.exit_code)
    data = report.to_json()
    emit(
        data,
        as_json=as_json,
        human=lambda d: print_checks(d, f"Verification of {d['environment']}"),
    )
    raise typer.Exit(report.exit_code)
