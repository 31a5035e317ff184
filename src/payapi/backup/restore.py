"""Restore a PostgreSQL backup into a new data directory, optionally to a point in time.

Deciding first (pure functions, unit tested): which target (:class:`Target`), which
timeline (:class:`Lineage`), which base backup (:func:`choose_base` — for a time target,
the newest backup that finished before it), which chain (:func:`backup_chain`: full →
incrementals), which recovery settings (:func:`recovery_settings`). Then doing:

1. **Coverage.** Before recovering to a target, make sure the archive reaches past it
   (:func:`ensure_covered`). With the source server reachable, commit a transaction (so
   there is a commit record after the target), force a WAL switch and wait until that
   segment is in the repository. Without it, read the archive's last segments with
   ``pg_waldump`` and refuse a target after the last archived commit, naming that commit's
   time. PostgreSQL itself also stops with "recovery ended before configured recovery
   target was reached": a restore never silently recovers to less.
2. **Files.** The chain's tars are extracted (streamed out of the repository);
   incrementals are combined with ``pg_combinebackup``; ``pg_verifybackup`` checks the
   result on request (restore tests).
3. **Recovery settings**, in ``postgresql.auto.conf`` (rewritten whole, so nothing of the
   source's archiving survives): ``restore_command = '… wal fetch --abort-on-damage %f
   %p'``, the target, ``recovery_target_action = promote``, a numeric
   ``recovery_target_timeline`` (pinned: the source's current timeline, never ``latest``),
   ``archive_mode = off`` (a restored copy never archives into the production
   repository, so its new timeline can never be followed by a later PITR) and
   ``hot_standby = off`` (connections only once recovery is over). ``recovery.signal``.
4. **Start** (``--start``): as the unprivileged lab user, on the chosen port; wait until
   the server has promoted; report its DSN. A recovery that fails is reported with the
   server's own last words.

``--in-place`` (the lab's database) restores into a sibling directory while the old
server still runs, then stops it, swaps the directories (the old one is kept, renamed),
and recovers with the lab's archiving *on*: the promoted server is production, its new
timeline must be archived.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from payapi.backup.logical_restore import load_logical, restore_logical
from payapi.backup.materialize import check_empty, log_path, materialize, own, write_recovery
from payapi.backup.postgres import COMPONENT, LOGICAL, PgMeta
from payapi.backup.restore_plan import (
    Lineage,
    RestoreError,
    RestoreRequest,
    RestoreResult,
    Target,
    backup_chain,
    backup_end,
    check_restorable,
    choose_base,
    parse_recovery_log,
    recovery_settings,
)
from payapi.backup.wal_coverage import ensure_covered, pinned_lineage, reachable_source
from payapi.core.errors import UsageError
from payapi.servers.postgres import (
    RecoveryError,
    client_bindir,
    psql,
    server_bindir,
    start_server,
    stop_server,
    wait_promoted,
)
from payapi.servers.procs import free_port, run_tool
from payapi.systems.postgres import PostgresControl

if TYPE_CHECKING:
    from payapi.backup.manifest import BackupInfo
    from payapi.backup.repository import Repository

__all__ = [
    "RestoreError",
    "RestoreRequest",
    "RestoreResult",
    "Target",
    "restore",
    "restore_in_place",
    "stop_server",
]


def _recovered(dsn: str, log: Path | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if log is not None:
        with contextlib.suppress(OSError):
            out.update(parse_recovery_log(log.read_text(errors="replace")))
    rows = psql(dsn, "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)")
    if rows:
        with contextlib.suppress(ValueError):
            out["timeline"] = int(rows[0][0], 16)
    return out


def restore(repo: Repository, req: RestoreRequest) -> RestoreResult:
    """Restore into ``req.to`` (a new directory); see the module docstring."""
    to = req.to.expanduser().absolute()
    check_empty(to)
    backups = repo.list_backups(COMPONENT)
    source = reachable_source(req.source_dsn, backups)
    lineage = pinned_lineage(repo, override=req.timeline, source=source, backups=backups)
    sysid = source.system_identifier if source is not None else None
    base = choose_base(
        backups,
        req.target,
        backup_id=req.backup_id,
        lineage=None if req.backup_id else lineage,
        system_identifier=sysid,
    )
    port = req.port or free_port()
    database = PgMeta.of(base).database or "postgres"
    if base.type == LOGICAL:
        return restore_logical(repo, base, req, to, port, database)
    chain = backup_chain(backups, base)
    check_restorable(chain)
    end = backup_end(base)
    if req.target.kind == "immediate" or (
        req.backup_id and end is not None and not lineage.includes(*end)
    ):
        lineage = Lineage(end[0] if end else lineage.timeline)
    coverage = ensure_covered(
        repo,
        req.target,
        base=base,
        lineage=lineage,
        source=source,
        source_dsn=req.source_dsn,
        timeout=req.archive_timeout,
    )
    major = PgMeta.of(base).pg_major or 0
    bindir = server_bindir(major) if major else client_bindir()
    result = RestoreResult(
        backup_id=base.backup_id,
        type=base.type,
        chain=[b.backup_id for b in chain],
        data_dir=to,
        port=port,
        target=req.target,
        timeline=lineage.timeline,
        database=database,
        coverage=coverage,
        log=log_path(to),
    )
    created = not to.exists()
    try:
        to.mkdir(parents=True, exist_ok=True)
        journal = req.journal
        materialize(repo, chain, to, bindir=bindir, journal=journal)
        if req.verify_backup:
            with journal.step("pg_verifybackup"):
                run_tool([str(bindir / "pg_verifybackup"), str(to)], what="pg_verifybackup")
            result.verified_backup = True
        settings = recovery_settings(
            req.target,
            restore_command=req.restore_command,
            timeline=lineage.timeline,
            port=port,
            archive=req.archive,
        )
        write_recovery(to, settings)
        own(to)
        if req.start:
            with journal.step(f"starting PostgreSQL on port {port} and recovering"):
                start_server(to, bindir, log=log_path(to))
                _wait_promoted(to, port, req.recovery_timeout)
            result.started = True
            result.dsn = f"postgresql://postgres@127.0.0.1:{port}/{database}"
            result.recovered = _recovered(result.dsn, log_path(to))
    except BaseException:
        with contextlib.suppress(Exception):
            stop_server(to, mode="immediate")
        if created:
            shutil.rmtree(to, ignore_errors=True)
        else:
            for child in to.iterdir() if to.exists() else []:
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        raise
    return result


def _wait_promoted(datadir: Path, port: int, timeout: float, database: str = "postgres") -> None:
    try:
        wait_promoted(datadir, port, timeout, log=log_path(datadir), database=database)
    except RecoveryError as exc:
        raise RestoreError(str(exc)) from None


def restore_in_place(
    repo: Repository, req: RestoreRequest, control: PostgresControl
) -> RestoreResult | dict[str, Any]:
    """Replace the data of the server that ``control`` controls with a restore.

    A logical dump (chosen by ``--backup``) is loaded into the running server with
    ``pg_restore --clean``. A physical restore is prepared next to the data directory
    while the server still runs (the coverage check needs it), then the server is
    stopped, the directories are swapped (the old one is kept as
    ``<datadir>.before-restore-<time>``), the restored server recovers with the server's
    own archive settings (it is production: its new timeline must be archived) and is
    restarted normally. On failure the old directory is put back and started.
    """
    if req.backup_id is not None:
        explicit = choose_base(repo.list_backups(COMPONENT), req.target, backup_id=req.backup_id)
        if explicit.type == LOGICAL:
            return _load_in_place(repo, req, control, explicit)
    req = replace(req, port=control.port, archive=dict(control.server_settings), start=True)
    datadir = control.datadir
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    staging = datadir.with_name(f"{datadir.name}.restoring-{stamp}")
    kept = datadir.with_name(f"{datadir.name}.before-restore-{stamp}")
    prepared = restore(repo, replace(req, to=staging, start=False))
    swapped = False
    try:
        with req.journal.step("stopping the current server"):
            control.stop()
        datadir.rename(kept)
        swapped = True
        staging.rename(datadir)
        major = int((datadir / "PG_VERSION").read_text().strip())
        bindir = server_bindir(major)
        with req.journal.step("recovering in place"):
            start_server(datadir, bindir, log=log_path(datadir))
            _wait_promoted(datadir, prepared.port, req.recovery_timeout, prepared.database)
            dsn = f"postgresql://postgres@127.0.0.1:{prepared.port}/{prepared.database}"
            recovered = _recovered(dsn, log_path(datadir))
            stop_server(datadir)
            log_path(datadir).unlink(missing_ok=True)
            control.start()
    except BaseException:
        with contextlib.suppress(Exception):
            stop_server(datadir, mode="immediate")
        if swapped:
            failed = datadir.with_name(f"{datadir.name}.failed-restore-{stamp}")
            with contextlib.suppress(OSError):
                if datadir.exists():
                    datadir.rename(failed)
                kept.rename(datadir)
            with contextlib.suppress(Exception):
                control.start()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    prepared.data_dir = datadir
    prepared.started = True
    prepared.recovered = recovered
    prepared.previous_data_dir = kept
    prepared.log = None
    prepared.dsn = control.dsn(prepared.database)
    return prepared


def _load_in_place(
    repo: Repository, req: RestoreRequest, control: PostgresControl, base: BackupInfo
) -> dict[str, Any]:
    if req.target.kind != "latest":
        raise UsageError("a logical dump restores as it was taken, without a target")
    database = PgMeta.of(base).database or "payment_db"
    with req.journal.step(f"loading logical dump {base.backup_id}"):
        load_logical(
            repo,
            base,
            dsn=control.dsn(database),
            admin_dsn=control.dsn("postgres"),
            bindir=client_bindir(),
            clean=True,
        )
    return {
        "component": COMPONENT,
        "backup_id": base.backup_id,
        "type": LOGICAL,
        "chain": [base.backup_id],
        "data_dir": str(control.datadir),
        "target": req.target.to_json(),
        "started": True,
        "dsn": control.dsn(database),
        "port": control.port,
    }
