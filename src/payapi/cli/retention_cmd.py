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

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import typer
from rich.table import Table

from payapi.backup.lock import DEFAULT_LEASE, Lock, LockError, LockStore, lock_name
from payapi.backup.retention import (
    GFS,
    BackupRef,
    Decision,
    PointInTime,
    PolicyError,
    RetentionPlan,
    RetentionPolicy,
    SeriesPolicy,
    WalRef,
    decide,
    simulate,
    synthetic_daily_history,
)
from payapi.cli import lifecycle_cmd
from payapi.cli.context import get_ctx
from payapi.cli.options import parse_now
from payapi.cli.output import EXIT_USAGE, console, emit, fail, info
from payapi.cli.plan_cmd import PLAN_OPTION, load_for_cli
from payapi.config import BackupSettings, ConfigError, RepositoryLocation, Settings
from payapi.plan import Plan, PlanError

if TYPE_CHECKING:
    from payapi.backup.repository import Repository

app = typer.Typer(
    help="GFS retention of backups and WAL: plan, purge, simulate.", no_args_is_help=True
)

WAL_COMPONENT = "database"
_EPOCH = datetime(
    1970, 1, 1, tzinfo=UTC
)  # the repository's WAL archive is the PostgreSQL cluster's

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


class RetentionSource(Protocol):
    """What retention needs from a backup repository."""

    url: str

    def backups(self, component: str | None) -> list[BackupRef]: ...

    def wal(self) -> list[WalRef]: ...

    def delete_backup(self, backup_id: str) -> None: ...

    def delete_wal(self, names: Sequence[str]) -> int: ...

    def lock_store(self) -> LockStore: ...

    def close(self) -> None: ...


class RepositoryUnavailable(Exception):
    """The repository cannot be opened for retention; one line for the operator."""


class RepositorySource:
    """:class:`RetentionSource` over :class:`payapi.backup.repository.Repository`."""

    def __init__(self, repo: Repository, plan: Plan) -> None:
        self.repo = repo
        self.plan = plan
        self.url = str(repo.url)

    def _component(self, name: str) -> str:
        try:
            return self.plan.resolve(name)
        except PlanError:
            return name  # unknown to the plan: unmanaged, so kept

    def backups(self, component: str | None) -> list[BackupRef]:
        return [
            BackupRef(
                backup_id=b.backup_id,
                component=self._component(b.component),
                type=b.type,
                finished_at=b.finished_at,
                parent=b.parent,
                verified_at=b.verified_at,
                wal_start=b.wal_start,
                wal_end=b.wal_end,
            )
            for b in self.repo.list_backups(component)
        ]

    def wal(self) -> list[WalRef]:
        return [WalRef(name, WAL_COMPONENT) for name in self.repo.list_wal()]

    def delete_backup(self, backup_id: str) -> None:
        self.repo.delete_backup(backup_id)

    def delete_wal(self, names: Sequence[str]) -> int:
        return self.repo.delete_wal(names)

    def lock_store(self) -> LockStore:
        return self.repo.lock_store()

    def close(self) -> None:
        self.repo.close()


def repository_location(section: BackupSettings, repository: str | None) -> RepositoryLocation:
    """``--repository``: a configured name (``primary`` or a secondary), else a URL that
    is opened with the primary's key and S3 settings. A bare word that names no
    repository is a :class:`ConfigError` (a typo must not open a folder of that name)."""
    if repository is None or "/" not in repository:
        return section.location(repository)
    return replace(section.location(), url=repository)


def open_retention_source(
    settings: Settings | None, plan: Plan, repository: str | None, key_file: Path | None
) -> RetentionSource:
    """Open the backup repository that ``plan``/``purge`` work on.

    The URL is ``--repository``, else ``backup.repository`` of the config (or
    ``$PAYAPI_BACKUP__REPOSITORY``); the key is ``--key-file``, else ``backup.key_file``,
    else the variable named by ``backup.key_env``. ``--repository`` may also name a
    configured repository (``primary``, or a ``[backup.secondary.NAME]``, with its key).
    """
    from payapi.backup.crypto import load_repository_key
    from payapi.backup.errors import RepositoryError
    from payapi.backup.repository import Repository

    section = settings.backup if settings is not None else BackupSettings()
    where = repository_location(section, repository)
    url = where.url
    if not url:
        raise RepositoryUnavailable(
            "no backup repository: set backup.repository in the config "
            "(or $PAYAPI_BACKUP__REPOSITORY), or pass --repository URL"
        )
    try:
        key = load_repository_key(key_file or where.key_file, env=where.key_env)
        options: dict[str, Any] = {"region": where.s3_region} if where.s3_region else {}
        repo = Repository.open(
            url, key, s3_endpoint_url=where.s3_endpoint_url, s3_sse=where.s3_sse, **options
        )
    except RepositoryError as exc:
        raise RepositoryUnavailable(str(exc)) from None
    try:
        repo.require_config()
    except RepositoryError as exc:
        repo.close()
        raise RepositoryUnavailable(str(exc)) from None
    return RepositorySource(repo, plan)


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
        source = open_retention_source(settings, plan, repository, key_file)
    except RepositoryUnavailable as exc:
        fail(str(exc))
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


def _decide_for(
    source: RetentionSource, policy: RetentionPolicy, component: str | None, now: datetime
) -> RetentionPlan:
    backups = source.backups(component)
    wal = source.wal() if component in (None, WAL_COMPONENT) else []
    scoped = policy.only(component) if component is not None else policy
    return decide(backups, wal, scoped, now)


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
            result = _decide_for(source, policy, comp, when)
        except Exception as exc:  # a repository error, reported as one line
            fail(f"retention plan: {exc}")
        emit(
            _plan_json(result, policy, repository=source.url),
            as_json=as_json,
            human=lambda _: _print_plan(result, title=f"Retention plan for {source.url}"),
        )


@dataclass
class _PurgeReport:
    removed: list[str] = field(default_factory=list)
    wal_removed: int = 0
    kept: int = 0
    components: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failed: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": False,
            "components": self.components,
            "kept": self.kept,
            "removed": len(self.removed),
            "removed_backups": self.removed,
            "wal_removed": self.wal_removed,
            "notes": self.notes,
            "failed": self.failed,
        }


def _deletion_order(plan: RetentionPlan, backups: Sequence[BackupRef]) -> list[str]:
    """Children before parents, so that a purge stopped halfway leaves no orphan chain."""
    by_id = {b.backup_id: b for b in backups}

    def depth(bid: str) -> int:
        n, seen, cur = 0, {bid}, by_id.get(bid)
        while cur is not None and cur.parent is not None and cur.parent not in seen:
            seen.add(cur.parent)
            cur = by_id.get(cur.parent)
            n += 1
        return n

    removed = list(plan.removed)
    removed.sort(key=lambda d: (-depth(d.backup_id), d.finished_at or _EPOCH, d.backup_id))
    return [d.backup_id for d in removed]


def _purge_component(
    source: RetentionSource,
    lock: Lock,
    policy: RetentionPolicy,
    component: str,
    lease: timedelta,
    wait: timedelta,
    report: _PurgeReport,
) -> None:
    holder = f"retention purge (pid {os.getpid()})"
    with lock.hold(lock_name(component), holder, lease, wait=wait) as held:
        # Decide under the lock: the listing is what no backup is changing right now.
        backups = source.backups(component)
        wal = source.wal() if component == WAL_COMPONENT else []
        result = decide(backups, wal, policy.only(component), datetime.now(UTC))
        report.kept += len(result.kept)
        report.notes.extend(result.notes)
        for backup_id in _deletion_order(result, backups):
            held.renew()
            try:
                source.delete_backup(backup_id)
            except Exception as exc:
                report.failed = f"deleting backup {backup_id} of {component}: {exc}"
                return
            report.removed.append(backup_id)
        if result.wal_remove:
            held.renew()
            try:
                report.wal_removed += source.delete_wal(list(result.wal_remove))
            except Exception as exc:
                report.failed = f"deleting WAL of {component}: {exc}"


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
                result = _decide_for(source, policy, comp, datetime.now(UTC))
            except Exception as exc:
                fail(f"retention purge: {exc}")
            emit(
                _plan_json(result, policy, dry_run=True, repository=source.url),
                as_json=as_json,
                human=lambda _: _print_plan(result, title=f"Would purge from {source.url}"),
            )
            return
        report = _PurgeReport()
        try:
            if comp is not None:
                components = [comp]
            else:
                found = {b.component for b in source.backups(None)}
                if source.wal():
                    found.add(WAL_COMPONENT)
                components = sorted(found)
            lock = Lock(source.lock_store())
            for name in components:
                report.components.append(name)
                _purge_component(
                    source,
                    lock,
                    policy,
                    name,
                    DEFAULT_LEASE,
                    timedelta(seconds=lock_wait),
                    report,
                )
                if report.failed:
                    break
        except LockError as exc:
            report.failed = str(exc)
        except Exception as exc:
            report.failed = f"retention purge: {exc}"
        emit(report.to_json(), as_json=as_json, human=_print_purge)
        if report.failed:
            fail(f"purge stopped: {report.failed}")


def _print_purge(report: _PurgeReport) -> None:
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
