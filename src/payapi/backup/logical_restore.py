"""Restoring a logical dump (``pg_dump -Fc``): into a new cluster (``initdb``, then
``pg_restore``), or into a running server (``--clean``); globals first, best effort."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from payapi.backup.materialize import log_path, own
from payapi.backup.postgres import GLOBALS_OBJECT, PgMeta
from payapi.backup.restore_plan import RestoreRequest, RestoreResult
from payapi.servers.postgres import PgCluster, client_bindir, psql
from payapi.servers.procs import Child

if TYPE_CHECKING:
    from payapi.backup.manifest import BackupInfo
    from payapi.backup.repository import Repository


def restore_logical(
    repo: Repository, base: BackupInfo, req: RestoreRequest, to: Path, port: int, database: str
) -> RestoreResult:
    """A logical dump goes into a new cluster (initdb), then ``pg_restore``."""
    bindir = client_bindir()
    log = log_path(to)
    cluster = PgCluster(datadir=to, port=port, logfile=to.parent / f".{to.name}.init.log")
    result = RestoreResult(
        backup_id=base.backup_id,
        type=base.type,
        chain=[base.backup_id],
        data_dir=to,
        port=port,
        target=req.target,
        timeline=None,
        database=database,
        log=log,
    )
    created = not to.exists()
    journal = req.journal
    try:
        with journal.step("initdb"):
            cluster.init()
        cluster.logfile.unlink(missing_ok=True)
        cluster.logfile = log
        log.parent.mkdir(parents=True, exist_ok=True)
        log.touch()
        own(to)
        cluster.settings = {"archive_mode": "off"}
        cluster.start()
        dsn = cluster.dsn(database)
        with journal.step("restoring globals and the dump"):
            load_logical(repo, base, dsn=dsn, admin_dsn=cluster.dsn("postgres"), bindir=bindir)
        if req.start:
            result.started = True
            result.dsn = dsn
        else:
            cluster.stop()
    except BaseException:
        with contextlib.suppress(Exception):
            cluster.stop(mode="immediate")
        if created:
            shutil.rmtree(to, ignore_errors=True)
        raise
    finally:
        (to.parent / f".{to.name}.init.log").unlink(missing_ok=True)
    return result


def load_logical(
    repo: Repository,
    base: BackupInfo,
    *,
    dsn: str,
    admin_dsn: str,
    bindir: Path,
    clean: bool = False,
) -> None:
    """Globals (best effort: roles that exist stay), the database, then the dump,
    streamed from the repository into ``pg_restore``."""
    meta = PgMeta.of(base)
    database = meta.database or "postgres"
    dump_object = meta.dump_object or f"{database}.dump"
    names = {o.name for o in repo.read_manifest(base.backup_id).objects}
    if GLOBALS_OBJECT in names and not clean:
        _pipe(
            repo,
            base.backup_id,
            GLOBALS_OBJECT,
            [str(bindir / "psql"), "-X", "-q", "-d", admin_dsn, "-v", "ON_ERROR_STOP=0"],
            what="psql (globals)",
            check=False,
        )
    if not clean and database != "postgres":
        exists = psql(
            admin_dsn,
            f"SELECT 1 FROM pg_database WHERE datname = {_literal(database)}",  # noqa: S608
            bindir=bindir,
        )
        if not exists:
            psql(admin_dsn, f"CREATE DATABASE {_ident(database)}", bindir=bindir)
    argv = [str(bindir / "pg_restore"), "-d", dsn, "--exit-on-error"]
    if clean:
        argv += ["--clean", "--if-exists", "--single-transaction"]
    _pipe(repo, base.backup_id, dump_object, argv, what="pg_restore")


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _pipe(
    repo: Repository,
    backup_id: str,
    name: str,
    argv: Sequence[str],
    *,
    what: str,
    check: bool = True,
) -> None:
    with Child(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, what=what) as child:
        assert child.proc.stdin is not None
        try:
            for chunk in repo.iter_object(backup_id, name):
                child.proc.stdin.write(chunk)
        except BrokenPipeError:
            pass
        finally:
            with contextlib.suppress(BrokenPipeError):
                child.proc.stdin.close()
        if check:
            child.finish(timeout=3600)
        else:
            child.proc.wait(timeout=3600)
