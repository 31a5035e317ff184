"""`payapi backup copy`: copy backups and WAL into the secondary repositories.

    payapi backup copy [--to NAME] [--backup ID]... [--recheck | --no-verify]
                       [--lock-wait S] [--json]

The secondaries are the ``[backup.secondary.NAME]`` tables of the config (another
folder, another bucket: the DR region's). Without ``--to``, every secondary. A
secondary that does not exist yet is initialized (with its own key) by the first copy. The work is
:func:`payapi.backup.copy.copy_repository`; ``backup run`` calls
:func:`copy_after_backup` after each backup when secondaries are configured.

Exit codes: 0 everything is in every destination and verified there; 1 something failed
(the last line on stderr says what; the rest was still copied); 2 bad usage.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import typer

from payapi.cli.context import get_ctx
from payapi.cli.output import EXIT_USAGE, console, emit, fail, info

if TYPE_CHECKING:
    from payapi.backup.repository import Repository
    from payapi.config import Settings

# How long a copy waits for a purge of the destination to let go of a component's lock.
DEFAULT_LOCK_WAIT = 60.0


def _targets(settings: Settings, to: str | None) -> list[str]:
    from payapi.config import PRIMARY

    names = sorted(settings.backup.secondaries)
    if to is None:
        return names
    if to == PRIMARY:
        fail("--to names a secondary repository, not the primary", EXIT_USAGE)
    if to not in names:
        known = ", ".join(names) or "none configured"
        fail(f"no secondary repository named {to!r} (secondaries: {known})", EXIT_USAGE)
    return [to]


def copy_to(
    settings: Settings,
    src: Repository,
    names: list[str],
    *,
    backup_ids: list[str] | None = None,
    verify: bool = True,
    recheck: bool = False,
    lock_wait: float = DEFAULT_LOCK_WAIT,
    quiet: bool = False,
) -> tuple[list[dict[str, Any]], str | None]:
    """Copy into each named secondary (initializing one that does not exist yet); a JSON
    report per secondary, and the first failure (or None). A secondary that fails does
    not stop the others."""
    from payapi.backup.copy import copy_repository
    from payapi.backup.errors import RepositoryError
    from payapi.backup.lock import LockError
    from payapi.cli.backup_cmd import open_repository

    reports: list[dict[str, Any]] = []
    failure: str | None = None
    started = datetime.now(UTC)
    for name in names:
        say = None if quiet else (lambda m, n=name: info(f"{n}: {m}"))
        entry: dict[str, Any] = {"repository": name}
        try:
            with open_repository(settings, name, exit_on_error=False, create=True) as dst:
                created = dst.require_config().created_at >= started
                report = copy_repository(
                    src,
                    dst,
                    backup_ids=backup_ids,
                    progress=say,
                    verify=verify,
                    lock_wait=timedelta(seconds=lock_wait),
                    work_dir=settings.backup.work_dir,
                    recheck=recheck,
                )
            if created:
                report.notes.insert(0, f"initialized the repository at {report.destination}")
            entry.update(report.to_json())
            if not report.ok:
                more = len(report.problems) - 1
                problem = report.problems[0] + (f" (and {more} more problems)" if more else "")
        except (RepositoryError, LockError, OSError) as exc:
            entry.update({"ok": False, "problems": [str(exc)]})
            problem = str(exc)
        if not entry["ok"] and failure is None:
            failure = f"copy to {name} failed: {problem}"
        reports.append(entry)
    return reports, failure


def copy_after_backup(
    settings: Settings, src: Repository, *, quiet: bool
) -> tuple[list[dict[str, Any]], str | None]:
    """What ``backup run`` does after a backup: copy everything the secondaries lack."""
    names = sorted(settings.backup.secondaries)
    if not names:
        return [], None
    return copy_to(settings, src, names, quiet=quiet)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def describe(entry: dict[str, Any]) -> str:
    """One line per secondary for people."""
    if "copied" not in entry:
        return f"{entry['repository']}: FAILED: {entry['problems'][0]}"
    state = "ok" if entry["ok"] else f"FAILED ({len(entry['problems'])} problems)"
    return (
        f"{entry['repository']}: {len(entry['copied'])} backups copied "
        f"({_size(entry['bytes'])}), {len(entry['skipped'])} already there, "
        f"{entry['wal_copied']} WAL files copied, {entry['wal_skipped']} already there: {state}"
    )


def copy_cmd(
    ctx: typer.Context,
    to: str | None = typer.Option(
        None, "--to", help="Only this secondary repository (default: every one)."
    ),
    backup: list[str] | None = typer.Option(
        None,
        "--backup",
        help="Only this backup (with its parents and its WAL); repeatable. "
        "Default: everything the secondary lacks.",
    ),
    no_verify: bool = typer.Option(
        False, "--no-verify", help="Do not read the copies back (they are not marked verified)."
    ),
    recheck: bool = typer.Option(
        False,
        "--recheck",
        help="Also read back what the secondary already has, and copy again what fails "
        "(repairs a damaged copy).",
    ),
    lock_wait: float = typer.Option(
        DEFAULT_LOCK_WAIT,
        "--lock-wait",
        min=0.0,
        help="Seconds to wait for a purge of the secondary to let go of a component.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (for automation)."),
) -> None:
    """Copy backups and WAL into the secondary repositories (the config's
    backup.secondary.NAME tables), re-encrypted with their keys and verified there by
    checksum. Idempotent: what a secondary already has is skipped."""
    from payapi.cli.backup_cmd import open_repository

    if recheck and no_verify:
        fail("--recheck reads copies back; it cannot go with --no-verify", EXIT_USAGE)
    settings = get_ctx(ctx).settings
    names = _targets(settings, to)
    if not names:
        fail(
            "no secondary repository: add a [backup.secondary.NAME] table (url, and "
            "key_file if it has its own key) to the config",
            EXIT_USAGE,
        )
    with open_repository(settings) as src:
        reports, failure = copy_to(
            settings,
            src,
            names,
            backup_ids=backup or None,
            verify=not no_verify,
            recheck=recheck,
            lock_wait=lock_wait,
            quiet=as_json,
        )

    def human(data: list[dict[str, Any]]) -> None:
        for entry in data:
            console.print(describe(entry), highlight=False)
            for problem in entry.get("problems", [])[1:]:
                info(f"  {problem}")
            for note in entry.get("notes", []):
                info(f"  note: {note}")

    emit(reports, as_json=as_json, human=human)
    if failure:
        fail(failure)
