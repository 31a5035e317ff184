"""`payapi backup run|list|verify`: take, list and verify backups.

One engine per component (Barman style): the engine is looked up by component name and
imported lazily. Today: ``database`` (aliases ``db``, ``postgres``) →
:mod:`payapi.backup.postgres`. A backup holds the component's lock (the lock a
retention purge takes) for as long as it runs, renewing its lease as it streams.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.table import Table

from payapi.cli import copy_cmd
from payapi.cli.context import get_ctx
from payapi.cli.output import EXIT_USAGE, console, emit, err_console, fail, info

if TYPE_CHECKING:
    from payapi.backup.manifest import BackupInfo
    from payapi.backup.repository import Repository
    from payapi.config import Settings

app = typer.Typer(help="Back up, list and verify backups.", no_args_is_help=True)

JSON_OPTION = typer.Option(False, "--json", help="Print JSON (for automation).")
REPOSITORY_NAME_OPTION = typer.Option(
    None,
    "--repository",
    help="A secondary repository by name (backup.secondary.NAME; default: the primary).",
)

# The components `backup run` has an engine for (each imported only when used):
# database -> payapi.backup.postgres, vault -> payapi.backup.vault_backup,
# redis -> payapi.backup.redis_backup, configuration -> payapi.backup.config_export.
ENGINES = ("database", "vault", "redis", "configuration")


def resolve_component(name: str) -> str:
    """The canonical component (``db`` → ``database``); exit 2 if unknown."""
    from payapi.backup.postgres import COMPONENT, is_component

    if is_component(name):
        return COMPONENT
    try:
        from payapi.plan import load_plan

        canonical = load_plan().resolve(name)
    except Exception:
        fail(f"unknown component {name!r} (e.g. db)", EXIT_USAGE)
    return canonical


def open_repository(
    settings: Settings,
    name: str | None = None,
    *,
    exit_on_error: bool = True,
    create: bool = False,
) -> Repository:
    """The repository of ``[backup]`` (URL, key file or key variable), or with ``name``
    the secondary ``[backup.secondary.NAME]`` (``primary`` is ``[backup]``); exit 1 if
    unusable, 2 if no repository has that name. ``exit_on_error=False`` raises
    :class:`RepositoryError` instead of exiting; ``create`` initializes a repository
    that does not exist yet (with its key)."""
    from payapi.backup.crypto import load_repository_key
    from payapi.backup.errors import RepositoryError
    from payapi.backup.repository import Repository
    from payapi.config import ConfigError

    def error(message: str) -> NoReturn:
        if exit_on_error:
            fail(message)
        raise RepositoryError(message)

    try:
        where = settings.backup.location(name)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    if not where.url:
        error(
            "no backup repository: set [backup] repository in the config "
            "(or $PAYAPI_BACKUP__REPOSITORY)"
        )
    options: dict[str, Any] = {"region": where.s3_region} if where.s3_region else {}
    try:
        key = load_repository_key(where.key_file, env=where.key_env)
        repo = Repository.open(
            where.url,
            key,
            s3_endpoint_url=where.s3_endpoint_url,
            s3_sse=where.s3_sse,
            **options,
        )
    except RepositoryError as exc:
        error(str(exc) if where.primary else f"repository {where.name}: {exc}")
    try:
        if create and not repo.initialized:
            repo.init()
        repo.require_config()
    except RepositoryError as exc:
        repo.close()
        error(str(exc) if where.primary else f"repository {where.name}: {exc}")
    return repo


def restore_command_for(settings: Settings, name: str | None = None) -> str:
    """``restore_command`` for a restored server: the same repository and key as us
    (a secondary by its name, which ``wal fetch`` resolves from the same config)."""
    from payapi.backup.wal import restore_command
    from payapi.config import PRIMARY

    if name is not None and name != PRIMARY:
        if settings.config_path is not None:
            return restore_command(settings.config_path, repository=name)
        where = settings.backup.location(name)
        return restore_command(None, repository=where.url, key_file=where.key_file)
    return restore_command(
        settings.config_path,
        repository=settings.backup.repository or None,
        key_file=settings.backup.key_file,
    )


@contextlib.contextmanager
def progress_bar(
    description: str, *, enabled: bool
) -> Iterator[Callable[[int, int | None], None] | None]:
    """A progress bar on stderr (only on a terminal, never with --json)."""
    if not enabled or not err_console.is_terminal:
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TransferSpeedColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total if total and total >= done else None)

        yield update


def backup_json(b: BackupInfo) -> dict[str, Any]:
    return b.model_dump(mode="json")


# --------------------------------------------------------------------------- run


@app.command("run")
def run_cmd(
    ctx: typer.Context,
    component: str = typer.Option(..., "--component", "-c", help="What to back up (db)."),
    full: bool = typer.Option(False, "--full", help="A full physical backup (the default)."),
    incremental: bool = typer.Option(
        False, "--incremental", help="Changed blocks since the last backup (PostgreSQL 17+)."
    ),
    logical: bool = typer.Option(False, "--logical", help="A logical dump (pg_dump -Fc)."),
    dsn: str | None = typer.Option(
        None, "--dsn", help="Server to back up (default: [postgres] payment_dsn)."
    ),
    wal_timeout: float = typer.Option(
        60.0, "--wal-timeout", help="Seconds to wait for the backup's last WAL to be archived."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Take one backup: data first, then its WAL range, then the manifest (last)."""
    from payapi.backup.errors import RepositoryError
    from payapi.backup.lock import LockError
    from payapi.backup.postgres import FULL, INCREMENTAL, LOGICAL, PgBackupError
    from payapi.cli.copy_cmd import copy_after_backup
    from payapi.cli.copy_cmd import describe as describe_copy

    kinds = [k for k, on in ((FULL, full), (INCREMENTAL, incremental), (LOGICAL, logical)) if on]
    if len(kinds) > 1:
        fail("choose one of --full, --incremental, --logical", EXIT_USAGE)
    canonical = resolve_component(component)
    if canonical not in ENGINES:
        fail(f"no backup engine for component {canonical!r} (one of {', '.join(ENGINES)})")
    kind = kinds[0] if kinds else None
    extra: dict[str, Any] = {}
    settings = get_ctx(ctx).settings
    with open_repository(settings) as repo:
        try:
            if canonical == "database":
                result = _run_database(repo, settings, kind or FULL, dsn, wal_timeout, as_json)
            elif canonical == "vault":
                result = _run_vault(repo, settings, kind or FULL, as_json)
            elif canonical == "configuration":
                result, extra = _run_config(repo, settings, kind, as_json)
            else:
                result = _run_redis(repo, settings, kind, as_json)
        except (PgBackupError, RepositoryError, LockError) as exc:
            fail(str(exc))
        except OSError as exc:
            fail(f"backup failed: {exc}")
        # Then into every secondary repository (everything they lack: self-healing).
        copies, copy_failed = copy_after_backup(settings, repo, quiet=as_json)
    out = {
        "backup_id": result.backup_id,
        "component": result.component,
        "type": result.type,
        "parent": result.parent,
        "started_at": result.started_at,
        "finished_at": result.finished_at,
        "bytes": result.bytes,
        "stored_bytes": result.stored_bytes,
        "objects": result.objects,
        "wal_start": result.wal_start,
        "wal_end": result.wal_end,
        **{k: v for k, v in extra.items() if k not in ("started_at", "finished_at")},
        **({"copies": copies} if copies else {}),
    }
    emit(
        out,
        as_json=as_json,
        human=lambda d: console.print(
            f"backup {d['backup_id']}: {d['type']}, {_size(d['bytes'])} "
            f"({_size(d['stored_bytes'])} stored), {d['objects']} objects"
        ),
    )
    if extra.get("push_errors"):
        remote, error = next(iter(extra["push_errors"].items()))
        fail(f"configuration stored, but pushing to remote {remote} failed: {error}")
    for entry in [] if as_json else copies:
        info(describe_copy(entry))
    if copy_failed:
        fail(f"backup {result.backup_id} is committed, but {copy_failed}")


def _run_database(
    repo: Repository,
    settings: Settings,
    kind: str,
    dsn: str | None,
    wal_timeout: float,
    as_json: bool,
) -> BackupInfo:
    from payapi.backup.lock import Lock, lock_name
    from payapi.backup.postgres import COMPONENT, BackupRequest, run_backup

    source = dsn or settings.postgres.payment_dsn
    if not source:
        fail("no database to back up: set [postgres] payment_dsn or pass --dsn")
    lock = Lock(repo.lock_store())
    with (
        _sigterm_unwinds(),
        lock.hold(lock_name(COMPONENT), f"database {kind} backup") as held,
        progress_bar(f"{kind} backup", enabled=not as_json) as bar,
    ):

        def progress(done: int, total: int | None) -> None:
            held.renew()
            if bar is not None:
                bar(done, total)

        return run_backup(
            repo,
            BackupRequest(
                kind=kind,
                dsn=source,
                wal_timeout=wal_timeout,
                work_dir=settings.backup.work_dir,
                progress=progress,
            ),
        )


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """SIGTERM (a scheduler stopping us) unwinds like Ctrl-C: the unfinished backup's
    objects are deleted, pg_basebackup is stopped and the lock is released."""
    import signal

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_vault(repo: Repository, settings: Settings, kind: str, as_json: bool) -> BackupInfo:
    from payapi.backup.vault_backup import run_vault_backup

    if kind not in ("full", "incremental"):
        fail("a vault backup is --full or --incremental", EXIT_USAGE)
    step = None if as_json else info
    return run_vault_backup(repo, settings, kind="full" if kind == "full" else "incremental",
                            progress=step)  # fmt: skip


def _run_redis(repo: Repository, settings: Settings, kind: str | None, as_json: bool) -> BackupInfo:
    from payapi.backup.redis_backup import run_redis_backup

    if kind is not None:
        fail("a Redis backup is an RDB snapshot: no --full/--incremental/--logical", EXIT_USAGE)
    # run_redis_backup holds the component's lock itself.
    return run_redis_backup(repo, settings.redis, progress=None if as_json else info)


def config_git_dir(settings: Settings) -> Path:
    """Where configuration exports are committed: ``[config_backup] git_dir``, else a
    ``config-git`` folder beside the config file."""
    section = settings.config_backup
    if section.git_dir is not None:
        return section.git_dir
    if settings.config_path is None:
        fail("set [config_backup] git_dir (or run with --config)", EXIT_USAGE)
    return settings.config_path.parent / "config-git"


def _run_config(
    repo: Repository, settings: Settings, kind: str | None, as_json: bool
) -> tuple[BackupInfo, dict[str, Any]]:
    from payapi.backup.config_export import default_sources, run_config_backup

    if kind is not None:
        fail("a configuration backup is an export: no --full/--incremental/--logical", EXIT_USAGE)
    section = settings.config_backup
    result = run_config_backup(
        repo,
        section,
        sources=default_sources(settings),
        git_dir=config_git_dir(settings),
        remotes=section.remotes,
        kube_context=section.kube_context,
        progress=None if as_json else info,
    )
    return result.backup, result.to_json()


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


# --------------------------------------------------------------------------- list


@app.command("list")
def list_cmd(
    ctx: typer.Context,
    component: str | None = typer.Option(None, "--component", "-c", help="Only this one."),
    repository: str | None = REPOSITORY_NAME_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Committed backups, oldest first (a backup without its manifest never appears)."""
    from payapi.backup.errors import RepositoryError

    canonical = resolve_component(component) if component else None
    settings = get_ctx(ctx).settings
    with open_repository(settings, repository) as repo:
        try:
            backups = repo.list_backups(canonical)
        except RepositoryError as exc:
            fail(str(exc))
    rows = [backup_json(b) for b in backups]

    def human(data: list[dict[str, Any]]) -> None:
        table = Table(show_header=True)
        table.add_column("backup", no_wrap=True)
        for col in ("type", "parent", "finished", "size", "stored", "verified"):
            table.add_column(col)
        for b in data:
            table.add_row(
                b["backup_id"],
                b["type"],
                (b["parent"] or "")[-6:],
                b["finished_at"][:19],
                _size(b["bytes"]),
                _size(b["stored_bytes"]),
                (b["verified_at"] or "")[:19],
            )
        console.print(table if data else "no backups")

    emit(rows, as_json=as_json, human=human)


# --------------------------------------------------------------------------- verify


@app.command("verify")
def verify_cmd(
    ctx: typer.Context,
    backup: str | None = typer.Option(None, "--backup", help="Only this backup."),
    restore_test: bool = typer.Option(
        False,
        "--restore-test",
        help="Also restore (the newest database backup, or --backup) into a scratch "
        "directory, boot it and query it.",
    ),
    repository: str | None = REPOSITORY_NAME_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Check every object's checksum and authentication tag (and the WAL archive);
    record the verification. Any failure exits 1 naming the backup and the object."""
    from payapi.backup.errors import RepositoryError
    from payapi.backup.postgres import COMPONENT
    from payapi.backup.verify_restore import RestoreTestFailed
    from payapi.backup.verify_restore import restore_test as run_restore_test

    settings = get_ctx(ctx).settings
    with open_repository(settings, repository) as repo:
        try:
            if as_json or not err_console.is_terminal:
                report = repo.verify(backup)
            else:
                with err_console.status("verifying checksums"):
                    report = repo.verify(backup)
        except RepositoryError as exc:
            fail(str(exc))
        out: dict[str, Any] = {
            "ok": report.ok,
            "backups": report.backups,
            "objects_checked": report.objects_checked,
            "bytes_checked": report.bytes_checked,
            "wal_checked": report.wal_checked,
            "problems": [p.model_dump() for p in report.problems],
            "orphans": report.orphans,
        }
        now = repo.now()
        for bid in report.backups:
            if report.backup_ok(bid):
                with contextlib.suppress(RepositoryError):
                    repo.mark_verified(bid, now, details={"kind": "checksum"})
        failure: str | None = None
        if not report.ok:
            first = report.problems[0]
            more = (
                f" (and {len(report.problems) - 1} more problems)"
                if len(report.problems) > 1
                else ""
            )
            failure = f"verification failed: {first}{more}"
        elif restore_test:
            target = _restore_test_target(repo, backup, COMPONENT)
            step = None if as_json else (lambda m: info(f"restore test: {m}"))
            try:
                result = run_restore_test(
                    repo,
                    target,
                    restore_command=restore_command_for(settings, repository),
                    work_dir=settings.backup.work_dir,
                    step=step,
                )
                out["restore_test"] = result.to_json()
            except (RestoreTestFailed, RepositoryError) as exc:
                out["ok"] = False
                out["restore_test"] = {
                    "backup_id": target.backup_id,
                    "ok": False,
                    "error": str(exc),
                }
                failure = str(exc)

    def human(d: dict[str, Any]) -> None:
        console.print(
            f"{len(d['backups'])} backups, {d['objects_checked']} objects, "
            f"{d['wal_checked']} WAL segments checked: "
            + ("[green]ok[/green]" if d["ok"] else "[red]FAILED[/red]")
        )
        for p in d["problems"]:
            console.print(f"  {p['backup_id'] or 'WAL'}: {p['object']}: {p['kind']}: {p['detail']}")
        if d["orphans"]:
            console.print(f"  {len(d['orphans'])} leftovers of interrupted operations (orphans)")
        rt = d.get("restore_test")
        if rt and rt.get("ok"):
            counts = ", ".join(f"{t} {n}" for t, n in rt["tables"].items())
            console.print(f"  restore test of {rt['backup_id']}: ok ({counts or 'no tables'})")

    emit(out, as_json=as_json, human=human)
    if failure:
        fail(failure)


def _restore_test_target(repo: Repository, backup: str | None, component: str) -> BackupInfo:
    from payapi.backup.errors import RepositoryError

    try:
        if backup is not None:
            found = repo.get_backup(backup)
            if found.component != component:
                fail(f"backup {backup}: restore tests exist for database backups only")
            return found
        backups = repo.list_backups(component)
    except RepositoryError as exc:
        fail(str(exc))
    if not backups:
        fail("no database backup to restore-test")
    return backups[-1]


# `backup copy` (into the secondary repositories) lives in payapi.cli.copy_cmd.
app.command("copy")(copy_cmd.copy_cmd)
