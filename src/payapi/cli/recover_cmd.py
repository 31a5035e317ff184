"""`payapi recover …`: the recovery procedures of the plan (seed "Recovery Procedures").

    payapi recover corruption --component db --since T [--tables payments[,…]]
                              [--drop-ids FILE] [--plan-file F] [--apply [--yes]]
                              [--verify] [--json]
    payapi recover corruption --component vault --since T [--keep-ids FILE] …
    payapi recover component eapi|sapi|vault|redis|db [--region R] [--dry-run] [--yes]
                              [--json]
    payapi recover system --from-backups --into DIR [--repository URL --key-file F]
                          [--vault-key-file K] [--vault auto|backup|database]
                          [--redis-rebuild] [--yes] [--json]
    payapi recover system --from-backups --region dr [--redis-rebuild] [--yes] [--json]

The work is :mod:`payapi.recovery.corruption` (and ``corruption_vault``,
``corruption_checks``), for a component the shipped runbook ``component-NAME`` run by
the engine (journaled: ``payapi runbook resume RUN_ID`` continues it), and for the whole
system :mod:`payapi.lab.rebuild` (a lost region of the two-region lab:
:mod:`payapi.lab.region_rebuild`); this command parses, confirms and prints. Exit 0 done,
1 failed
(the correction, or a ``--verify`` check), 2 bad usage (nothing was changed).
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import typer

from payapi.cli.context import get_ctx
from payapi.cli.output import EXIT_USAGE, console, emit, fail, journal
from payapi.core.errors import PayapiError

app = typer.Typer(
    help="Recovery procedures: data corruption, component failure, complete system recovery.",
    no_args_is_help=True,
)
COMPONENTS = ("eapi", "sapi", "vault", "redis", "db")


@app.callback()
def recover() -> None:
    """Recovery procedures of the DR plan."""


def _confirm(what: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        fail(f"{what}: confirm with --yes (no terminal to ask on)", EXIT_USAGE)
    if not typer.confirm(f"{what}?", default=False, err=True):
        fail(f"{what}: not confirmed", EXIT_USAGE)


def _ids(path: Path | None, option: str) -> tuple[str, ...]:
    if path is None:
        return ()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"{option} {path}: {exc.strerror or exc}", EXIT_USAGE)
    return tuple(s for line in text.splitlines() if (s := line.split("#", 1)[0].strip()))


def _since(text: str) -> datetime:
    from payapi.backup.restore_plan import parse_time

    try:
        return parse_time(text)
    except ValueError as exc:
        fail(f"--since: {exc}", EXIT_USAGE)


@app.command("corruption")
def corruption(
    ctx: typer.Context,
    component: str = typer.Option(..., "--component", "-c", help="db or vault."),
    since: str = typer.Option(
        ..., "--since", help="When the corruption began (ISO 8601; UTC if no zone)."
    ),
    tables: list[str] = typer.Option(
        ["payments"], "--tables", help="db: tables to compare (comma-separated or repeated)."
    ),
    drop_ids: Path | None = typer.Option(
        None,
        "--drop-ids",
        help="db: file of primary keys (one a line, TABLE:ID or ID of the first table) of "
        "rows created after T to delete instead of keeping.",
    ),
    keep_ids: Path | None = typer.Option(
        None, "--keep-ids", help="vault: file of variable ids to leave as they are now."
    ),
    plan_file: Path | None = typer.Option(
        None, "--plan-file", help="Where to write the correction plan (JSON)."
    ),
    work_dir: Path | None = typer.Option(
        None, "--work-dir", help="Where the scratch copy goes (default: [backup] work_dir)."
    ),
    apply: bool = typer.Option(False, "--apply", help="Execute the plan (one transaction)."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="db: say what each step would do; change nothing."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Apply without asking."),
    verify: bool = typer.Option(False, "--verify", help="Run the integrity checks at the end."),
    archive_timeout: float = typer.Option(
        120.0, "--archive-timeout", help="Seconds to wait for T's WAL to be archived."
    ),
    recovery_timeout: float = typer.Option(
        600.0, "--recovery-timeout", help="Seconds to wait for the copy to recover."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (for automation)."),
) -> None:
    """Correct data corrupted since T from a copy of the database recovered just before T
    beside production: a plan first (rows to put back, rows created since kept), then,
    with --apply, one guarded transaction and an audit event."""
    from payapi.cli.backup_cmd import resolve_component
    from payapi.recovery.corruption import CorruptionRequest

    canonical = resolve_component(component)
    if canonical not in ("database", "vault"):
        fail(f"--component {component}: corruption recovery is for db or vault", EXIT_USAGE)
    names = tuple(n.strip() for item in tables for n in item.split(",") if n.strip())
    if not names:
        fail("--tables: name at least one table", EXIT_USAGE)
    if canonical == "vault" and drop_ids is not None:
        fail("--drop-ids is for --component db (the vault keeps with --keep-ids)", EXIT_USAGE)
    if canonical == "database" and keep_ids is not None:
        fail("--keep-ids is for --component vault", EXIT_USAGE)
    if apply and not yes and not sys.stdin.isatty():
        fail("--apply: confirm with --yes (no terminal to ask on)", EXIT_USAGE)
    req = CorruptionRequest(
        since=_since(since),
        tables=names,
        drop_ids=_ids(drop_ids, "--drop-ids"),
        keep_ids=_ids(keep_ids, "--keep-ids"),
        plan_file=plan_file,
        work_dir=work_dir,
        archive_timeout=archive_timeout,
        recovery_timeout=recovery_timeout,
    )
    ids_file = drop_ids if canonical == "database" else keep_ids
    _corruption_run(ctx, req, canonical, ids_file, apply=apply, yes=yes, verify=verify,
                    dry_run=dry_run, as_json=as_json)  # fmt: skip


def _corruption_run(
    ctx: typer.Context,
    req: Any,
    canonical: str,
    ids_file: Path | None,
    *,
    apply: bool,
    yes: bool,
    verify: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """On the engine: the shipped runbook ``corruption-db`` or ``corruption-vault``."""
    from payapi.cli.recovery_providers import install
    from payapi.cli.runbook_cmd import _show_dry_run
    from payapi.recovery import corruption_run as cr
    from payapi.recovery import service
    from payapi.recovery.corruption import default_plan_file

    settings = get_ctx(ctx).settings
    vault = canonical == "vault"
    runbook = cr.RUNBOOK_VAULT if vault else cr.RUNBOOK_DB
    plan_file = (req.plan_file or default_plan_file("vault" if vault else "db")).expanduser()
    ids = str(ids_file.expanduser().absolute()) if ids_file else ""
    given = {
        "since": req.since.isoformat(),
        **({"keep_ids_file": ids} if vault else {"tables": ",".join(req.tables)}),
        **({} if vault else {"drop_ids_file": ids}),
        "plan_file": str(plan_file.absolute()),
        "work_dir": str(req.work_dir.expanduser().absolute()) if req.work_dir else "",
        "apply": "true" if apply else "false",
        "verify": "true" if verify else "false",
        "archive_timeout": str(req.archive_timeout),
        "recovery_timeout": str(req.recovery_timeout),
    }
    install()
    try:
        cr.precheck(settings, req, "vault" if vault else "db")
        if dry_run:
            plan = service.plan_dry_run(settings, name=runbook, given=given)
            emit(plan.to_json(), as_json=as_json, human=_show_dry_run)
            if not plan.ok:
                raise typer.Exit(1)
            return
        service.resolve(settings, name=runbook, given=given)
        if apply:
            what = "vault" if vault else "db"
            _confirm(f"plan and apply a correction of the live {what} since {given['since']}", yes)
        with journal(quiet=as_json) as j:
            result = service.start_run(
                settings,
                name=runbook,
                given=given,
                journal=j,
                operator=get_ctx(ctx).operator(),
                yes=yes,
            )
        view = service.view(result.path)
        params = {k: v for k, v in view.state.params.items() if k not in ("apply", "verify")}
        params["component"] = "vault" if vault else "db"
        out = cr.outcome_json(settings, result.run_id, params)
    except PayapiError as exc:
        fail(str(exc), exc.exit_code)
    if not as_json:
        _print_plan_file(out)
    emit(out, as_json=as_json, human=_print_result)
    status = view.status
    if status == "waiting_approval":
        fail(
            f"run {result.run_id} waits for the approval of step apply: review it with "
            f"payapi runbook show {result.run_id}, then payapi --as LOGIN runbook approve "
            f"{result.run_id} --step apply"
        )
    if status != "succeeded":
        fail(f"run {result.run_id} {status}: {view.state.reason}")


def _print_plan_file(out: dict[str, Any]) -> None:
    import json

    from payapi.recovery.corruption_run import table_summary_json

    try:
        doc = json.loads(Path(out["plan_file"]).read_text())
    except (OSError, ValueError):
        return
    console.print(
        f"correction plan {out['plan_file']} (copy of backup {doc.get('backup_id')} recovered "
        f"to {doc.get('target_time')}; run {out['run_id']})",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    if "variables" in doc:
        console.print(
            f"  vault: {doc['restored_rows']} variables get their pre-T value as a new version "
            f"({doc['deleted_rows_restored']} whose pre-T version is no longer stored), "
            f"{doc['kept_rows']} kept, {doc['unchanged_rows']} unchanged",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        for r in doc["variables"][:20]:
            now = "none" if not r.get("now") else f"v{r['now']['version']}"
            console.print(
                f"    {r['resource_id']}: v{r['before']['version']} as a new version after {now}",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
    for t in doc.get("tables", []):
        console.print(f"  {table_summary_json(t)}", highlight=False, markup=False, soft_wrap=True)
        for change in t["changes"][:20]:
            key = ", ".join(f"{k}={v}" for k, v in change["key"].items())
            cols = ", ".join(
                f"{col}: {d['before']} → {d['now']}" for col, d in change.get("diff", {}).items()
            )
            console.print(
                f"    {change['action']} {key}  {cols}",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
        if len(t["changes"]) > 20:
            console.print(
                f"    … {len(t['changes']) - 20} more in the plan file",
                markup=False,
                soft_wrap=True,
            )


def _print_result(d: dict[str, Any]) -> None:
    if d["applied"]:
        console.print(
            f"applied: {d['restored_rows']} rows restored ({d['deleted_rows_restored']} "
            f"re-inserted), {d['kept_rows']} kept, {d['dropped_rows']} dropped"
            + (f"; audit event {d['audit']['seq']}" if (d.get("audit") or {}).get("seq") else ""),
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    else:
        console.print(
            "not applied (review the plan, then run again with --apply)",
            markup=False,
            soft_wrap=True,
        )
    for check in (d.get("integrity") or {}).get("checks", []):
        mark = "ok  " if check["ok"] else "FAIL"
        console.print(
            f"  {mark} {check['name']}: {check['detail']}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


def _dry_run(settings: Any, runbook: str, given: dict[str, str], as_json: bool) -> None:
    """``--dry-run`` of a recovery on the engine: each step resolved against the live
    state, printed; exit 1 when one does not resolve. Nothing changes, no run is written."""
    from payapi.cli.runbook_cmd import _show_dry_run
    from payapi.recovery import service

    plan = service.plan_dry_run(settings, name=runbook, given=given)
    emit(plan.to_json(), as_json=as_json, human=_show_dry_run)
    if not plan.ok:
        raise typer.Exit(1)


@app.command("component")
def component(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="eapi, sapi, vault, redis or db."),
    region: str = typer.Option("", "--region", help="The region (default: the primary)."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Say what each rung would do, read live; change nothing."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (for automation)."),
) -> None:
    """The seed's component-failure ladder as a runbook: check health (healthy: nothing
    to do), fail over to a standby (vault, redis, db; where one exists), restart, scale
    down and up, reapply the configuration from its backup, restore from backup (vault,
    redis, db), verify. Each rung runs only while the component is still unhealthy."""
    from payapi.cli.runbook_cmd import _show_run
    from payapi.recovery import service

    if name not in COMPONENTS:
        fail(f"unknown component {name!r}; one of {', '.join(COMPONENTS)}", EXIT_USAGE)
    settings = get_ctx(ctx).settings
    runbook = service.COMPONENT_RUNBOOK.format(name)
    given = {"region": region} if region else {}
    try:
        if region:
            from payapi.recovery.component_targets import region_of

            region_of(settings, region)  # an unknown region: exit 2 before anything runs
        if dry_run:
            _dry_run(settings, runbook, given, as_json)
            return
        service.resolve(settings, name=runbook, given=given)
        _confirm(f"recover {name}" + (f" in region {region}" if region else ""), yes)
        with journal(quiet=as_json) as j:
            result = service.start_run(
                settings,
                name=runbook,
                given=given,
                journal=j,
                operator=get_ctx(ctx).operator(),  # --as: that operator's execute right
                yes=yes,
            )
    except PayapiError as exc:
        fail(str(exc), exc.exit_code)
    view = service.view(result.path)
    outcome = service.component_outcome(view)
    data = {**view.to_json(), "component": name, "outcome": outcome}

    def human(d: dict[str, Any]) -> None:
        _show_run(d)
        console.print(d["outcome"], markup=False, highlight=False)

    emit(data, as_json=as_json, human=human)
    if not result.ok:
        raise typer.Exit(1)


@app.command("system")
def system(
    ctx: typer.Context,
    from_backups: bool = typer.Option(
        False, "--from-backups", help="Rebuild from the backup repository (the only source)."
    ),
    into: Path | None = typer.Option(
        None, "--into", help="An empty folder for the rebuilt platform."
    ),
    region: str | None = typer.Option(
        None,
        "--region",
        help="Instead of --into: an empty region of the two-region lab (e.g. dr) that "
        "does not serve; it comes back a standby of the serving region.",
    ),
    repository: str | None = typer.Option(
        None,
        "--repository",
        help="The backup repository's URL (default: the config's backup.repository).",
    ),
    key_file: Path | None = typer.Option(
        None, "--key-file", help="The repository key (default: the config's backup.key_file)."
    ),
    vault_key_file: Path | None = typer.Option(
        None,
        "--vault-key-file",
        help="The vault's escrowed data key (default: the config's vault.data_key_file).",
    ),
    audit_head_file: Path | None = typer.Option(
        None,
        "--audit-head-file",
        help="The old site's audit head (its WORM copy): count the events lost, detect edits.",
    ),
    vault: str = typer.Option(
        "auto",
        "--vault",
        help="auto (the newer of the database's vault and the vault backup), backup, database.",
    ),
    redis_rebuild: bool = typer.Option(
        False, "--redis-rebuild", help="Start Redis empty instead of from its snapshot."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Say what each step would do, read live; change nothing."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Build without asking."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (for automation)."),
) -> None:
    """Build a working platform in an empty folder (or a lost region of the two-region
    lab, as a standby of the serving one) from the backups alone (configuration, database
    with its WAL, vault, Redis, services), verify it with the seed's curls, and print how
    long each step took. The runbook system-recovery: `payapi runbook resume RUN_ID`
    continues a run that failed or was killed. `payapi lab down --dir DIR` stops it."""
    if not from_backups:
        fail("say where the platform comes from: --from-backups", EXIT_USAGE)
    if vault not in ("auto", "backup", "database"):
        fail(f"--vault {vault}: one of auto, backup, database", EXIT_USAGE)
    if (into is None) == (region is None):
        fail("say where to build: --into DIR or --region NAME (one of them)", EXIT_USAGE)
    given: dict[str, str] = {"vault": vault, "redis_rebuild": str(redis_rebuild).lower()}
    if region is not None:
        given_for_into = {
            "--repository": repository,
            "--key-file": key_file,
            "--vault-key-file": vault_key_file,
            "--audit-head-file": audit_head_file,
            "--vault": None if vault == "auto" else vault,
        }
        extra = [option for option, value in given_for_into.items() if value is not None]
        if extra:
            fail(f"{', '.join(extra)}: for --into only (a region is rebuilt from the lab's "
                 "repository, with the lab's keys)", EXIT_USAGE)  # fmt: skip
        settings, what = _system_region_target(ctx, region)
        given["region"] = region
    else:
        assert into is not None
        settings, what = _system_into_target(
            ctx, into, repository, key_file, vault_key_file, audit_head_file, given
        )
    _system_run(ctx, settings, given, what, dry_run=dry_run, yes=yes, as_json=as_json)


def _system_into_target(
    ctx: typer.Context,
    into: Path,
    repository: str | None,
    key_file: Path | None,
    vault_key_file: Path | None,
    audit_head_file: Path | None,
    given: dict[str, str],
) -> tuple[Any, str]:
    """The settings the run is journaled under, and what it builds; ``given`` gets the
    target's parameters. Refused (exit 2) before anything is made: :func:`preflight`."""
    from payapi.core.settings import Settings
    from payapi.lab.rebuild import RebuildRequest, preflight

    settings = None
    if repository is None or key_file is None or vault_key_file is None:
        try:
            settings = get_ctx(ctx).settings
        except PayapiError as exc:
            fail(f"{exc} (or give --repository, --key-file and --vault-key-file)", EXIT_USAGE)
    repo_url = repository or (settings.backup.repository if settings else "")
    key = key_file or (settings.backup.key_file if settings else None)
    vault_key = vault_key_file or (settings.vault.data_key_file if settings else None)
    if key is None:
        fail("no repository key: give --key-file (no backup holds it)", EXIT_USAGE)
    if vault_key is None:
        fail("no vault data key: give --vault-key-file (vault backups hold only its check)",
             EXIT_USAGE)  # fmt: skip
    req = RebuildRequest(
        into=into.expanduser().absolute(),
        repository=repo_url,
        key_file=key.expanduser().absolute(),
        vault_key_file=vault_key.expanduser().absolute(),
        audit_head_file=audit_head_file.expanduser().absolute() if audit_head_file else None,
    )
    try:
        preflight(req)
    except PayapiError as exc:
        fail(str(exc), exc.exit_code)
    given.update(
        into=str(req.into),
        repository=repo_url,
        key_file=str(req.key_file),
        vault_key_file=str(req.vault_key_file),
        audit_head_file=str(req.audit_head_file or ""),
    )
    if settings is None:
        try:
            settings = get_ctx(ctx).settings
        except PayapiError:
            settings = Settings()  # no config at all: the journal goes to ./runbooks
    return settings, f"build and start a platform in {req.into} from {repo_url}"


def _system_region_target(ctx: typer.Context, name: str) -> tuple[Any, str]:
    """``--region NAME``: the two-region lab of the config; refused (exit 2) unless the
    region is empty and does not serve (:func:`check_region`)."""
    from payapi.lab.region_rebuild import check_region
    from payapi.lab.regions import TwoRegionLab, lab_dir_of

    try:
        settings = get_ctx(ctx).settings
    except PayapiError as exc:
        fail(str(exc), EXIT_USAGE)
    lab_dir = lab_dir_of(settings.config_path)
    if lab_dir is None:
        fail(
            f"--region {name}: not a two-region lab's config (payapi --config "
            "DIR/payapi.toml of payapi lab up --regions primary,dr)",
            EXIT_USAGE,
        )
    lab = TwoRegionLab(lab_dir)
    try:
        check_region(lab, name)
    except PayapiError as exc:
        fail(str(exc), exc.exit_code)
    return settings, f"rebuild region {name} from {lab.repository_url}"


def _system_run(
    ctx: typer.Context,
    settings: Any,
    given: dict[str, str],
    what: str,
    *,
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """The ``system-recovery`` runbook on the engine (journaled, resumable, ``execute``
    on ``webservice:runbooks/system-recovery``), then the rebuild's result + ``run_id``."""
    from payapi.cli.recovery_providers import install_system_recovery
    from payapi.lab.system_recovery import state_of, target_dir
    from payapi.recovery import service
    from payapi.recovery.actions_system import RUNBOOK, SystemParams

    install_system_recovery()
    try:
        if dry_run:
            _dry_run(settings, RUNBOOK, given, as_json)
            return
        service.resolve(settings, name=RUNBOOK, given=given)
        _confirm(what, yes)
        with journal(quiet=as_json) as j:
            run = service.start_run(
                settings,
                name=RUNBOOK,
                given=given,
                journal=j,
                operator=get_ctx(ctx).operator(),
                yes=yes,
            )
    except PayapiError as exc:
        fail(str(exc), exc.exit_code)
    params = SystemParams(step="verify", into=given.get("into", ""), region=given.get("region", ""))
    folder = target_dir(params, settings)
    result = state_of(folder)
    data = {**(result.to_json() if result else {"into": str(folder), "steps": []})}
    data["run_id"] = run.run_id
    emit(data, as_json=as_json, human=_print_system)
    if run.ok:
        return
    stop = f"payapi lab down --dir {folder}" if not params.region else None
    if result is not None and result.checks and not result.verified:
        bad = next(c for c in result.checks if not c["ok"])
        where = f"region {params.region}" if params.region else "the rebuilt platform"
        fail(f"{where} is running but {bad['name']} failed: {bad['detail']}"
             + (f" (stop it with: {stop})" if stop else ""))  # fmt: skip
    fail(f"system recovery {run.run_id} failed: {run.reason} (continue it: payapi runbook "
         f"resume {run.run_id}" + (f"; or stop it: {stop})" if stop else ")"))  # fmt: skip


def _print_system(d: dict[str, Any]) -> None:
    if d.get("run_id"):
        console.print(
            f"run {d['run_id']} of runbook system-recovery (payapi runbook show {d['run_id']})",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    if "total_seconds" not in d:
        return  # refused before its first step: nothing was built
    for s in d["steps"]:
        console.print(
            f"  {s['status']:<7} {s['name']:<18} {s['seconds']:7.1f} s  {s['detail']}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    where = f"region {d['region']}" if d.get("region") else d["into"]
    console.print(
        f"rebuilt {where} in {d['total_seconds']:.1f} s: {d['payments']} payments, "
        f"verified: {'yes' if d['verified'] else 'NO'}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    if d.get("region"):
        console.print(
            f"config: {d['config']}; a standby of {d['database'].get('standby_of')} again "
            f"(to serve from it: payapi region failover --to {d['region']})",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        return
    console.print(
        f"config: {d['config']}; stop with: payapi lab down --dir {d['into']}; take a first "
        f"full backup: payapi --config {d['config']} backup run --component db --full",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


# `payapi recover breach` lives in its own module (the security procedure).
from payapi.cli import breach_cmd  # noqa: E402

app.command("breach")(breach_cmd.breach)
