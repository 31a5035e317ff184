"""`payapi backup run|list|verify`: take, list and verify backups.

One engine per component (Barman style), found in :mod:`payapi.backup.engines`' registry
and imported lazily; the command knows none of them by name. A backup holds the
component's lock (the lock a retention purge takes) for as long as it runs, renewing its
lease as it streams (:func:`payapi.backup.engines.run_backup`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from payapi.cli import copy_cmd
from payapi.cli.context import get_ctx
from payapi.cli.output import EXIT_USAGE, console, emit, err_console, fail, info, journal

if TYPE_CHECKING:
    from payapi.backup.manifest import BackupInfo
    from payapi.backup.repository import Repository
    from payapi.core.settings import Settings

app = typer.Typer(help="Back up, list and verify backups.", no_args_is_help=True)

JSON_OPTION = typer.Option(False, "--json", help="Print JSON (for automation).")
REPOSITORY_NAME_OPTION = typer.Option(
    None,
    "--repository",
    help="A configured repository (primary, or a secondary's name) or a URL "
    "(opened with the primary's key); default: the primary.",
)


def resolve_component(name: str) -> str:
    """The canonical component (``db`` → ``database``); exit 2 if unknown."""
    from payapi.backup.postgres import COMPONENT, is_component

    if is_component(name):
        return COMPONENT
    try:
        from payapi.core.plan import load_plan

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
    """:func:`payapi.backup.service.open_repository`, exiting 1 (2 for an unknown name)
    on failure unless ``exit_on_error`` is False."""
    from payapi.backup import service
    from payapi.core.errors import PayapiError

    try:
        return service.open_repository(settings, name, create=create)
    except service.UnknownRepository as exc:
        fail(str(exc), exc.exit_code)
    except PayapiError as exc:
        if exit_on_error:
            fail(str(exc))
        raise


def restore_command_for(settings: Settings, name: str | None = None) -> str:
    from payapi.backup.service import restore_command_for as command

    return command(settings, name)


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
    from dataclasses import replace

    from payapi.backup.engines import BackupJob, engine_for, run_backup
    from payapi.backup.postgres import FULL, INCREMENTAL, LOGICAL
    from payapi.cli.copy_cmd import copy_after_backup
    from payapi.cli.copy_cmd import describe as describe_copy
    from payapi.core.errors import PayapiError, UsageError

    kinds = [k for k, on in ((FULL, full), (INCREMENTAL, incremental), (LOGICAL, logical)) if on]
    if len(kinds) > 1:
        fail("choose one of --full, --incremental, --logical", EXIT_USAGE)
    canonical = resolve_component(component)
    engine = engine_for(canonical)  # UnknownEngine: one line, exit 2
    job = BackupJob(kind=kinds[0] if kinds else None, dsn=dsn, wal_timeout=wal_timeout)
    engine.kind(job.kind)  # a usage error before the repository is opened
    settings = get_ctx(ctx).settings
    with open_repository(settings) as repo:
        try:
            with _sigterm_unwinds(), journal(quiet=as_json) as j:
                done = run_backup(repo, settings, canonical, replace(job, journal=j))
        except UsageError:
            raise
        except PayapiError as exc:
            fail(str(exc))
        except OSError as exc:
            fail(f"backup failed: {exc}")
        result, extra = done.backup, done.extra
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
    if done.problem:
        fail(done.problem)
    for entry in [] if as_json else copies:
        info(describe_copy(entry))
    if copy_failed:
        fail(f"backup {result.backup_id} is committed, but {copy_failed}")


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
            try:
                with journal(quiet=as_json, prefix="restore test: ") as j:
                    result = run_restore_test(
                        repo,
                        target,
                        restore_command=restore_command_for(settings, repository),
                        work_dir=settings.backup.work_dir,
                        journal=j,
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
