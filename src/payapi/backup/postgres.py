"""The PostgreSQL backup engine: physical (full, incremental) and logical backups.

Deciding is kept apart from doing (as in Patroni): the first half of this module is pure —
LSN and WAL segment arithmetic, parsing of ``backup_label`` and ``backup_manifest``, a
streaming tar watcher, the choice of an incremental's parent, the ``pg_basebackup``
command line. The second half runs the tools and writes into a
:class:`~payapi.backup.repository.Repository`.

How a physical backup is written (each step is a phase a crash can interrupt):

1. ``pg_basebackup -D - -Ft -X fetch`` streams one tar to our stdin, and the tar goes
   straight into :meth:`BackupWriter.add_object` (``base.tar``): compressed, encrypted
   and hashed chunk by chunk, never staged on disk, memory bounded by the chunk size. The
   tar includes the WAL that makes the backup consistent (``-X fetch``), so a backup can
   be restored even without the WAL archive. While it streams by, a :class:`TarTap`
   keeps two small members: ``backup_label`` and ``backup_manifest``. The manifest is
   also stored as its own object: the next incremental is taken against it.
   A cluster with extra tablespaces cannot be streamed as one tar; then each tablespace's
   tar is staged in a work directory and added from there.
2. The WAL range (first and last segment, from the manifest's ``WAL-Ranges``) is recorded
   once the last segment is in the archive (when the server archives), so a backup that
   is listed is also a valid starting point for point-in-time recovery.
3. The manifest is written, last (:meth:`BackupWriter.commit`).

A process killed at any phase leaves no manifest, so the backup is never listed; the
``pg_basebackup`` child is in our process group and also gets ``SIGTERM`` when we die
(``PR_SET_PDEATHSIG``), and it stops on a broken pipe anyway.

Incremental backups (PostgreSQL 17+, ``summarize_wal = on``) are taken with
``--incremental`` against the manifest of the newest physical backup of the same server;
the manifest records that backup as ``parent``. A restore combines the chain with
``pg_combinebackup`` (see :mod:`payapi.backup.restore`).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pydantic import ConfigDict, Field

from payapi.backup.manifest import BackupMeta
from payapi.backup.pg_format import (
    PgBackupError,
    TarTap,
    format_lsn,
    parse_backup_label,
    parse_lsn,
    parse_manifest,
    wal_range,
)
from payapi.core.journal import Journal
from payapi.servers.postgres import client_bindir, psql
from payapi.servers.procs import Child, ToolError

if TYPE_CHECKING:
    from payapi.backup.manifest import BackupInfo
    from payapi.backup.repository import BackupWriter, Repository

COMPONENT = "database"
COMPONENT_ALIASES = frozenset({"database", "db", "postgres", "postgresql"})
FULL = "full"
INCREMENTAL = "incremental"
LOGICAL = "logical"
PHYSICAL = (FULL, INCREMENTAL)
BASE_TAR = "base.tar"
MANIFEST_OBJECT = "backup_manifest"
GLOBALS_OBJECT = "globals.sql"
READ_SIZE = 1 << 20

# The journal steps of a backup, in order: the data objects, then the WAL range and the
# metadata, then the manifest (last: a backup without it is never listed).
STEP_OBJECTS = "streaming the backup"
STEP_WAL_RANGE = "recording the WAL range"
STEP_MANIFEST = "writing the manifest"


class PgMeta(BackupMeta):
    """What a database backup's manifest records about the server and the backup."""

    model_config = ConfigDict(frozen=True, extra="allow", coerce_numbers_to_str=True)

    engine: str = "postgresql"
    pg_version: int | None = None
    pg_major: int | None = None
    system_identifier: str | None = None
    database: str | None = None
    wal_segment_size: int | None = None
    # physical backups
    timeline: int | None = None
    start_timeline: int | None = None
    start_lsn: str | None = None
    end_lsn: str | None = None
    checkpoint_lsn: str | None = None
    start_time: str | None = None
    label: str | None = None
    files: int | None = None
    tablespaces: list[str] = Field(default_factory=list)
    wal_included: bool | None = None
    wal_archived: bool | None = None
    next_xid: int | None = None
    # logical dumps
    dumped_at: str | None = None
    dump_object: str | None = None

    @property
    def segment_size(self) -> int:
        return self.wal_segment_size or 16 << 20

    def end(self) -> tuple[int, int] | None:
        """(timeline, end LSN) of a physical backup, when recorded."""
        if self.timeline is None or self.end_lsn is None:
            return None
        try:
            return self.timeline, parse_lsn(self.end_lsn)
        except ValueError:
            return None


# What a step that runs PostgreSQL's tools may raise: our refusal, or the tool's failure.
PgFailure = (PgBackupError, ToolError)


def is_component(name: str) -> bool:
    """True if ``name`` names the database component (``db``, ``postgres``, ...)."""
    return name.strip().lower() in COMPONENT_ALIASES


# --------------------------------------------------------------------------- planning


def choose_parent(backups: Sequence[BackupInfo], system_identifier: str) -> BackupInfo | None:
    """The backup an incremental builds on: the newest physical backup of this server."""
    same = [
        b
        for b in backups
        if b.type in PHYSICAL and PgMeta.of(b).system_identifier == system_identifier
    ]
    return max(same, key=lambda b: (b.finished_at, b.backup_id), default=None)


def basebackup_argv(
    bindir: Path,
    dsn: str,
    *,
    target: str = "-",
    incremental_manifest: Path | None = None,
    label: str = "payapi",
) -> list[str]:
    """The ``pg_basebackup`` command line: tar format, fast checkpoint, WAL included."""
    argv = [
        str(bindir / "pg_basebackup"),
        "-d",
        dsn,
        "-D",
        target,
        "-F",
        "t",
        "-X",
        "fetch",
        "--checkpoint=fast",
        "-l",
        label,
    ]
    if target != "-":
        argv.append("--no-sync")  # staged tars are read back at once, then deleted
    if incremental_manifest is not None:
        argv.append(f"--incremental={incremental_manifest}")
    return argv


# --------------------------------------------------------------------------- the source


@dataclass(frozen=True)
class ServerInfo:
    version_num: int
    system_identifier: str
    timeline: int
    wal_segment_size: int
    archive_mode: str
    summarize_wal: bool
    database: str
    size_bytes: int
    in_recovery: bool
    tablespaces: tuple[str, ...] = ()

    @property
    def major(self) -> int:
        return self.version_num // 10000

    @property
    def archiving(self) -> bool:
        return self.archive_mode in ("on", "always")


_INFO_SQL = """
SELECT current_setting('server_version_num'),
       (SELECT system_identifier FROM pg_control_system()),
       CASE WHEN pg_is_in_recovery()
            THEN (SELECT timeline_id FROM pg_control_checkpoint())::text
            ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)) END,
       (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'),
       current_setting('archive_mode'),
       coalesce((SELECT setting FROM pg_settings WHERE name = 'summarize_wal'), 'off'),
       current_database(),
       (SELECT sum(pg_database_size(oid)) FROM pg_database)::bigint,
       pg_is_in_recovery(),
       coalesce((SELECT string_agg(oid::text, ',') FROM pg_tablespace
                 WHERE spcname NOT IN ('pg_default', 'pg_global')), '')
"""


def server_info(dsn: str, bindir: Path | None = None) -> ServerInfo:
    rows = psql(dsn, _INFO_SQL, bindir=bindir)
    if not rows or len(rows[0]) != 10:
        raise PgBackupError("unexpected answer from the server")
    r = rows[0]
    tli = int(r[2][1:], 16) if r[2].startswith("x") else int(r[2])
    return ServerInfo(
        version_num=int(r[0]),
        system_identifier=r[1],
        timeline=tli,
        wal_segment_size=int(r[3]),
        archive_mode=r[4],
        summarize_wal=r[5] == "on",
        database=r[6],
        size_bytes=int(r[7] or 0),
        in_recovery=r[8] == "t",
        tablespaces=tuple(t for t in r[9].split(",") if t),
    )


def archiver_status(dsn: str, bindir: Path | None = None) -> dict[str, str]:
    """``pg_stat_archiver``: what was archived last, what failed last (for messages)."""
    rows = psql(
        dsn,
        "SELECT coalesce(last_archived_wal, ''), coalesce(last_failed_wal, ''), "
        "coalesce(last_failed_time::text, ''), failed_count FROM pg_stat_archiver",
        bindir=bindir,
    )
    r = rows[0] if rows else ["", "", "", "0"]
    return {
        "last_archived_wal": r[0],
        "last_failed_wal": r[1],
        "last_failed_time": r[2],
        "failed_count": r[3],
    }


def wal_archived(repo: Repository, name: str) -> bool:
    from payapi.backup.errors import NotFound

    try:
        repo.wal_entry(name)
    except NotFound:
        return False
    return True


def wait_for_wal(
    repo: Repository,
    name: str,
    timeout: float,
    *,
    poll: float = 0.25,
    keep_alive: Callable[[], None] | None = None,
) -> bool:
    """Wait until segment ``name`` is in the repository's archive (False on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        if wal_archived(repo, name):
            return True
        if time.monotonic() >= deadline:
            return False
        if keep_alive is not None:
            keep_alive()
        time.sleep(poll)


# --------------------------------------------------------------------------- backups


@dataclass
class BackupRequest:
    """What to back up and how. ``dsn`` reaches the server as a superuser (or a role with
    REPLICATION for physical backups)."""

    kind: str
    dsn: str
    wal_timeout: float = 60.0
    work_dir: Path | None = None
    journal: Journal = field(default_factory=Journal)
    # Called as the data streams (the lock's lease renewal); may raise to stop the backup.
    keep_alive: Callable[[], None] | None = None
    label: str = "payapi"
    extra_meta: dict[str, Any] = field(default_factory=dict)

    def advanced(self, done: int, total: int | None) -> None:
        self.journal.progress(done, total)
        if self.keep_alive is not None:
            self.keep_alive()


def _stream(
    proc: subprocess.Popen[bytes],
    tap: TarTap | None,
    req: BackupRequest | None,
    done: list[int],
    total: int | None,
) -> Iterator[bytes]:
    assert proc.stdout is not None
    while True:
        block = proc.stdout.read(READ_SIZE)
        if not block:
            return
        if tap is not None:
            tap.feed(block)
        done[0] += len(block)
        if req is not None:
            req.advanced(done[0], total)
        yield block


def run_backup(repo: Repository, req: BackupRequest) -> BackupInfo:
    """Take one backup of the server at ``req.dsn``; returns the committed backup."""
    if req.kind not in (FULL, INCREMENTAL, LOGICAL):
        raise PgBackupError(f"unknown backup type {req.kind!r}: full, incremental or logical")
    bindir = client_bindir()
    info = server_info(req.dsn, bindir)
    if req.kind == LOGICAL:
        return _logical_backup(repo, req, info, bindir)
    return _physical_backup(repo, req, info, bindir)


def _base_meta(info: ServerInfo) -> dict[str, Any]:
    return {
        "engine": "postgresql",
        "pg_version": info.version_num,
        "pg_major": info.major,
        "system_identifier": info.system_identifier,
        "database": info.database,
        "wal_segment_size": info.wal_segment_size,
    }


def _meta(info: ServerInfo, extra: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """The manifest's ``meta``: exactly the keys given, checked against :class:`PgMeta`."""
    return PgMeta(**_base_meta(info), **fields, **extra).dump()


def _physical_backup(
    repo: Repository, req: BackupRequest, info: ServerInfo, bindir: Path
) -> BackupInfo:
    parent: BackupInfo | None = None
    if req.kind == INCREMENTAL:
        if info.major < 17:
            raise PgBackupError(
                f"incremental backups need PostgreSQL 17 or later; the server runs {info.major}"
            )
        if not info.summarize_wal:
            raise PgBackupError(
                "incremental backups need summarize_wal = on on the server "
                "(turn it on, then take a full backup)"
            )
        parent = choose_parent(repo.list_backups(COMPONENT), info.system_identifier)
        if parent is None:
            raise PgBackupError(
                "no physical backup of this server to build an incremental on; "
                "run a full backup first"
            )
    if req.work_dir is not None:
        req.work_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        scratch = Path(
            stack.enter_context(
                tempfile.TemporaryDirectory(prefix="payapi-backup-", dir=req.work_dir)
            )
        )
        parent_manifest: Path | None = None
        if parent is not None:
            parent_manifest = scratch / "parent.backup_manifest"
            repo.restore_object(parent.backup_id, MANIFEST_OBJECT, parent_manifest)
        writer = stack.enter_context(
            repo.begin_backup(COMPONENT, req.kind, parent.backup_id if parent else None)
        )
        label = f"{req.label} {writer.backup_id}"
        with req.journal.step(STEP_OBJECTS):
            if info.tablespaces:
                captured = _staged_basebackup(
                    writer, req, info, bindir, scratch, parent_manifest, label
                )
            else:
                captured = _streamed_basebackup(writer, req, info, bindir, parent_manifest, label)
            try:
                label_text = captured["backup_label"].decode("utf-8", "replace")
                manifest_bytes = captured["backup_manifest"]
            except KeyError as exc:
                raise PgBackupError(f"the backup stream has no {exc.args[0]}") from None
            bl = parse_backup_label(label_text)
            summary = parse_manifest(manifest_bytes)
            if summary.system_identifier and summary.system_identifier != info.system_identifier:
                raise PgBackupError("the backup's system identifier differs from the server's")
            writer.add_bytes(MANIFEST_OBJECT, manifest_bytes)

        with req.journal.step(STEP_WAL_RANGE):
            wal_start, wal_end = wal_range(summary, bl.timeline, info.wal_segment_size)
            archived = False
            if info.archiving:
                archived = wait_for_wal(repo, wal_end, req.wal_timeout, keep_alive=req.keep_alive)
                if not archived:
                    import logging

                    logging.getLogger(__name__).warning(
                        "WAL segment %s was not archived within %.0fs; the backup is "
                        "consistent (it includes its WAL) but PITR from it needs the archive",
                        wal_end,
                        req.wal_timeout,
                    )
            writer.set_wal_range(wal_start, wal_end)
            writer.set_meta(
                **_meta(
                    info,
                    req.extra_meta,
                    timeline=summary.timeline,
                    start_timeline=bl.timeline,
                    start_lsn=format_lsn(summary.start_lsn),
                    end_lsn=format_lsn(summary.end_lsn),
                    checkpoint_lsn=format_lsn(bl.checkpoint_lsn),
                    start_time=bl.start_time,
                    label=bl.label,
                    files=summary.files,
                    tablespaces=list(info.tablespaces),
                    wal_included=True,
                    wal_archived=archived,
                )
            )
        with req.journal.step(STEP_MANIFEST):
            return writer.commit()
    raise AssertionError("unreachable")  # pragma: no cover


def _streamed_basebackup(
    writer: BackupWriter,
    req: BackupRequest,
    info: ServerInfo,
    bindir: Path,
    parent_manifest: Path | None,
    label: str,
) -> dict[str, bytes]:
    argv = basebackup_argv(
        bindir, req.dsn, target="-", incremental_manifest=parent_manifest, label=label
    )
    tap = TarTap(["backup_label", "backup_manifest"])
    with Child(argv, what="pg_basebackup") as child:
        done = [0]
        writer.add_object(BASE_TAR, _stream(child.proc, tap, req, done, info.size_bytes))
        child.finish(timeout=60)
    return tap.captured


def _staged_basebackup(
    writer: BackupWriter,
    req: BackupRequest,
    info: ServerInfo,
    bindir: Path,
    scratch: Path,
    parent_manifest: Path | None,
    label: str,
) -> dict[str, bytes]:
    """Tablespaces: one tar each, so ``-D -`` is impossible; stage them, then add."""
    target = scratch / "tars"
    argv = basebackup_argv(
        bindir, req.dsn, target=str(target), incremental_manifest=parent_manifest, label=label
    )
    with Child(argv, stdout=subprocess.DEVNULL, what="pg_basebackup") as child:
        child.finish()
    tap = TarTap(["backup_label"])
    done = [0]
    for tar in sorted(target.glob("*.tar")):
        with open(tar, "rb") as f:
            writer.add_object(
                tar.name,
                _file_chunks(f, tap if tar.name == BASE_TAR else None, req, done),
            )
        tar.unlink()
    captured = dict(tap.captured)
    captured["backup_manifest"] = (target / "backup_manifest").read_bytes()
    return captured


def _file_chunks(
    f: IO[bytes], tap: TarTap | None, req: BackupRequest, done: list[int]
) -> Iterator[bytes]:
    while block := f.read(READ_SIZE):
        if tap is not None:
            tap.feed(block)
        done[0] += len(block)
        req.advanced(done[0], None)
        yield block


def _logical_backup(
    repo: Repository, req: BackupRequest, info: ServerInfo, bindir: Path
) -> BackupInfo:
    """``pg_dump -Fc`` of the DSN's database (uncompressed: the repository compresses)
    plus ``pg_dumpall --globals-only`` (roles and tablespaces)."""
    with repo.begin_backup(COMPONENT, LOGICAL) as writer:
        with req.journal.step(STEP_OBJECTS):
            done = [0]
            dump = [str(bindir / "pg_dump"), "-Fc", "--compress=0", "-d", req.dsn]
            with Child(dump, what="pg_dump") as child:
                writer.add_object(
                    f"{info.database}.dump",
                    _stream(child.proc, None, req, done, None),
                )
                child.finish(timeout=60)
            globals_argv = [str(bindir / "pg_dumpall"), "--globals-only", "-d", req.dsn]
            with Child(globals_argv, what="pg_dumpall") as child:
                writer.add_object(GLOBALS_OBJECT, _stream(child.proc, None, None, [0], None))
                child.finish(timeout=60)
        with req.journal.step(STEP_WAL_RANGE):
            end = psql(req.dsn, "SELECT pg_current_wal_lsn()::text, now()", bindir=bindir)
            writer.set_meta(
                **_meta(
                    info,
                    req.extra_meta,
                    timeline=info.timeline,
                    end_lsn=end[0][0] if end and not info.in_recovery else None,
                    dumped_at=end[0][1] if end else None,
                    dump_object=f"{info.database}.dump",
                )
            )
        with req.journal.step(STEP_MANIFEST):
            return writer.commit()


def utcnow() -> datetime:
    return datetime.now(UTC)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
