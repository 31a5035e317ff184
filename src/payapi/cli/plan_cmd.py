"""`payapi plan` commands: show the DR plan that every other command enforces.

Which plan: ``--plan PATH``, else ``plan_file`` from the config, else the default shipped in
the wheel. ``plan show`` needs no config at all, so an operator can read the plan on a
machine where nothing else is set up yet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from payapi.cli.context import get_ctx
from payapi.cli.output import console, emit, fail, info
from payapi.config import ConfigError
from payapi.plan import Duration, Plan, PlanError, load_plan

app = typer.Typer(help="plan", no_args_is_help=True)

PLAN_OPTION = typer.Option(
    None,
    "--plan",
    help="dr-plan.yaml to use (default: plan_file from the config, else the packaged plan).",
)


def resolve_plan_path(ctx: typer.Context, plan: Path | None) -> Path | None:
    """The plan file to read: the option, else the config's ``plan_file``, else None.

    The config is only consulted when no ``--plan`` is given, so a broken config never
    stops an explicit plan from being read.
    """
    if plan is not None:
        return plan
    return get_ctx(ctx).settings.plan_file


def load_for_cli(ctx: typer.Context, plan: Path | None) -> Plan:
    """Load the plan for a command; any problem is one line on stderr and exit 1."""
    try:
        return load_plan(resolve_plan_path(ctx, plan))
    except (PlanError, ConfigError) as exc:
        fail(str(exc))


def _dur(d: Duration | None) -> str:
    return "-" if d is None else d.text


def _print_human(plan: Plan) -> None:
    comps = Table(title=plan.title, title_justify="left")
    for col in ("Component", "RTO", "RPO", "Priority", "Primary approach", "Alternative"):
        comps.add_column(col)
    for name, c in plan.components.items():
        comps.add_row(
            name,
            _dur(c.rto),
            _dur(c.rpo),
            c.priority or "-",
            c.recovery.primary if c.recovery else "-",
            c.recovery.alternative if c.recovery else "-",
        )
    console.print(comps)

    backups = Table(title="Backups", title_justify="left")
    for col in ("Component", "Type", "Frequency", "Retention", "Location"):
        backups.add_column(col)
    for b in plan.backups:
        backups.add_row(b.component, b.type, b.frequency.text, b.retention.text, b.location)
    console.print(backups)

    tiers = ", ".join(f"{t.name} {t.keep.text}" for t in plan.retention_tiers)
    console.print(f"Retention tiers: {tiers}", highlight=False)
    tests = ", ".join(f"{name} {t.frequency.text}" for name, t in plan.tests.items())
    console.print(f"Test calendar: {tests}", highlight=False)
    placeholders = plan.placeholder_contacts()
    if placeholders:
        info(
            f"note: {len(placeholders)} contacts are still placeholders from the seed "
            f"(first: {placeholders[0]}); set plan_file to your own copy of the plan"
        )


def plan_as_json(plan: Plan) -> dict[str, Any]:
    """The whole plan as JSON-ready data; each duration is ``{"text", "seconds"}``."""
    return plan.model_dump(mode="json")


@app.command("show")
def show(
    ctx: typer.Context,
    plan: Path | None = PLAN_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print the whole plan as JSON."),
) -> None:
    """Print the plan: components with RTO/RPO/priority/approach, and the backup policy."""
    loaded = load_for_cli(ctx, plan)
    emit(plan_as_json(loaded) if as_json else loaded, as_json=as_json, human=_print_human)
