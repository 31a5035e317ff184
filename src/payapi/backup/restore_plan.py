"""Deciding a PostgreSQL restore: pure functions, no I/O (unit tested).

Which target (:class:`Target`), which timeline (:class:`Lineage`), which base backup
(:func:`choose_base` — for a time target, the newest backup that finished before it),
which chain (:func:`backup_chain`: full → incrementals), which recovery settings
(:func:`recovery_settings`), and reading what the tools said (``pg_waldump``'s commits,
the recovered server's log). :mod:`payapi.backup.restore` acts on these decisions.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from payapi.backup.pg_format import (
    PgBackupError,
    format_lsn,
    parse_lsn,
    parse_segment,
    segment_name,
)
from payapi.backup.postgres import COMPONENT, LOGICAL, PHYSICAL, PgMeta
from payapi.backup.wal import guc_string
from payapi.core.journal import Journal

if TYPE_CHECKING:
    from payapi.backup.manifest import BackupInfo


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


def backup_end(b: BackupInfo) -> tuple[int, int] | None:
    """(timeline, end LSN) of a physical backup, from its metadata."""
    return PgMeta.of(b).end()


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
        if system_identifier and PgMeta.of(b).system_identifier != system_identifier:
            continue
        end = backup_end(b)
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
        known = [(b, e) for b, e in candidates if PgMeta.of(b).next_xid is not None]
        before = [(b, e) for b, e in known if (PgMeta.of(b).next_xid or 0) <= xid]
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
    return [
        name
        for segno in range(a[1], b[1] + 1)
        if (name := segment_name(a[0], segno, seg_size)) not in have
    ]


def check_restorable(chain: Sequence[BackupInfo]) -> None:
    for b in chain:
        if PgMeta.of(b).tablespaces:
            raise RestoreError(
                f"backup {b.backup_id} has tablespaces; restoring them is not supported yet"
            )


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
    archive: dict[str, str] | None = None  # in place: the server's archive settings
    journal: Journal = field(default_factory=Journal)


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


# --------------------------------------------------------------------------- reading the tools


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
