"""Writing a restored data directory: the chain's tars extracted (streamed out of the
repository, durable when done), incrementals combined with ``pg_combinebackup``, and the
recovery settings (``postgresql.auto.conf`` rewritten whole, ``recovery.signal``)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from payapi.backup.postgres import BASE_TAR
from payapi.backup.restore_plan import RestoreError, check_restorable
from payapi.core.journal import Journal
from payapi.servers.postgres import PgCluster
from payapi.servers.procs import chown_to_lab_user, make_reachable, run_tool

if TYPE_CHECKING:
    from payapi.backup.manifest import BackupInfo
    from payapi.backup.repository import Repository


def check_empty(path: Path) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise RestoreError(f"{path} exists and is not an empty directory")


SYNC_WORKERS = 2


def _fsync(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_tree(root: Path) -> None:
    """fsync every directory under ``root`` (deepest first), then ``root``'s parent."""
    dirs = [r for r, _d, _f in os.walk(root)]
    for d in reversed(dirs):
        _fsync(d)
    _fsync(root.parent)


def _fsync_close(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def extract_object(
    repo: Repository, backup_id: str, name: str, dest: Path, *, sync: bool = True
) -> None:
    """Stream a tar object out of the repository into ``dest`` (no staging copy), with
    :mod:`payapi.backup.untar` (the chunks' bytes go to ``os.write`` as they are).

    With ``sync`` the result is durable when this returns, as pg_basebackup's and
    pgBackRest's are: each file is fsynced on a helper thread as soon as its last byte is
    written (so the disk writes while we decrypt the next ones), then every directory.
    """
    from payapi.backup.untar import UntarError, extract

    dest.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(SYNC_WORKERS, "payapi-fsync") as pool:
        pending: list[Future[None]] = []

        def file_done(fd: int) -> None:
            if sync:
                pending.append(pool.submit(_fsync_close, fd))
            else:
                os.close(fd)

        try:
            extract(repo.iter_object(backup_id, name), dest, on_file=file_done)
        except UntarError as exc:
            raise RestoreError(f"backup {backup_id}, object {name}: {exc}") from None
        for future in pending:
            future.result()
    if sync:
        sync_tree(dest)


def materialize(
    repo: Repository,
    chain: Sequence[BackupInfo],
    dest: Path,
    *,
    bindir: Path,
    journal: Journal,
) -> None:
    """Write the data directory of ``chain``'s last backup into ``dest``."""
    check_restorable(chain)
    if len(chain) == 1:
        with journal.step(f"extracting {chain[0].backup_id}"):
            extract_object(repo, chain[0].backup_id, BASE_TAR, dest)
        return
    stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.combine-", dir=dest.parent))
    try:
        parts = []
        for i, b in enumerate(chain):
            part = stage / f"{i:03d}"
            with journal.step(f"extracting {b.backup_id} ({b.type})"):
                extract_object(repo, b.backup_id, BASE_TAR, part, sync=False)  # staged
            parts.append(str(part))
        with journal.step(f"combining {len(chain)} backups with pg_combinebackup"):
            if dest.exists():
                dest.rmdir()  # pg_combinebackup wants to create it
            run_tool(
                [str(bindir / "pg_combinebackup"), *parts, "-o", str(dest)],  # it fsyncs
                what="pg_combinebackup",
                timeout=3600,
            )
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def own(dest: Path) -> None:
    dest.chmod(0o700)
    chown_to_lab_user(dest)
    make_reachable(dest)


def write_recovery(dest: Path, settings: dict[str, str]) -> None:
    """``postgresql.auto.conf`` (whole) and ``recovery.signal``."""
    (dest / "standby.signal").unlink(missing_ok=True)
    (dest / "postmaster.pid").unlink(missing_ok=True)
    (dest / "recovery.signal").write_text("")
    cluster = PgCluster(datadir=dest, port=int(settings["port"]), logfile=log_path(dest))
    cluster.settings = {k: v for k, v in settings.items() if k != "port"}
    cluster.write_settings()


def log_path(dest: Path) -> Path:
    return dest / "log" / "payapi-restore.log"
