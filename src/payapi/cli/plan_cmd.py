"""`payapi plan` commands: show the DR plan that every other command enforces, and check
what exists now against it.

Which plan: ``--plan PATH``, else ``plan_file`` from the config, else the default shipped in
the wheel. ``plan show`` needs no config at all, so an operator can read the plan on a
machine where nothing else is set up yet.

``plan check`` exits 0 when no component is in VIOLATION, 1 when one is, 2 when it could
not check (no repository, no key, an invalid plan or config). Deciding is
:func:`payapi.ops.rpo.assess`; this module only prints. It also reports the drills that
are overdue against the plan's test calendar (``drills_overdue`` in the JSON, a warning
line otherwise; :func:`payapi.drills.history.overdue` decides). An overdue drill does not
change the exit code: automation that pages on ``plan check`` pages on data at risk, and
an overdue exercise is a planning matter, not an outage; it must be seen, not paged.

``plan check --feasibility`` asks no server: from the configuration alone it reports, per
component and failure scenario, the worst case the HA configuration allows against the
plan's RTO and RPO (:func:`payapi.ops.feasibility.assess` decides); exit 0 when every
scenario is feasible, 1 when one is not, 2 on an invalid plan or config.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from payapi.cli.context import get_ctx
from payapi.cli.options import parse_now
from payapi.cli.output import console, emit, fail, info, warn
from payapi.core.plan import Duration, Plan, PlanError, load_plan
from payapi.core.settings import ConfigError, Settings

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


def warn_placeholder_contacts(plan: Plan) -> None:
    """A warning (never a failure) per role whose contacts are still the seed's
    placeholders: an incident declared now could not reach them."""
    roles = sorted({path.rsplit(".", 1)[0] for path in plan.placeholder_contacts()})
    if roles:
        warn(
            f"plan: {len(roles)} roles still have placeholder contacts ([Name], [Email]) and "
            f"cannot be paged: {', '.join(roles)}"
        )


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


# --------------------------------------------------------------------------- check

_STATUS_STYLE = {
    "OK": "green",
    "AT RISK": "yellow",
    "VIOLATION": "bold red",
    "NOT MANAGED": "dim",
}
EXIT_CANNOT_CHECK = 2


def _print_check(rep: Any) -> None:
    from payapi.ops.rpo import RpoReport, human_duration

    assert isinstance(rep, RpoReport)
    table = Table(
        title=f"RPO check at {rep.checked_at.astimezone(UTC):%Y-%m-%d %H:%M:%SZ}",
        title_justify="left",
    )
    for col in ("Component", "Status", "RPO", "Exposure", "Last backup", "Last verified"):
        table.add_column(col)
    table.add_column("Retention (plan)")
    for c in rep.components:
        last = "-"
        if c.last_backup is not None:
            last = f"{human_duration(c.last_backup_age)} ago ({c.last_backup.type})"
        verified = "-"
        if c.last_verified is not None:
            verified = f"{human_duration(c.last_verified_age)} ago"
        elif c.last_backup is not None:
            verified = "never"
        style = _STATUS_STYLE.get(c.status.value, "")
        table.add_row(
            c.name,
            f"[{style}]{c.status.value}[/{style}]" if style else c.status.value,
            human_duration(c.rpo),
            human_duration(c.exposure),
            last,
            verified,
            ", ".join(f"{r.type} {r.retention.text}" for r in c.retention) or "-",
        )
    console.print(table)
    for c in rep.components:
        if c.wal is not None:
            w = c.wal
            line = (
                f"{c.name} WAL archiving: {w.archiving}; last segment "
                f"{w.last_archived_wal or w.repository_newest_wal or 'none'}, "
                f"archive lag {human_duration(w.lag)}, {w.failed_count} failed attempts"
            )
            console.print(line, highlight=False)
    for c in rep.components:
        if c.status.value in ("OK", "NOT MANAGED") and not c.notes:
            continue
        for reason in c.reasons:
            console.print(f"{c.name}: {reason}", highlight=False)
        for note in c.notes:
            info(f"{c.name}: note: {note}")
    counts = rep.counts()
    console.print(
        ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no components",
        highlight=False,
    )


@app.command("check")
def check(
    ctx: typer.Context,
    plan: Path | None = PLAN_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print JSON (for automation)."),
    metrics_file: Path | None = typer.Option(
        None,
        "--metrics-file",
        help="Also write the figures as Prometheus metrics to this file (atomically; "
        "for node_exporter's textfile collector).",
    ),
    repository: str | None = typer.Option(
        None,
        "--repository",
        help="A configured repository (primary, or a secondary's name) or a URL "
        "(default: the primary).",
    ),
    key_file: Path | None = typer.Option(
        None, "--key-file", help="Repository key file (default: the config's backup key)."
    ),
    now: str | None = typer.Option(
        None, "--now", help="Judge as of this time (ISO 8601, UTC if no offset; default: now)."
    ),
    no_database: bool = typer.Option(
        False,
        "--no-database",
        help="Do not ask PostgreSQL about WAL archiving (the database is then AT RISK at best).",
    ),
    feasibility: bool = typer.Option(
        False,
        "--feasibility",
        help="Instead: from the configuration only, the worst case the HA configuration "
        "allows per component and failure scenario, against the plan's RTO and RPO.",
    ),
) -> None:
    """Per component: last backup, last verified backup, WAL archive lag, exposure
    against the RPO, and OK / AT RISK / VIOLATION / NOT MANAGED.

    Exit 0 when no component is in VIOLATION, 1 when one is, 2 when it could not check.
    With --feasibility: exit 0 when every scenario is feasible, 1 when one is not.
    """
    if feasibility:
        given = [
            name
            for name, value in (
                ("--metrics-file", metrics_file),
                ("--repository", repository),
                ("--key-file", key_file),
                ("--now", now),
                ("--no-database", no_database or None),
            )
            if value is not None
        ]
        if given:
            fail(f"plan check --feasibility: {', '.join(given)} do not apply", EXIT_CANNOT_CHECK)
        _check_feasibility(ctx, plan, as_json=as_json)
        return
    from payapi.ops import metrics as dr_metrics
    from payapi.ops import rpo, rpo_observe

    when = parse_now(now)
    try:
        loaded = load_plan(resolve_plan_path(ctx, plan))
        settings = get_ctx(ctx).settings
        observations = rpo_observe.observe(
            settings,
            loaded,
            repository=repository,
            key_file=key_file,
            database=not no_database,
        )
    except (PlanError, ConfigError, rpo.CheckError) as exc:
        if metrics_file is not None:
            _write_metrics(metrics_file, dr_metrics.render(None))
        fail(f"plan check: {exc}", EXIT_CANNOT_CHECK)
    result = rpo.report(loaded, observations, when)
    warn_placeholder_contacts(loaded)
    if metrics_file is not None:
        _write_metrics(metrics_file, dr_metrics.render(result))
    late = drills_overdue(settings, loaded, when)
    if as_json:
        emit({**result.to_json(), "drills_overdue": late}, as_json=True)
    else:
        emit(result, as_json=False, human=_print_check)
        warn_drills_overdue(late)
    raise typer.Exit(result.exit_code)


def drills_overdue(settings: Settings, plan: Plan, now: datetime) -> list[dict[str, Any]]:
    """The test calendar's entries that are overdue at ``now``, from the drills folder's
    journals (an unreadable journal is no drill; a folder that cannot be listed, none)."""
    from payapi.drills import history, journal

    try:
        records = journal.load_all(settings.drill_journal_dir())
    except OSError:
        records = []
    return [e.to_json() for e in history.overdue(plan, records, now) if e.overdue]


def warn_drills_overdue(late: list[dict[str, Any]]) -> None:
    if not late:
        info("drills: every test of the plan's calendar is within its cadence")
        return
    parts = []
    for e in late:
        if e["never"]:
            parts.append(f"{e['test_type']} ({e['frequency']}: never run)")
        else:
            parts.append(f"{e['test_type']} ({e['frequency']}: due {e['due_at'][:10]})")
    warn(f"drills overdue against the test calendar: {', '.join(parts)}")


def _write_metrics(path: Path, data: bytes) -> None:
    from payapi.ops.metrics import write_textfile

    try:
        write_textfile(path, data)
    except OSError as exc:
        fail(f"cannot write metrics to {path}: {exc.strerror or exc}", EXIT_CANNOT_CHECK)


# --------------------------------------------------------------------------- feasibility


def _check_feasibility(ctx: typer.Context, plan: Path | None, *, as_json: bool) -> None:
    from payapi.ops import feasibility

    try:
        loaded = load_plan(resolve_plan_path(ctx, plan))
        settings = get_ctx(ctx).settings
    except (PlanError, ConfigError) as exc:
        fail(f"plan check: {exc}", EXIT_CANNOT_CHECK)
    results = feasibility.assess(loaded, settings)
    warn_placeholder_contacts(loaded)
    emit(
        [r.to_json() for r in results] if as_json else results,
        as_json=as_json,
        human=_print_feasibility,
    )
    raise typer.Exit(feasibility.exit_code(results))


def _secs(value: float | None, objective: bool) -> str:
    from payapi.ops.rpo import human_duration

    if value is None:
        return "-" if objective else "unbounded"
    return human_duration(timedelta(seconds=value))


def _print_feasibility(results: Any) -> None:
    from payapi.ops.feasibility import Feasibility

    table = Table(title="Objective feasibility (from configuration)", title_justify="left")
    table.add_column("Component", no_wrap=True)
    table.add_column("Scenario", no_wrap=True)
    for col in ("RTO", "RTO worst", "RPO", "RPO worst", "Feasible"):
        table.add_column(col)
    for r in results:
        assert isinstance(r, Feasibility)
        table.add_row(
            r.component,
            r.scenario,
            _secs(r.rto_objective_seconds, True),
            _secs(r.rto_worst_case_seconds, False),
            _secs(r.rpo_objective_seconds, True),
            _secs(r.rpo_worst_case_seconds, False),
            "[green]yes[/green]" if r.feasible else "[bold red]NO[/bold red]",
        )
    console.print(table)
    for r in results:
        console.print(f"{r.component} {r.scenario}: {r.why}", highlight=False, markup=False)
    bad = sum(1 for r in results if not r.feasible)
    console.print(
        f"{len(results) - bad} feasible, {bad} not feasible", highlight=False, markup=False
    )
