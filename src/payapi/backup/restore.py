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
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from payapi.backup.postgres import (
    BASE_TAR,
    COMPONENT,
    GLOBALS_OBJECT,
    LOGICAL,
    PHYSICAL,
    Child,
    PgBackupError,
    ServerInfo,
    archiver_status,
    client_bindir,
    format_lsn,
    history_name,
    parse_lsn,
    parse_segment,
    psql,
    run_tool,
    server_bindir,
    server_info,
    wait_for_wal,
)
from payapi.backup.wal import guc_string

if TYPE_CHECKING:
    from payapi.backup.manifest import BackupInfo
    from payapi.backup.repository import Repository

Step = Callable[[str], None]

RECOVERY_FAILED = "recovery ended before configured recovery target was reached"


class RestoreError(PgBackupError):
    """A restore could not be done (or would not land where asked); one line."""


# --------------------------------------------------------------------------- targets


def parse_time(text: str) -> datetime:
    """An ISO 8601 time; without a zone it is UTC. ValueError when unreadable."""
    raw = text.strip()
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00").replace(" ", "T", 1))
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {text!r} (e.g. 2026-11-27T14:05:00Z)") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


@dataclass(frozen=True)
class Target:
    """Where recovery stops: ``latest`` (the end of the archive), ``immediate`` (the
    backup's own consistent point), or a ``time``, ``lsn`` or ``xid``."""

    kind: str = "latest"
    time: datetime | None = None
    lsn: int | None = None
    xid: int | None = None

    @property
    def is_point(self) -> bool:
        return self.kind in ("time", "lsn", "xid")

    def describe(self) -> str:
        if self.kind == "time" and self.time is not None:
            return f"time {self.time.astimezone(UTC).isoformat()}"
        if self.kind == "lsn" and self.lsn is not None:
            return f"LSN {format_lsn(self.lsn)}"
        if self.kind == "xid":
            return f"transaction {self.xid}"
        return self.kind

    def to_json(self) -> dict[str, Any]:
        value: Any = None
        if self.time is not None:
            value = self.time.astimezone(UTC).isoformat()
        elif self.lsn is not None:
            value = format_lsn(self.lsn)
        elif self.xid is not None:
            value = self.xid
        return {"kind": self.kind, "value": value}

    def settings(self) -> dict[str, str]:
        """The ``recovery_target*`` settings (none for ``latest``)."""
        if self.kind == "latest":
            return {}
        if self.kind == "immediate":
            out = {"recovery_target": "'immediate'"}
        elif self.kind == "time" and self.time is not None:
            stamp = self.time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")
            out = {"recovery_target_time": guc_string(stamp)}
        elif self.kind == "lsn" and self.lsn is not None:
            out = {"recovery_target_lsn": guc_string(format_lsn(self.lsn))}
        elif self.kind == "xid" and self.xid is not None:
            out = {"recovery_target_xid": guc_string(str(self.xid))}
        else:
            raise ValueError(f"incomplete recovery target {self!r}")
        out["recovery_target_inclusive"] = "on"
        out["recovery_target_action"] = "'promote'"
        return out


def parse_target(
    *,
    time: str | None = None,
    lsn: str | None = None,
    xid: str | None = None,
    immediate: bool = False,
) -> Target:
    """At most one of the four; none means ``latest``. ValueError on bad input."""
    given = [n for n, v in (("time", time), ("lsn", lsn), ("xid", xid)) if v is not None]
    if immediate:
        given.append("immediate")
    if len(given) > 1:
        raise ValueError(f"give one recovery target, not {' and '.join(given)}")
    if time is not None:
        return Target("time", time=parse_time(time))
    if lsn is not None:
        return Target("lsn", lsn=parse_lsn(lsn))
    if xid is not None:
        if not xid.strip().isdigit() or int(xid) < 3:
            raise ValueError(f"not a transaction id: {xid!r}")
        return Target("xid", xid=int(xid))
    return Target("immediate") if immediate else Target("latest")


# --------------------------------------------------------------------------- timelines


def parse_history(text: str) -> list[tuple[int, int]]:
    """A ``.history`` file: ``(parent timeline, switch point)`` per line, oldest first."""
    out: list[tuple[int, int]] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            with contextlib.suppress(ValueError):
                out.append((int(parts[0]), parse_lsn(parts[1])))
    return out


@dataclass(frozen=True)
class Lineage:
    """A timeline and its ancestors: which (timeline, LSN) positions it contains."""

    timeline: int
    ancestors: tuple[tuple[int, int], ...] = ()  # (timeline, switch point) oldest first

    def includes(self, timeline: int, lsn: int) -> bool:
        if timeline == self.timeline:
            return True
        return any(t == timeline and lsn <= end for t, end in self.ancestors)

    @property
    def timelines(self) -> set[int]:
        return {self.timeline, *(t for t, _ in self.ancestors)}


# --------------------------------------------------------------------------- choosing


def _meta_int(b: BackupInfo, key: str) -> int | None:
    v = b.meta.get(key)
    return int(v) if isinstance(v, int | str) and str(v).isdigit() else None


def _end(b: BackupInfo) -> tuple[int, int] | None:
    """(timeline, end LSN) of a physical backup, from its metadata."""
    tli = _meta_int(b, "timeline")
    end = b.meta.get("end_lsn")
    if tli is None or not isinstance(end, str):
        return None
    try:
        return tli, parse_lsn(end)
    except ValueError:
        return None


def choose_base(
    backups: Sequence[BackupInfo],
    target: Target,
    *,
    backup_id: str | None = None,
    lineage: Lineage | None = None,
    system_identifier: str | None = None,
) -> BackupInfo:
    """The backup to restore from.

    An explicit ``backup_id`` wins (a logical one only without a point target). Else
    the newest physical backup of the lineage (and server) that can reach the target:
    for a time, one that *finished* before it; for an LSN, one that ends before it; for
    a transaction id, one taken before that id was assigned (when recorded).
    """
    if backup_id is not None:
        found = next((b for b in backups if b.backup_id == backup_id), None)
        if found is None:
            raise RestoreError(f"backup {backup_id} not found")
        if found.component != COMPONENT:
            raise RestoreError(f"backup {backup_id} is a {found.component} backup")
        if found.type == LOGICAL and target.kind not in ("latest", "immediate"):
            raise RestoreError(
                f"backup {backup_id} is a logical dump: it restores as it was taken, "
                "not to a point in time"
            )
        return found
    candidates = []
    for b in backups:
        if b.component != COMPONENT or b.type not in PHYSICAL:
            continue
        if system_identifier and str(b.meta.get("system_identifier")) != system_identifier:
            continue
        end = _end(b)
        if end is None:
            continue
        if lineage is not None and not lineage.includes(*end):
            continue
        candidates.append((b, end))
    if not candidates:
        raise RestoreError("no physical backup of the database to restore from")
    usable = candidates
    if target.kind == "time" and target.time is not None:
        t = target.time
        usable = [(b, e) for b, e in candidates if b.finished_at <= t]
        if not usable:
            first = min(b.finished_at for b, _ in candidates)
            raise RestoreError(
                f"no backup finished before {t.astimezone(UTC).isoformat()} "
                f"(the oldest finished at {first.astimezone(UTC).isoformat()})"
            )
    elif target.kind == "lsn" and target.lsn is not None:
        lsn = target.lsn
        usable = [(b, e) for b, e in candidates if e[1] <= lsn]
        if not usable:
            raise RestoreError(f"no backup ends before LSN {format_lsn(lsn)}")
    elif target.kind == "xid" and target.xid is not None:
        xid = target.xid
        known = [(b, e) for b, e in candidates if _meta_int(b, "next_xid") is not None]
        before = [(b, e) for b, e in known if (_meta_int(b, "next_xid") or 0) <= xid]
        # Without a recorded horizon, fall back to the oldest backup (it is the one most
        # likely to precede the transaction); PostgreSQL refuses if it does not.
        usable = before or [min(candidates, key=lambda be: (be[0].finished_at, be[0].backup_id))]
    return max(usable, key=lambda be: (be[0].finished_at, be[0].backup_id))[0]


def backup_chain(backups: Iterable[BackupInfo], base: BackupInfo) -> list[BackupInfo]:
    """The full backup and every incremental up to ``base``, oldest first."""
    by_id = {b.backup_id: b for b in backups}
    chain = [base]
    seen = {base.backup_id}
    while chain[0].parent is not None:
        parent = by_id.get(chain[0].parent)
        if parent is None:
            raise RestoreError(
                f"backup {chain[0].backup_id} needs {chain[0].parent}, which is missing"
            )
        if parent.backup_id in seen:
            raise RestoreError(f"backup {base.backup_id} has a cyclic chain")
        seen.add(parent.backup_id)
        chain.insert(0, parent)
    if chain[0].type != "full":
        raise RestoreError(f"the chain of {base.backup_id} does not start with a full backup")
    return chain


def missing_segments(archived: Iterable[str], first: str, last: str, seg_size: int) -> list[str]:
    """Plain segments of one timeline between ``first`` and ``last`` that are absent."""
    a, b = parse_segment(first, seg_size), parse_segment(last, seg_size)
    if a is None or b is None or a[0] != b[0]:
        return []
    have = set(archived)
    from payapi.backup.postgres import segment_name

    return [
        name
        for segno in range(a[1], b[1] + 1)
        if (name := segment_name(a[0], segno, seg_size)) not in have
    ]


def recovery_settings(
    target: Target,
    *,
    restore_command: str,
    timeline: int,
    port: int,
    archive: dict[str, str] | None = None,
) -> dict[str, str]:
    """Everything the restored server's ``postgresql.auto.conf`` gets (besides the lab
    base settings). ``archive`` None means a copy: archiving off."""
    out = {
        "port": str(port),
        "restore_command": guc_string(restore_command),
        "recovery_target_timeline": guc_string(str(timeline)),
        "hot_standby": "off",
    }
    if archive is None:
        out["archive_mode"] = "off"
        out["archive_command"] = "''"
    else:
        out.update(archive)
    out.update(target.settings())
    return out


# --------------------------------------------------------------------------- reading WAL

_COMMIT = re.compile(
    r"desc: (?:COMMIT|ABORT) (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) ([A-Za-z0-9+:-]+)"
)


def parse_waldump_commits(text: str) -> list[datetime]:
    """Commit/abort timestamps in ``pg_waldump --rmgr=Transaction`` output (run in UTC)."""
    out = []
    for m in _COMMIT.finditer(text):
        stamp, zone = m.group(1), m.group(2)
        if zone not in ("UTC", "GMT", "+00"):
            continue
        with contextlib.suppress(ValueError):
            out.append(datetime.fromisoformat(stamp).replace(tzinfo=UTC))
    return out


def last_archived_commit(
    repo: Repository, lineage: Lineage, seg_size: int, bindir: Path, *, max_segments: int = 8
) -> datetime | None:
    """The newest commit timestamp in the archive of ``lineage`` (reads the last
    segments with ``pg_waldump``; None if none of them has one)."""
    names = []
    for name in repo.list_wal():
        parsed = parse_segment(name, seg_size)
        if parsed is not None and parsed[0] in lineage.timelines:
            names.append((parsed[1], parsed[0], name))
    names.sort(reverse=True)
    with tempfile.TemporaryDirectory(prefix="payapi-waldump-") as tmp:
        for _segno, _tli, name in names[:max_segments]:
            dest = Path(tmp) / name
            try:
                repo.get_wal(name, dest)
            except PgBackupError:
                continue
            res = subprocess.run(
                [str(bindir / "pg_waldump"), "--rmgr=Transaction", str(dest)],
                capture_output=True,
                text=True,
                check=False,
                env={**os.environ, "TZ": "UTC"},
                timeout=120,
            )
            dest.unlink()
            commits = parse_waldump_commits(res.stdout)
            if commits:
                return max(commits)
    return None


# --------------------------------------------------------------------------- requests


@dataclass
class RestoreRequest:
    """One restore. ``to`` is the new data directory (absent or empty)."""

    to: Path
    restore_command: str
    target: Target = field(default_factory=Target)
    backup_id: str | None = None
    port: int | None = None  # None or 0: a free port
    start: bool = False
    timeline: int | None = None
    source_dsn: str | None = None  # the server backed up, for the coverage check
    archive_timeout: float = 120.0
    recovery_timeout: float = 1800.0
    verify_backup: bool = False
    archive: dict[str, str] | None = None  # in place: the lab's archive settings
    step: Step | None = None


@dataclass
class RestoreResult:
    backup_id: str
    type: str
    chain: list[str]
    data_dir: Path
    port: int
    target: Target
    timeline: int | None
    started: bool = False
    dsn: str | None = None
    database: str = "postgres"
    coverage: dict[str, Any] = field(default_factory=dict)
    recovered: dict[str, Any] = field(default_factory=dict)
    verified_backup: bool | None = None
    log: Path | None = None
    previous_data_dir: Path | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "component": COMPONENT,
            "backup_id": self.backup_id,
            "type": self.type,
            "chain": self.chain,
            "data_dir": str(self.data_dir),
            "target": self.target.to_json(),
            "timeline": self.timeline,
            "port": self.port,
            "started": self.started,
            "dsn": self.dsn,
            "database": self.database,
            "coverage": self.coverage,
            "recovered": self.recovered,
            "pg_verifybackup": self.verified_backup,
            "log": str(self.log) if self.log else None,
            "previous_data_dir": str(self.previous_data_dir) if self.previous_data_dir else None,
        }


def _step(req: RestoreRequest, message: str) -> None:
    if req.step is not None:
        req.step(message)


def _reachable_source(dsn: str | None, backups: Sequence[BackupInfo]) -> ServerInfo | None:
    """The source server, if it answers and is the server the backups are of."""
    if not dsn:
        return None
    try:
        info = server_info(dsn)
    except PgBackupError:
        return None
    ids = {str(b.meta.get("system_identifier")) for b in backups if b.type in PHYSICAL}
    if ids and info.system_identifier not in ids:
        return None
    if info.in_recovery:
        return None  # a standby cannot switch WAL; treat the archive as the truth
    return info


def _history(repo: Repository, timeline: int) -> list[tuple[int, int]]:
    if timeline <= 1:
        return []
    with tempfile.TemporaryDirectory(prefix="payapi-history-") as tmp:
        dest = Path(tmp) / history_name(timeline)
        try:
            repo.get_wal(history_name(timeline), dest)
        except PgBackupError:
            return []
        return parse_history(dest.read_text(errors="replace"))


def pinned_lineage(
    repo: Repository,
    *,
    override: int | None,
    source: ServerInfo | None,
    backups: Sequence[BackupInfo],
) -> Lineage:
    """The timeline recovery follows, pinned to a number (never ``latest``): the one
    asked for, else the source server's current one, else the newest in the archive
    (restored copies never archive, so every archived timeline is production's)."""
    if override is not None:
        tli = override
    elif source is not None:
        tli = source.timeline
    else:
        tlis = [int(n[:8], 16) for n in repo.list_wal() if n.endswith(".history")]
        tlis += [t for b in backups if (t := _meta_int(b, "timeline")) is not None]
        tli = max(tlis, default=1)
    return Lineage(tli, tuple(_history(repo, tli)))


def ensure_covered(
    repo: Repository,
    target: Target,
    *,
    base: BackupInfo,
    lineage: Lineage,
    source: ServerInfo | None,
    source_dsn: str | None,
    timeout: float,
) -> dict[str, Any]:
    """Make sure the archive reaches past ``target``; RestoreError naming the last
    archived commit when it does not. Returns what was checked (for the report).

    ``latest`` (no target) with the source reachable also switches and waits, so that
    "latest" includes what was committed until now; ``immediate`` needs no archive.
    """
    seg_size = int(base.meta.get("wal_segment_size") or 16 << 20)
    major = int(base.meta.get("pg_major") or 0)
    if target.kind == "immediate":
        return {"checked": "not needed", "target": target.kind}

    def last_commit() -> datetime | None:
        try:
            bindir = server_bindir(major) if major else client_bindir()
            return last_archived_commit(repo, lineage, seg_size, bindir)
        except PgBackupError:
            return None

    def ends_at() -> str:
        lc = last_commit()
        return (
            f"the last archived commit is at {lc.astimezone(UTC).isoformat()}"
            if lc
            else "no commit found in the last archived segments"
        )

    if source is not None and not source.archiving:
        if target.is_point:
            raise RestoreError(
                f"the source server does not archive WAL (archive_mode = "
                f"{source.archive_mode}): recovery to the target {target.describe()} needs "
                f"the archive; {ends_at()}"
            )
        return {"checked": "source does not archive", "target": target.kind}
    if source is not None and source_dsn:
        now = datetime.fromisoformat(psql(source_dsn, "SELECT now()")[0][0].replace(" ", "T"))
        now = now if now.tzinfo else now.replace(tzinfo=UTC)
        if target.kind == "time" and target.time is not None and target.time >= now:
            raise RestoreError(
                f"target time {target.time.astimezone(UTC).isoformat()} is not in the past "
                f"(the server's clock says {now.astimezone(UTC).isoformat()})"
            )
        if target.kind == "lsn" and target.lsn is not None:
            current = parse_lsn(psql(source_dsn, "SELECT pg_current_wal_insert_lsn()")[0][0])
            if target.lsn > current:
                raise RestoreError(
                    f"target LSN {format_lsn(target.lsn)} is beyond the server's "
                    f"current WAL position {format_lsn(current)}"
                )
        if target.kind == "xid" and target.xid is not None:
            status = psql(source_dsn, f"SELECT pg_xact_status('{int(target.xid)}'::xid8)")
            state = status[0][0] if status and status[0] else ""
            if state != "committed":
                raise RestoreError(
                    f"transaction {target.xid} is {state or 'unknown to the server'}, "
                    "not committed: recovery could not stop at it"
                )
        # A commit record after the target (recovery to a time stops at the first commit
        # after it), then a switch, so that the segment holding both gets archived.
        psql(source_dsn, "SELECT pg_current_xact_id()")
        segment = psql(source_dsn, "SELECT pg_walfile_name(pg_switch_wal())")[0][0]
        if not wait_for_wal(repo, segment, timeout):
            st = {}
            with contextlib.suppress(PgBackupError):
                st = archiver_status(source_dsn)
            failing = (
                f"; archiving fails (last failed {st['last_failed_wal']} at "
                f"{st['last_failed_time']})"
                if st.get("last_failed_wal")
                else ""
            )
            raise RestoreError(
                f"the archive does not reach the target {target.describe()}: WAL segment "
                f"{segment} was not archived within {timeout:.0f}s{failing}; {ends_at()}"
            )
        covered: dict[str, Any] = {"checked": "wal switch", "segment": segment}
    else:
        covered = {"checked": "archive"}
        if target.kind == "time" and target.time is not None:
            lc = last_commit()
            if lc is None or lc <= target.time:
                raise RestoreError(
                    f"the archive ends before the target {target.describe()}: "
                    + (
                        f"the last archived commit is at {lc.astimezone(UTC).isoformat()}"
                        if lc
                        else "no commit found in the last archived segments"
                    )
                    + " (the source server is not reachable to archive more)"
                )
            covered["last_commit"] = lc.astimezone(UTC).isoformat()
        elif target.kind == "lsn" and target.lsn is not None:
            segs = [
                p
                for n in repo.list_wal()
                if (p := parse_segment(n, seg_size)) and p[0] in lineage.timelines
            ]
            last_end = (max(s for _t, s in segs) + 1) * seg_size if segs else 0
            if last_end <= target.lsn:
                raise RestoreError(
                    f"the archive ends before the target {target.describe()}: it reaches "
                    f"LSN {format_lsn(last_end)}; {ends_at()}"
                )
    # No holes between the backup's first segment and the end of the archive (on the
    # backup's own timeline; across a timeline switch PostgreSQL checks for itself).
    if base.wal_start:
        start = parse_segment(base.wal_start, seg_size)
        if start is not None and start[0] == lineage.timeline:
            on_tli = sorted(
                n
                for n in repo.list_wal()
                if (p := parse_segment(n, seg_size)) and p[0] == lineage.timeline
            )
            if on_tli and on_tli[-1] >= base.wal_start:
                holes = missing_segments(on_tli, base.wal_start, on_tli[-1], seg_size)
                if holes:
                    raise RestoreError(
                        f"the WAL archive has a gap: segment {holes[0]} is missing "
                        f"({len(holes)} missing between {base.wal_start} and {on_tli[-1]})"
                    )
    return covered


# --------------------------------------------------------------------------- files


def _check_empty(path: Path) -> None:
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


def check_restorable(chain: Sequence[BackupInfo]) -> None:
    for b in chain:
        if b.meta.get("tablespaces"):
            raise RestoreError(
                f"backup {b.backup_id} has tablespaces; restoring them is not supported yet"
            )


def materialize(
    repo: Repository, chain: Sequence[BackupInfo], dest: Path, *, bindir: Path, step: Step
) -> None:
    """Write the data directory of ``chain``'s last backup into ``dest``."""
    check_restorable(chain)
    if len(chain) == 1:
        step(f"extracting {chain[0].backup_id}")
        extract_object(repo, chain[0].backup_id, BASE_TAR, dest)
        return
    stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.combine-", dir=dest.parent))
    try:
        parts = []
        for i, b in enumerate(chain):
            step(f"extracting {b.backup_id} ({b.type})")
            part = stage / f"{i:03d}"
            extract_object(repo, b.backup_id, BASE_TAR, part, sync=False)  # staged
            parts.append(str(part))
        step(f"combining {len(chain)} backups with pg_combinebackup")
        if dest.exists():
            dest.rmdir()  # pg_combinebackup wants to create it
        run_tool(
            [str(bindir / "pg_combinebackup"), *parts, "-o", str(dest)],  # it fsyncs
            what="pg_combinebackup",
            timeout=3600,
        )
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _own(dest: Path) -> None:
    from payapi.lab.procs import chown_to_lab_user, make_reachable

    dest.chmod(0o700)
    chown_to_lab_user(dest)
    make_reachable(dest)


def write_recovery(dest: Path, settings: dict[str, str]) -> None:
    """``postgresql.auto.conf`` (whole) and ``recovery.signal``."""
    from payapi.lab.postgres import PgCluster

    (dest / "standby.signal").unlink(missing_ok=True)
    (dest / "postmaster.pid").unlink(missing_ok=True)
    (dest / "recovery.signal").write_text("")
    cluster = PgCluster(datadir=dest, port=int(settings["port"]), logfile=log_path(dest))
    cluster.settings = {k: v for k, v in settings.items() if k != "port"}
    cluster.write_settings()


def log_path(dest: Path) -> Path:
    return dest / "log" / "payapi-restore.log"


# --------------------------------------------------------------------------- the server


def _postmaster_pid(dest: Path) -> int | None:
    try:
        return int((dest / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    from payapi.lab.procs import pid_alive

    return pid_alive(pid)


def _log_problem(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    bad = [ln for ln in lines if re.search(r"\b(FATAL|PANIC)\b", ln)]
    pick = bad[-2:] if bad else lines[-2:]
    return " / ".join(re.sub(r"^.*?(FATAL|PANIC|LOG|ERROR):\s+", r"\1: ", ln) for ln in pick)


def start_server(dest: Path, bindir: Path) -> None:
    """``pg_ctl start`` without waiting (recovery may take long), as the lab user."""
    from payapi.lab.procs import as_lab_user, chown_to_lab_user

    log = log_path(dest)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.touch(exist_ok=True)
    chown_to_lab_user(log.parent)
    run_tool(
        as_lab_user([str(bindir / "pg_ctl"), "-D", str(dest), "-l", str(log), "-W", "start"]),
        what="pg_ctl start",
        timeout=120,
    )


def wait_promoted(dest: Path, port: int, timeout: float, *, database: str = "postgres") -> None:
    """Wait until the server at ``dest`` accepts connections and is out of recovery."""
    dsn = f"postgresql://postgres@127.0.0.1:{port}/{database}"
    deadline = time.monotonic() + timeout
    seen_pid = False
    while True:
        pid = _postmaster_pid(dest)
        if pid is not None and _alive(pid):
            seen_pid = True
            try:
                rows = psql(dsn, "SELECT pg_is_in_recovery()", timeout=10)
                if rows and rows[0][0] == "f":
                    return
            except PgBackupError:
                pass
        elif seen_pid or time.monotonic() > deadline - timeout + 15:
            problem = _log_problem(log_path(dest))
            if RECOVERY_FAILED in problem:
                raise RestoreError(f"recovery ended before reaching the target: {problem}")
            raise RestoreError(f"the restored server stopped: {problem or 'see its log'}")
        if time.monotonic() >= deadline:
            raise RestoreError(
                f"the restored server is still recovering after {timeout:.0f}s; "
                f"see {log_path(dest)}"
            )
        time.sleep(0.25)


def stop_server(dest: Path, *, mode: str = "fast") -> bool:
    """Stop a server started from ``dest``; False if none was running."""
    from payapi.lab.procs import as_lab_user

    pid = _postmaster_pid(dest)
    if pid is None or not _alive(pid):
        return False
    bindir = client_bindir()
    with contextlib.suppress(ValueError, OSError):
        bindir = server_bindir(int((dest / "PG_VERSION").read_text().strip()))
    run_tool(
        as_lab_user(
            [str(bindir / "pg_ctl"), "-D", str(dest), "-m", mode, "-w", "-t", "120", "stop"]
        ),
        what="pg_ctl stop",
        timeout=180,
    )
    return True


_STOPPED = re.compile(
    r"recovery stopping (before|after) (commit|abort) of transaction (\d+), time (.+)$"
)
_LAST_TX = re.compile(r"last completed transaction was at log time (.+)$")


def _pg_time(text: str) -> str | None:
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(text.strip().replace(" ", "T", 1)).astimezone(UTC).isoformat()
    return None


def parse_recovery_log(text: str) -> dict[str, Any]:
    """Where recovery stopped, in the server's own words (its log)."""
    out: dict[str, Any] = {}
    for line in text.splitlines():
        if m := _STOPPED.search(line):
            out["stopped"] = f"{m.group(1)} {m.group(2)} of transaction {m.group(3)}"
            out["stopped_at_commit_time"] = _pg_time(m.group(4))
        elif m := _LAST_TX.search(line):
            out["last_transaction_at"] = _pg_time(m.group(1))
    return out


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


# --------------------------------------------------------------------------- restore


def restore(repo: Repository, req: RestoreRequest) -> RestoreResult:
    """Restore into ``req.to`` (a new directory); see the module docstring."""
    from payapi.lab.procs import free_port

    to = req.to.expanduser().absolute()
    _check_empty(to)
    backups = repo.list_backups(COMPONENT)
    source = _reachable_source(req.source_dsn, backups)
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
    database = str(base.meta.get("database") or "postgres")
    if base.type == LOGICAL:
        return _restore_logical(repo, base, req, to, port, database)
    chain = backup_chain(backups, base)
    check_restorable(chain)
    end = _end(base)
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
    major = int(base.meta.get("pg_major") or 0)
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
        step = req.step or (lambda _m: None)
        materialize(repo, chain, to, bindir=bindir, step=step)
        if req.verify_backup:
            step("pg_verifybackup")
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
        _own(to)
        if req.start:
            step(f"starting PostgreSQL on port {port} and recovering")
            start_server(to, bindir)
            wait_promoted(to, port, req.recovery_timeout)
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


def _restore_logical(
    repo: Repository, base: BackupInfo, req: RestoreRequest, to: Path, port: int, database: str
) -> RestoreResult:
    """A logical dump goes into a new cluster (initdb), then ``pg_restore``."""
    from payapi.lab.postgres import PgCluster

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
    step = req.step or (lambda _m: None)
    try:
        step("initdb")
        cluster.init()
        cluster.logfile.unlink(missing_ok=True)
        cluster.logfile = log
        log.parent.mkdir(parents=True, exist_ok=True)
        log.touch()
        _own(to)
        cluster.settings = {"archive_mode": "off"}
        cluster.start()
        dsn = cluster.dsn(database)
        step("restoring globals and the dump")
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
    database = str(base.meta.get("database") or "postgres")
    dump_object = str(base.meta.get("dump_object") or f"{database}.dump")
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


# --------------------------------------------------------------------------- in place


def restore_in_place(
    repo: Repository,
    req: RestoreRequest,
    *,
    datadir: Path,
    stop_current: Callable[[], None],
    start_current: Callable[[], None],
) -> RestoreResult:
    """Replace the data directory ``datadir`` of a running server with a restore.

    The restore is prepared next to it while the server still runs (the coverage check
    needs it), then the server is stopped, the directories are swapped (the old one is
    kept as ``<datadir>.before-restore-<time>``), the restored server recovers with
    ``req.archive`` (production archiving) and is restarted normally. On failure the old
    directory is put back and started.
    """
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    staging = datadir.with_name(f"{datadir.name}.restoring-{stamp}")
    kept = datadir.with_name(f"{datadir.name}.before-restore-{stamp}")
    prepared = restore(repo, replace(req, to=staging, start=False))
    if prepared.type == LOGICAL:
        raise RestoreError("internal: logical restores in place go through load_logical")
    swapped = False
    try:
        _step(req, "stopping the current server")
        stop_current()
        datadir.rename(kept)
        swapped = True
        staging.rename(datadir)
        major = int((datadir / "PG_VERSION").read_text().strip())
        bindir = server_bindir(major)
        _step(req, "recovering in place")
        start_server(datadir, bindir)
        wait_promoted(datadir, prepared.port, req.recovery_timeout, database=prepared.database)
        dsn = f"postgresql://postgres@127.0.0.1:{prepared.port}/{prepared.database}"
        recovered = _recovered(dsn, log_path(datadir))
        stop_server(datadir)
        log_path(datadir).unlink(missing_ok=True)
        start_current()
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
                start_current()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    prepared.data_dir = datadir
    prepared.started = True
    prepared.recovered = recovered
    prepared.previous_data_dir = kept
    prepared.log = None
    return prepared
