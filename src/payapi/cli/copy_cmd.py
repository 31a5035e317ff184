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

from typing import TYPE_CHECKING, Any

import typer

from payapi.backup.service import (
    DEFAULT_LOCK_WAIT,
    copy_to_secondaries,
    secondary_names,
)
from payapi.backup.service import copy_after_backup as service_copy_after_backup
from payapi.cli.context import get_ctx
from payapi.cli.output import EXIT_USAGE, console, emit, fail, info, journal
from payapi.core.errors import UsageError

if TYPE_CHECKING:
    from payapi.backup.repository import Repository
    from payapi.core.settings import Settings


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def copy_after_backup(
    settings: Settings, src: Repository, *, quiet: bool
) -> tuple[list[dict[str, Any]], str | None]:
    """What ``backup run`` does after a backup: copy everything the secondaries lack."""
    with journal(quiet=quiet) as j:
        return service_copy_after_backup(settings, src, journal=j)


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
    try:
        names = secondary_names(settings, to)
    except UsageError as exc:
        fail(str(exc), exc.exit_code)
    if not names:
        fail(
            "no secondary repository: add a [backup.secondary.NAME] table (url, and "
            "key_file if it has its own key) to the config",
            EXIT_USAGE,
        )
    with open_repository(settings) as src, journal(quiet=as_json) as j:
        reports, failure = copy_to_secondaries(
            settings,
            src,
            names,
            backup_ids=backup or None,
            verify=not no_verify,
            recheck=recheck,
            lock_wait=lock_wait,
            journal=j,
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
