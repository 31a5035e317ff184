"""Before recovering to a target, make sure the WAL archive reaches past it.

With the source server reachable, commit a transaction (so there is a commit record
after the target), force a WAL switch and wait until that segment is in the repository.
Without it, read the archive's last segments with ``pg_waldump`` and refuse a target
after the last archived commit, naming that commit's time. PostgreSQL itself also stops
with "recovery ended before configured recovery target was reached": a restore never
silently recovers to less. Also here: which timeline recovery follows (pinned to a
number, never ``latest``).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from payapi.backup.pg_format import format_lsn, history_name, parse_lsn, parse_segment
from payapi.backup.postgres import (
    PHYSICAL,
    PgFailure,
    PgMeta,
    ServerInfo,
    archiver_status,
    server_info,
    wait_for_wal,
)
from payapi.backup.restore_plan import (
    Lineage,
    RestoreError,
    Target,
    missing_segments,
    parse_history,
    parse_waldump_commits,
)
from payapi.core.errors import PayapiError
from payapi.servers.postgres import client_bindir, psql, server_bindir

if TYPE_CHECKING:
    from payapi.backup.manifest import BackupInfo
    from payapi.backup.repository import Repository


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
            except PayapiError:  # unreadable: look at the one before
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


def reachable_source(dsn: str | None, backups: Sequence[BackupInfo]) -> ServerInfo | None:
    """The source server, if it answers and is the server the backups are of."""
    if not dsn:
        return None
    try:
        info = server_info(dsn)
    except PgFailure:
        return None
    ids = {PgMeta.of(b).system_identifier for b in backups if b.type in PHYSICAL}
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
        except PayapiError:  # no history file: no ancestors known
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
        tlis += [t for b in backups if (t := PgMeta.of(b).timeline) is not None]
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
    meta = PgMeta.of(base)
    seg_size = meta.segment_size
    major = meta.pg_major or 0
    if target.kind == "immediate":
        return {"checked": "not needed", "target": target.kind}

    def last_commit() -> datetime | None:
        try:
            bindir = server_bindir(major) if major else client_bindir()
            return last_archived_commit(repo, lineage, seg_size, bindir)
        except PayapiError:
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
            with contextlib.suppress(*PgFailure):
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
