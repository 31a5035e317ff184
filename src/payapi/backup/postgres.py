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
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

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
BINDIR_ENV = "PAYAPI_PG_BINDIR"

Progress = Callable[[int, int | None], None]
Phase = Callable[[str], None]


class PgBackupError(Exception):
    """A PostgreSQL backup or restore step failed; the message is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


def is_component(name: str) -> bool:
    """True if ``name`` names the database component (``db``, ``postgres``, ...)."""
    return name.strip().lower() in COMPONENT_ALIASES


# --------------------------------------------------------------------------- LSNs, WAL


def parse_lsn(text: str) -> int:
    """``"0/2000028"`` → 33554472. Raises ValueError on anything else."""
    m = re.fullmatch(r"\s*([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})\s*", text)
    if not m:
        raise ValueError(f"not an LSN: {text!r} (expected e.g. 0/3000060)")
    return (int(m.group(1), 16) << 32) | int(m.group(2), 16)


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:08X}"


def _segs_per_xlogid(seg_size: int) -> int:
    return 0x100000000 // seg_size


def segment_name(timeline: int, segno: int, seg_size: int) -> str:
    """The file name of WAL segment ``segno`` on ``timeline`` (24 hex digits)."""
    per = _segs_per_xlogid(seg_size)
    return f"{timeline:08X}{segno // per:08X}{segno % per:08X}"


def lsn_segment(lsn: int, timeline: int, seg_size: int) -> str:
    """The segment that holds the byte at ``lsn``."""
    return segment_name(timeline, lsn // seg_size, seg_size)


def parse_segment(name: str, seg_size: int) -> tuple[int, int] | None:
    """``(timeline, segno)`` of a plain segment file name; None for other WAL files
    (``.history``, ``.backup``, ``.partial``)."""
    if not re.fullmatch(r"[0-9A-F]{24}", name):
        return None
    tli, hi, lo = int(name[:8], 16), int(name[8:16], 16), int(name[16:], 16)
    return tli, hi * _segs_per_xlogid(seg_size) + lo


def history_name(timeline: int) -> str:
    return f"{timeline:08X}.history"


# --------------------------------------------------------------------------- label, manifest


@dataclass(frozen=True)
class BackupLabel:
    """What ``backup_label`` says (the server writes it; we only read it)."""

    start_lsn: int
    checkpoint_lsn: int
    timeline: int
    start_time: str
    label: str
    incremental_from_lsn: int | None = None


def parse_backup_label(text: str) -> BackupLabel:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            fields[key.strip()] = value.strip()
    try:
        start = parse_lsn(fields["START WAL LOCATION"].split()[0])
        checkpoint = parse_lsn(fields["CHECKPOINT LOCATION"])
        timeline = int(fields["START TIMELINE"])
    except (KeyError, ValueError, IndexError):
        raise PgBackupError("backup_label is incomplete or unreadable") from None
    incr = fields.get("INCREMENTAL FROM LSN")
    return BackupLabel(
        start_lsn=start,
        checkpoint_lsn=checkpoint,
        timeline=timeline,
        start_time=fields.get("START TIME", ""),
        label=fields.get("LABEL", ""),
        incremental_from_lsn=parse_lsn(incr) if incr else None,
    )


@dataclass(frozen=True)
class ManifestSummary:
    """The parts of a ``backup_manifest`` the repository records. ``system_identifier`` is
    empty for a version 1 manifest (PostgreSQL 13-16 do not write one)."""

    system_identifier: str
    timeline: int
    start_lsn: int
    end_lsn: int
    files: int


def parse_manifest(data: bytes) -> ManifestSummary:
    try:
        doc = json.loads(data)
        ranges = doc["WAL-Ranges"]
        # Ranges are listed newest timeline first; the backup ends on the first one.
        end = ranges[0]
        start = ranges[-1]
        return ManifestSummary(
            system_identifier=str(doc.get("System-Identifier", "")),
            timeline=int(end["Timeline"]),
            start_lsn=parse_lsn(start["Start-LSN"]),
            end_lsn=parse_lsn(end["End-LSN"]),
            files=len(doc.get("Files", [])),
        )
    except (ValueError, KeyError, IndexError, TypeError):
        raise PgBackupError("backup_manifest is incomplete or unreadable") from None


def wal_range(summary: ManifestSummary, start_timeline: int, seg_size: int) -> tuple[str, str]:
    """First and last WAL segment a backup needs to become consistent."""
    first = lsn_segment(summary.start_lsn, start_timeline, seg_size)
    last = lsn_segment(max(summary.end_lsn - 1, summary.start_lsn), summary.timeline, seg_size)
    return first, last


# --------------------------------------------------------------------------- tar watching


class TarTap:
    """Watch a tar stream go by and keep copies of a few small members.

    ``feed`` takes the stream in pieces of any size; memory is what the kept members
    need, never the stream. Understands ustar, GNU long names and pax path records
    (PostgreSQL writes plain ustar; the rest costs nothing).
    """

    def __init__(self, wanted: Sequence[str], limit: int = 256 << 20) -> None:
        self.wanted = {w.lstrip("./") for w in wanted}
        self.limit = limit
        self.captured: dict[str, bytes] = {}
        self.members = 0
        self.ended = False
        self._header = bytearray()
        self._remaining = 0  # bytes of member data (plus padding) still to pass
        self._data_left = 0  # of which data (not padding)
        self._keep: bytearray | None = None
        self._keep_name = ""
        self._meta_kind = ""  # "L" (GNU long name) or "x" (pax) being collected
        self._next_name: str | None = None

    def feed(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view and not self.ended:
            if self._remaining:
                take = min(self._remaining, len(view))
                data_take = min(self._data_left, take)
                if data_take and self._keep is not None:
                    self._keep += view[:data_take]
                self._data_left -= data_take
                self._remaining -= take
                view = view[take:]
                if not self._remaining:
                    self._member_done()
                continue
            need = 512 - len(self._header)
            self._header += view[:need]
            view = view[need:]
            if len(self._header) == 512:
                self._start_member(bytes(self._header))
                self._header.clear()

    @staticmethod
    def _size(field: bytes) -> int:
        if field[0] & 0x80:  # base-256 (GNU) for members over 8 GiB
            return int.from_bytes(field[1:], "big")
        text = field.rstrip(b"\0 ").lstrip(b" ")
        return int(text, 8) if text else 0

    def _start_member(self, header: bytes) -> None:
        if header == b"\0" * 512:
            self.ended = True
            return
        name = header[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
        if header[257:262] == b"ustar":
            prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", "replace")
            if prefix:
                name = f"{prefix}/{name}"
        typeflag = chr(header[156]) if header[156] else "0"
        try:
            size = self._size(header[124:136])
        except ValueError:
            raise PgBackupError("the backup stream is not a tar archive") from None
        self._data_left = size
        self._remaining = size + (-size % 512)
        self._keep = None
        self._meta_kind = ""
        if typeflag in ("L", "x"):
            self._meta_kind = typeflag
            self._keep = bytearray()
        else:
            if self._next_name is not None:
                name, self._next_name = self._next_name, None
            self.members += 1
            clean = name.lstrip("./") if name.startswith("./") else name
            if clean in self.wanted and typeflag in ("0", "\0") and size <= self.limit:
                self._keep = bytearray()
                self._keep_name = clean
        if not self._remaining:
            self._member_done()

    def _member_done(self) -> None:
        keep, self._keep = self._keep, None
        if keep is None:
            return
        if self._meta_kind == "L":
            self._next_name = bytes(keep).split(b"\0", 1)[0].decode("utf-8", "replace")
        elif self._meta_kind == "x":
            for record in bytes(keep).decode("utf-8", "replace").split("\n"):
                _length, _sp, kv = record.partition(" ")
                key, eq, value = kv.partition("=")
                if eq and key == "path":
                    self._next_name = value
        else:
            self.captured[self._keep_name] = bytes(keep)
        self._meta_kind = ""


# --------------------------------------------------------------------------- planning


def choose_parent(backups: Sequence[BackupInfo], system_identifier: str) -> BackupInfo | None:
    """The backup an incremental builds on: the newest physical backup of this server."""
    same = [
        b
        for b in backups
        if b.type in PHYSICAL and str(b.meta.get("system_identifier")) == system_identifier
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


# --------------------------------------------------------------------------- binaries


def parse_major(version_output: str) -> int | None:
    """The major version in ``postgres --version`` output: ``postgres (PostgreSQL) 18.6``,
    or a distribution's ``postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)``."""
    m = re.search(r"\(PostgreSQL\)\s+(\d+)", version_output) or re.search(
        r"(?<![\w.])(\d+)(?:\.\d+|devel|beta\d*|rc\d*)", version_output
    )
    return int(m.group(1)) if m else None


def _major_of(bindir: Path, program: str = "postgres") -> int | None:
    try:
        out = subprocess.run(
            [str(bindir / program), "--version"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        ).stdout
    except OSError:
        return None
    return parse_major(out)


def client_bindir() -> Path:
    """Where client tools come from: ``$PAYAPI_PG_BINDIR``, else the embedded PostgreSQL."""
    env = os.environ.get(BINDIR_ENV)
    if env:
        return Path(env)
    from payapi.lab.postgres import pg_bindir

    return pg_bindir()


def server_bindir(major: int) -> Path:
    """Binaries of PostgreSQL ``major`` (a restore must run the backup's major version)."""
    candidates: list[Path] = []
    env = os.environ.get(BINDIR_ENV)
    if env:
        candidates.append(Path(env))
    with contextlib.suppress(Exception):
        from payapi.lab.postgres import pg_bindir

        candidates.append(pg_bindir())
    candidates.append(Path(f"/usr/lib/postgresql/{major}/bin"))
    for c in candidates:
        if (c / "postgres").exists() and _major_of(c) == major:
            return c
    raise PgBackupError(
        f"no PostgreSQL {major} binaries found (looked in "
        f"{', '.join(str(c) for c in candidates)}); set {BINDIR_ENV}"
    )


# --------------------------------------------------------------------------- processes


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Ask the kernel to SIGTERM this child when its parent dies (Linux)."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


class Child:
    """A tool run as a child: stderr to an anonymous temp file (nothing is left behind
    even if we are killed), the child killed and reaped on exit."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        stdout: int | IO[bytes] | None = subprocess.PIPE,
        stdin: int | IO[bytes] | None = subprocess.DEVNULL,
        env: dict[str, str] | None = None,
        what: str = "",
    ) -> None:
        self.what = what or Path(argv[0]).name
        self._err = tempfile.TemporaryFile(prefix="payapi-")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            list(argv),
            stdout=stdout,
            stdin=stdin,
            stderr=self._err,
            env=env,
            preexec_fn=_die_with_parent,
        )

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stdin):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._err.close()

    def stderr_tail(self, lines: int = 3) -> str:
        self._err.seek(0)
        text = self._err.read()[-8192:].decode("utf-8", "replace").strip().splitlines()
        return " / ".join(line.strip() for line in text[-lines:])

    def finish(self, timeout: float | None = None) -> None:
        """Wait for the exit; PgBackupError with the tool's last words if it failed."""
        rc = self.proc.wait(timeout=timeout)
        if rc != 0:
            tail = self.stderr_tail() or f"exit status {rc}"
            raise PgBackupError(f"{self.what} failed: {tail}")


def run_tool(argv: Sequence[str], *, what: str = "", timeout: float = 600) -> str:
    """Run a short tool to completion; its stdout, or PgBackupError with its stderr."""
    try:
        res = subprocess.run(
            list(argv), capture_output=True, text=True, check=False, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise PgBackupError(
            f"{what or Path(argv[0]).name} timed out after {timeout:.0f}s"
        ) from None
    except OSError as exc:
        raise PgBackupError(f"cannot run {argv[0]}: {exc.strerror}") from None
    if res.returncode != 0:
        lines = (res.stderr or res.stdout).strip().splitlines()
        raise PgBackupError(
            f"{what or Path(argv[0]).name} failed: {lines[-1] if lines else res.returncode}"
        )
    return res.stdout


def psql(dsn: str, sql: str, *, bindir: Path | None = None, timeout: float = 60) -> list[list[str]]:
    """Rows of ``sql`` (fields as text). The DSN is never put in an error message."""
    env = {**os.environ, "PGCONNECT_TIMEOUT": "10", "PGAPPNAME": "payapi"}
    argv = [
        str((bindir or client_bindir()) / "psql"),
        "-X",
        "-q",
        "-A",
        "-t",
        "-F",
        "\x1f",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        dsn,
        "-c",
        sql,
    ]
    try:
        res = subprocess.run(
            argv, capture_output=True, text=True, check=False, timeout=timeout, env=env
        )
    except subprocess.TimeoutExpired:
        raise PgBackupError(f"query timed out after {timeout:.0f}s") from None
    if res.returncode != 0:
        lines = res.stderr.strip().splitlines()
        raise PgBackupError(f"query failed: {lines[-1] if lines else res.returncode}")
    return [line.split("\x1f") for line in res.stdout.splitlines() if line]


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
    progress: Progress | None = None
    phase: Phase | None = None
    label: str = "payapi"
    extra_meta: dict[str, Any] = field(default_factory=dict)


def _phase(req: BackupRequest, name: str) -> None:
    if req.phase is not None:
        req.phase(name)


def _stream(
    proc: subprocess.Popen[bytes],
    tap: TarTap | None,
    progress: Progress | None,
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
        if progress is not None:
            progress(done[0], total)
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
        _phase(req, "objects")

        wal_start, wal_end = wal_range(summary, bl.timeline, info.wal_segment_size)
        archived = False
        if info.archiving:
            archived = wait_for_wal(repo, wal_end, req.wal_timeout)
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
            **_base_meta(info),
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
            **req.extra_meta,
        )
        _phase(req, "wal_range")
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
        writer.add_object(BASE_TAR, _stream(child.proc, tap, req.progress, done, info.size_bytes))
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
                _file_chunks(f, tap if tar.name == BASE_TAR else None, req.progress, done),
            )
        tar.unlink()
    captured = dict(tap.captured)
    captured["backup_manifest"] = (target / "backup_manifest").read_bytes()
    return captured


def _file_chunks(
    f: IO[bytes], tap: TarTap | None, progress: Progress | None, done: list[int]
) -> Iterator[bytes]:
    while block := f.read(READ_SIZE):
        if tap is not None:
            tap.feed(block)
        done[0] += len(block)
        if progress is not None:
            progress(done[0], None)
        yield block


def _logical_backup(
    repo: Repository, req: BackupRequest, info: ServerInfo, bindir: Path
) -> BackupInfo:
    """``pg_dump -Fc`` of the DSN's database (uncompressed: the repository compresses)
    plus ``pg_dumpall --globals-only`` (roles and tablespaces)."""
    with repo.begin_backup(COMPONENT, LOGICAL) as writer:
        done = [0]
        dump = [str(bindir / "pg_dump"), "-Fc", "--compress=0", "-d", req.dsn]
        with Child(dump, what="pg_dump") as child:
            writer.add_object(
                f"{info.database}.dump",
                _stream(child.proc, None, req.progress, done, None),
            )
            child.finish(timeout=60)
        globals_argv = [str(bindir / "pg_dumpall"), "--globals-only", "-d", req.dsn]
        with Child(globals_argv, what="pg_dumpall") as child:
            writer.add_object(GLOBALS_OBJECT, _stream(child.proc, None, None, [0], None))
            child.finish(timeout=60)
        _phase(req, "objects")
        end = psql(req.dsn, "SELECT pg_current_wal_lsn()::text, now()", bindir=bindir)
        writer.set_meta(
            **_base_meta(info),
            timeline=info.timeline,
            end_lsn=end[0][0] if end and not info.in_recovery else None,
            dumped_at=end[0][1] if end else None,
            dump_object=f"{info.database}.dump",
            **req.extra_meta,
        )
        _phase(req, "wal_range")
        return writer.commit()


def utcnow() -> datetime:
    return datetime.now(UTC)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
