"""`payapi retention`: see what the retention policy keeps, then apply it.

- ``plan``: every backup with *keep* or *remove* and the reasons (which rule keeps it).
- ``purge``: apply the plan, one component at a time under that component's lock (the
  lock a backup of it takes), children before parents, backups before WAL.
  ``--dry-run`` prints what it would remove and touches nothing.
- ``simulate``: run the policy over a synthetic daily history; no repository needed.

The policy comes from the plan's backup table and retention tiers
(:meth:`RetentionPolicy.from_plan`); deciding is :func:`payapi.backup.retention.decide`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from payapi.backup.retention import (
    Decision,
    PurgeReport,
    RepositorySource,
    RetentionPlan,
    RetentionSource,
    decide_for,
    purge,
    simulate,
    synthetic_daily_history,
)
from payapi.backup.retention_policy import (
    GFS,
    PointInTime,
    PolicyError,
    RetentionPolicy,
    SeriesPolicy,
)
from payapi.backup.service import open_repository
from payapi.cli import lifecycle_cmd
from payapi.cli.context import get_ctx
from payapi.cli.options import parse_now
from payapi.cli.output import EXIT_USAGE, console, emit, fail, info
from payapi.cli.plan_cmd import PLAN_OPTION, load_for_cli
from payapi.core.errors import PayapiError
from payapi.core.plan import Plan, PlanError
from payapi.core.settings import ConfigError, Settings

if TYPE_CHECKING:
    pass

app = typer.Typer(
    help="GFS retention of backups and WAL: plan, purge, simulate.", no_args_is_help=True
)


JSON_OPTION = typer.Option(False, "--json", help="Print JSON (for automation).")
COMPONENT_OPTION = typer.Option(
    None, "--component", "-c", help="Only this component (a name or alias from the plan)."
)
REPOSITORY_OPTION = typer.Option(
    None,
    "--repository",
    help="Backup repository: a configured name (primary, or a secondary's) or a URL, "
    "file:///path or s3://bucket/prefix (default: the config's).",
)
KEY_FILE_OPTION = typer.Option(
    None, "--key-file", help="Repository key file (default: the config's backup key)."
)
NOW_OPTION = typer.Option(
    None, "--now", help="Decide as of this time (ISO 8601, UTC if no offset; default: now)."
)


# --------------------------------------------------------------------------- repository


# --------------------------------------------------------------------------- helpers


def _policy(plan: Plan) -> RetentionPolicy:
    try:
        return RetentionPolicy.from_plan(plan)
    except PolicyError as exc:
        fail(f"retention policy from the plan: {exc}")


def _resolve(plan: Plan, component: str | None) -> str | None:
    if component is None:
        return None
    try:
        return plan.resolve(component)
    except PlanError as exc:
        fail(str(exc), EXIT_USAGE)


@contextmanager
def _source(
    ctx: typer.Context, plan: Plan, repository: str | None, key_file: Path | None
) -> Iterator[RetentionSource]:
    try:
        settings: Settings | None = get_ctx(ctx).settings
    except ConfigError as exc:
        if repository is None:
            fail(str(exc))
        settings = None
    try:
        repo = open_repository(settings or Settings(), repository, key_file=key_file)
    except PayapiError as exc:
        fail(str(exc), exc.exit_code)
    source = RepositorySource(repo, plan)
    try:
        yield source
    finally:
        source.close()


def _short(d: Decision) -> str:
    """Kept: the rules that keep it (``window, daily, weekly``); removed: the first reason."""
    if d.keep:
        keys = dict.fromkeys(r.split(":", 1)[0] for r in d.reasons)
        return ", ".join(keys)
    return d.reasons[0] if d.reasons else ""


def _print_plan(plan: RetentionPlan, *, title: str) -> None:
    table = Table(title=title, title_justify="left")
    for col in ("Backup", "Series", "Finished (UTC)", "Verified", "Action", "Why"):
        table.add_column(col)
    for d in plan.decisions:
        when = d.finished_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if d.finished_at else "-"
        action = "[green]keep[/green]" if d.keep else "[red]remove[/red]"
        table.add_row(
            d.backup_id,
            f"{d.component}/{d.type}",
            when,
            "yes" if d.verified else "no",
            action,
            _short(d),
        )
    console.print(table)
    console.print(
        f"backups: keep {len(plan.kept)}, remove {len(plan.removed)}; "
        f"WAL: keep {len(plan.wal_keep)}, remove {len(plan.wal_remove)}",
        highlight=False,
    )
    for note in plan.notes:
        info(f"note: {note}")


def _plan_json(plan: RetentionPlan, policy: RetentionPolicy, **extra: Any) -> dict[str, Any]:
    return {
        **extra,
        "policy": {k: str(v) for k, v in policy.series.items()},
        **plan.to_json(),
    }


# --------------------------------------------------------------------------- commands


@app.command("plan")
def plan_cmd(
    ctx: typer.Context,
    component: str | None = COMPONENT_OPTION,
    as_json: bool = JSON_OPTION,
    now: str | None = NOW_OPTION,
    plan: Path | None = PLAN_OPTION,
    repository: str | None = REPOSITORY_OPTION,
    key_file: Path | None = KEY_FILE_OPTION,
) -> None:
    """List every backup with keep or remove and the reason (which rule keeps it)."""
    loaded = load_for_cli(ctx, plan)
    policy = _policy(loaded)
    when = parse_now(now)
    comp = _resolve(loaded, component)
    with _source(ctx, loaded, repository, key_file) as source:
        try:
            result = decide_for(source, policy, comp, when)
        except Exception as exc:  # a repository error, reported as one line
            fail(f"retention plan: {exc}")
        emit(
            _plan_json(result, policy, repository=source.url),
            as_json=as_json,
            human=lambda _: _print_plan(result, title=f"Retention plan for {source.url}"),
        )


@app.command("purge")
def purge_cmd(
    ctx: typer.Context,
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would go; touch nothing."),
    component: str | None = COMPONENT_OPTION,
    as_json: bool = JSON_OPTION,
    lock_wait: float = typer.Option(
        0.0, "--lock-wait", min=0.0, help="Seconds to wait for a running backup's lock."
    ),
    plan: Path | None = PLAN_OPTION,
    repository: str | None = REPOSITORY_OPTION,
    key_file: Path | None = KEY_FILE_OPTION,
) -> None:
    """Apply the retention plan: remove what no rule keeps (try --dry-run first)."""
    loaded = load_for_cli(ctx, plan)
    policy = _policy(loaded)
    comp = _resolve(loaded, component)
    with _source(ctx, loaded, repository, key_file) as source:
        if dry_run:
            try:
                result = decide_for(source, policy, comp, datetime.now(UTC))
            except Exception as exc:
                fail(f"retention purge: {exc}")
            emit(
                _plan_json(result, policy, dry_run=True, repository=source.url),
                as_json=as_json,
                human=lambda _: _print_plan(result, title=f"Would purge from {source.url}"),
            )
            return
        report = purge(source, policy, comp, lock_wait=timedelta(seconds=lock_wait))
        emit(report.to_json(), as_json=as_json, human=_print_purge)
        if report.failed:
            fail(f"purge stopped: {report.failed}")


def _print_purge(report: PurgeReport) -> None:
    for bid in report.removed:
        console.print(f"removed {bid}", highlight=False)
    console.print(
        f"purged {len(report.removed)} backups and {report.wal_removed} WAL files; "
        f"kept {report.kept} backups ({', '.join(report.components) or 'nothing to do'})",
        highlight=False,
    )
    for note in report.notes:
        info(f"note: {note}")


def _print_simulation(out: dict[str, Any]) -> None:
    table = Table(title=out["policy"], title_justify="left")
    for col in ("Tier", "Keeps for", "Kept", "Adds", "Oldest kept (UTC)"):
        table.add_column(col)
    for name, t in out["tiers"].items():
        oldest = t["oldest"][:10] if t["oldest"] else "-"
        table.add_row(name, t["keep"], str(t["kept"]), str(t["adds"]), oldest)
    console.print(table)
    h = out["history"]
    console.print(
        f"{h['backups']} daily backups ({h['first'][:10]} .. {h['last'][:10]}): "
        f"keep {out['kept']}, remove {out['removed']}",
        highlight=False,
    )


@app.command("simulate")
def simulate_cmd(
    ctx: typer.Context,
    daily_for: int = typer.Option(
        ..., "--daily-for", min=1, max=36600, help="Days of synthetic daily backups."
    ),
    component: str = typer.Option("database", "--component", "-c", help="Component."),
    type_: str = typer.Option("full", "--type", help="Backup type (a row of the plan)."),
    policy_text: str | None = typer.Option(
        None, "--policy", help="Try rules instead of the plan's, e.g. 'GFS(daily=7d, weekly=8w)'."
    ),
    now: str | None = NOW_OPTION,
    as_json: bool = JSON_OPTION,
    plan: Path | None = PLAN_OPTION,
) -> None:
    """Run the policy over a synthetic daily history and print what each tier keeps."""
    when = parse_now(now)
    loaded = load_for_cli(ctx, plan)
    comp = _resolve(loaded, component)
    assert comp is not None
    series = f"{comp}/{type_}"
    if policy_text is not None:
        try:
            sp = SeriesPolicy.parse(policy_text)
        except PolicyError as exc:
            fail(f"--policy: {exc}", EXIT_USAGE)
    else:
        found = _policy(loaded).series.get(series)
        if found is None:
            fail(f"the plan has no retention for {series}", EXIT_USAGE)
        sp = found
    if sp.rule(PointInTime) is not None:
        fail(f"{series} is {sp}: it keeps WAL, not backups; simulate a backup type", EXIT_USAGE)
    if sp.rule(GFS) is None and policy_text is None:
        info(f"note: {series} has no GFS tiers in the plan ({sp})")
    policy = RetentionPolicy({series: sp})
    history = synthetic_daily_history(daily_for, when, component=comp, type_=type_)
    out = {"series": series, **simulate(history, policy, when)}
    emit(out, as_json=as_json, human=_print_simulation)


# `retention lifecycle` (S3 bucket lifecycle rules) lives in payapi.cli.lifecycle_cmd.
app.command("lifecycle")(lifecycle_cmd.lifecycle_cmd)
