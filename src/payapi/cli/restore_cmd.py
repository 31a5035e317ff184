"""`payapi restore --component db|vault|redis|config …`: restore a backup.

    payapi restore --component db --to DIR [--backup ID]
                   [--target-time ISO8601 | --target-lsn LSN | --target-xid XID]
                   [--port P --start] [--json]
    payapi restore --component db --stop --to DIR
    payapi restore --component db --in-place [--yes] [target options]
    payapi restore --component vault [--backup ID] [--yes | --to DSN]
    payapi restore --component redis [--backup ID] [--yes] [--rebuild] [--keep-tokens]
    payapi restore --component config --to DIR [--backup ID] [--decrypt-secrets]

The work is :mod:`payapi.backup.restore`; this command parses, confirms and prints.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import typer

from payapi.cli.context import get_ctx
from payapi.cli.output import EXIT_USAGE, console, emit, fail, journal


def restore(
    ctx: typer.Context,
    component: str = typer.Option(..., "--component", "-c", help="What to restore (db)."),
    backup: str | None = typer.Option(
        None, "--backup", help="Backup id (default: the newest that reaches the target)."
    ),
    target_time: str | None = typer.Option(
        None, "--target-time", help="Recover to this time (ISO 8601; UTC if no zone)."
    ),
    target_lsn: str | None = typer.Option(None, "--target-lsn", help="Recover to this LSN."),
    target_xid: str | None = typer.Option(
        None, "--target-xid", help="Recover up to the commit of this transaction."
    ),
    target_immediate: bool = typer.Option(
        False, "--target-immediate", help="Stop as soon as the backup is consistent."
    ),
    to: str | None = typer.Option(
        None,
        "--to",
        help="db, config: the new folder; vault: the DSN of a fresh database.",
    ),
    port: int | None = typer.Option(
        None, "--port", help="Port of the restored server (0 or absent: a free one)."
    ),
    start: bool = typer.Option(False, "--start", help="Boot it and print its DSN."),
    stop: bool = typer.Option(False, "--stop", help="Stop the server restored in --to."),
    in_place: bool = typer.Option(
        False, "--in-place", help="Replace the lab's database (asks first)."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    timeline: int | None = typer.Option(
        None, "--timeline", help="Follow this timeline (default: the source's current one)."
    ),
    archive_timeout: float = typer.Option(
        120.0, "--archive-timeout", help="Seconds to wait for the target's WAL to be archived."
    ),
    recovery_timeout: float = typer.Option(
        1800.0, "--recovery-timeout", help="Seconds to wait for recovery to finish."
    ),
    rebuild: bool = typer.Option(
        False, "--rebuild", help="redis: start empty instead (clients re-authenticate)."
    ),
    keep_tokens: bool = typer.Option(
        False,
        "--keep-tokens",
        help="redis: keep tokens the audit log does not show revoked since the snapshot.",
    ),
    decrypt_secrets: bool = typer.Option(
        False, "--decrypt-secrets", help="config: write Secret values in clear (mode 0600)."
    ),
    repository: str | None = typer.Option(
        None,
        "--repository",
        help="Restore from a configured repository (primary, or a secondary's name) or "
        "a URL (opened with the primary's key); default: the primary.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (for automation)."),
) -> None:
    """Restore a backup. The database: into a new data directory (or in place), optionally
    to a point in time; --start boots it on --port and prints its DSN. The vault and
    Redis: in place (after confirmation, or --yes). The configuration: into --to DIR."""
    from payapi.cli.backup_cmd import resolve_component

    canonical = resolve_component(component)
    if canonical == "database":
        _restore_database(
            ctx, backup, target_time, target_lsn, target_xid, target_immediate,
            Path(to) if to is not None else None, port, start, stop, in_place, yes,
            timeline, archive_timeout, recovery_timeout, as_json, repository=repository,
        )  # fmt: skip
    elif canonical == "vault":
        _restore_vault(ctx, backup, to, yes, as_json, repository=repository)
    elif canonical == "redis":
        _restore_redis(ctx, backup, yes, rebuild, keep_tokens, as_json, repository=repository)
    elif canonical == "configuration":
        _restore_config(ctx, backup, to, decrypt_secrets, as_json, repository=repository)
    else:
        fail(f"no restore for component {canonical!r} (db, vault, redis, config)", EXIT_USAGE)


def _confirm(question: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        fail(f"{question} Confirm with --yes", EXIT_USAGE)
    if not typer.confirm(question):
        fail("cancelled", EXIT_USAGE)


def _restore_vault(
    ctx: typer.Context, backup: str | None, to: str | None, yes: bool, as_json: bool,
    *, repository: str | None = None,
) -> None:  # fmt: skip
    from payapi.backup.engines import restore_lock
    from payapi.backup.vault_format import COMPONENT, VaultBackupError
    from payapi.backup.vault_restore import restore_vault
    from payapi.cli.backup_cmd import open_repository

    settings = get_ctx(ctx).settings
    if to is None:
        _confirm(
            f"Replace the vault's secrets, policies and keys with "
            f"{'backup ' + backup if backup else 'the newest vault backup'}?",
            yes,
        )
    with (
        open_repository(settings, repository) as repo,
        restore_lock(repo, COMPONENT, f"vault restore (pid {os.getpid()})") as held,
        journal(quiet=as_json) as j,
    ):
        try:
            result = restore_vault(
                repo, settings, backup_id=backup, target_dsn=to, journal=j, keep_alive=held.renew
            )
        except VaultBackupError as exc:
            fail(str(exc))
    out = result.to_json()
    if to is None:  # in place: a secret restored to an older version counts at once
        out["eapi_cache"] = _drop_verifications(settings)

    def human(d: dict[str, Any]) -> None:
        console.print(
            f"restored vault backup {d['backup_id']} (chain of {len(d['chain'])}) "
            f"into {d['target']}"
        )
        for w in d.get("warnings", []):
            console.print(f"[yellow]warning:[/yellow] {w}")
        if "verifications_dropped" in d.get("eapi_cache", {}):
            n = d["eapi_cache"]["verifications_dropped"]
            console.print(f"dropped EAPI's cached verifications of {n} client(s)")

    emit(out, as_json=as_json, human=human)
    if result.healthy is False:
        fail("the vault did not answer its health check after the restore")
    if "error" in out.get("eapi_cache", {}):
        fail(
            "the vault was restored, but EAPI's cached verifications were not dropped "
            f"({out['eapi_cache']['error']}): run payapi runbook run component-vault or "
            "restart EAPI's Redis"
        )


def _drop_verifications(settings: Any) -> dict[str, Any]:
    """EAPI's verification cache dropped after a vault restore in place (see
    :func:`payapi.eapi.cachekeys.invalidate_verifications`)."""
    from payapi.recovery.component_targets import invalidate_eapi_verifications

    try:
        return {"verifications_dropped": invalidate_eapi_verifications(settings)}
    except Exception as exc:  # redis-py's errors: reported, the restore itself is done
        return {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"}


def _restore_redis(
    ctx: typer.Context, backup: str | None, yes: bool, rebuild: bool, keep_tokens: bool,
    as_json: bool, *, repository: str | None = None,
) -> None:  # fmt: skip
    import asyncio

    from payapi.backup.redis_backup import COMPONENT
    from payapi.backup.redis_restore import restore_redis, revocations_from_audit
    from payapi.backup.service import component_lock
    from payapi.cli.backup_cmd import open_repository
    from payapi.systems.redis import redis_control

    settings = get_ctx(ctx).settings
    control = redis_control(settings.redis)
    what = "an empty Redis (rebuild)" if rebuild else (f"backup {backup}" if backup else
                                                       "the newest Redis snapshot")  # fmt: skip
    _confirm(f"Stop {control.describe()} and replace its data with {what}?", yes)
    dsn = settings.postgres.payment_dsn
    revocations = None
    if keep_tokens and dsn:

        def revocations(since: Any) -> Any:
            return asyncio.run(revocations_from_audit(dsn, since))

    purpose = f"redis {'rebuild' if rebuild else 'restore'}"
    with (
        open_repository(settings, repository) as repo,
        component_lock(repo, COMPONENT, purpose, wait=timedelta(seconds=30)),
        journal(quiet=as_json) as j,
    ):
        result = restore_redis(
            repo,
            settings.redis,
            control,
            backup_id=backup,
            rebuild=rebuild,
            revocations=revocations,
            journal=j,
        )
    emit(
        result.to_json(),
        as_json=as_json,
        human=lambda d: console.print(
            f"redis {d['mode']}: {d['final_keys']} keys"
            + (f" from backup {d['backup_id']}" if d.get("backup_id") else "")
        ),
    )


def _restore_config(
    ctx: typer.Context, backup: str | None, to: str | None, decrypt: bool, as_json: bool,
    *, repository: str | None = None,
) -> None:  # fmt: skip
    from payapi.backup.config_format import COMPONENT
    from payapi.backup.config_restore import restore_config
    from payapi.backup.engines import restore_lock
    from payapi.backup.errors import RepositoryError
    from payapi.cli.backup_cmd import open_repository

    if to is None:
        fail("say where to check the export out: --to DIR", EXIT_USAGE)
    settings = get_ctx(ctx).settings
    with (
        open_repository(settings, repository) as repo,
        restore_lock(repo, COMPONENT, f"configuration restore (pid {os.getpid()})"),
    ):
        try:
            result = restore_config(repo, backup, Path(to), decrypt_secrets=decrypt)
        except RepositoryError as exc:
            fail(str(exc))
    emit(
        result.to_json(),
        as_json=as_json,
        human=lambda d: console.print(f"checked out configuration export into {to}"),
    )


def _restore_database(
    ctx: typer.Context,
    backup: str | None,
    target_time: str | None,
    target_lsn: str | None,
    target_xid: str | None,
    target_immediate: bool,
    to: Path | None,
    port: int | None,
    start: bool,
    stop: bool,
    in_place: bool,
    yes: bool,
    timeline: int | None,
    archive_timeout: float,
    recovery_timeout: float,
    as_json: bool,
    *,
    repository: str | None = None,
) -> None:
    from payapi.backup.postgres import COMPONENT
    from payapi.backup.restore import RestoreRequest
    from payapi.backup.restore_plan import parse_target
    from payapi.backup.service import component_lock
    from payapi.cli.backup_cmd import open_repository, restore_command_for
    from payapi.core.errors import PayapiError
    from payapi.servers.postgres import stop_server

    if stop:
        if to is None:
            fail("--stop needs --to DIR (the restored data directory)", EXIT_USAGE)
        try:
            stopped = stop_server(to.expanduser().absolute())
        except PayapiError as exc:
            fail(str(exc))
        emit(
            {"component": COMPONENT, "data_dir": str(to), "stopped": stopped},
            as_json=as_json,
            human=lambda d: console.print(
                f"stopped the server in {to}" if stopped else f"no server was running in {to}"
            ),
        )
        return
    if in_place and to is not None:
        fail("--in-place and --to exclude each other", EXIT_USAGE)
    if not in_place and to is None:
        fail("say where to restore: --to DIR (or --in-place for the lab's database)", EXIT_USAGE)
    if port is not None and not 0 <= port <= 65535:
        fail(f"--port {port}: not a port", EXIT_USAGE)
    try:
        target = parse_target(
            time=target_time, lsn=target_lsn, xid=target_xid, immediate=target_immediate
        )
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)

    settings = get_ctx(ctx).settings
    control = _control(settings) if in_place else None
    req = RestoreRequest(
        to=to.expanduser().absolute() if to is not None else Path("."),
        restore_command=restore_command_for(settings, repository),
        target=target,
        backup_id=backup,
        port=port or None,
        start=start,
        timeline=timeline,
        source_dsn=settings.postgres.payment_dsn or None,
        archive_timeout=archive_timeout,
        recovery_timeout=recovery_timeout,
    )
    with open_repository(settings, repository) as repo:
        try:
            if control is not None:
                what = f"backup {req.backup_id}" if req.backup_id else "the newest usable backup"
                _confirm(
                    f"Replace the database of {control.describe()} with {what} "
                    f"(target: {req.target.describe()})?",
                    yes,
                )
            with (
                component_lock(repo, COMPONENT, "database restore"),
                journal(quiet=as_json) as j,
            ):
                req.journal = j
                out = _run_restore(repo, req, control)
        except PayapiError as exc:
            fail(str(exc), exc.exit_code)
        except OSError as exc:
            fail(f"restore failed: {exc}")

    def human(d: dict[str, Any]) -> None:
        console.print(
            f"restored backup {d['backup_id']} ({d['type']}) into {d['data_dir']}, "
            f"target {d['target']['kind']}"
            + (f" {d['target']['value']}" if d["target"]["value"] is not None else "")
        )
        if d.get("dsn"):
            console.print(f"running: {d['dsn']}")
        elif not d.get("started"):
            console.print(f"not started; start it with --start, port {d['port']}")
        if d.get("previous_data_dir"):
            console.print(f"the previous data directory is kept at {d['previous_data_dir']}")

    emit(out, as_json=as_json, human=human)


def _control(settings: Any) -> Any:
    """The configured server's control (``[postgres] control``; the lab's config has
    one); exit 1 naming what is missing."""
    from payapi.backup.service import postgres_control
    from payapi.systems.postgres import ControlUnavailable

    try:
        return postgres_control(settings)
    except ControlUnavailable as exc:
        fail(f"--in-place replaces the configured database: {exc}")


def _run_restore(repo: Any, req: Any, control: Any) -> dict[str, Any]:
    from payapi.backup.restore import restore, restore_in_place

    if control is None:
        out: dict[str, Any] = restore(repo, req).to_json()
        return out
    result = restore_in_place(repo, req, control)
    return result if isinstance(result, dict) else result.to_json()
