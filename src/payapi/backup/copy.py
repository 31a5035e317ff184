"""Copies of backups and WAL in other repositories: "stored in multiple locations".

A copy is re-encrypted, never a byte copy. Every stored object's key is bound to the
repository key and to the object's place (``docs/repository-format.md``), and a secondary
repository may have its own key. So the source's plaintext is read through the public
API (authenticated chunk by chunk; size and SHA-256 checked against the source's manifest
at the end) and written through the destination's :class:`BackupWriter`, which keeps the
original's id, type, parent, start and finish times, WAL range and metadata. The
destination's own rules hold: data first, manifest last with an exclusive create, so an
interrupted copy is invisible there and the next run simply copies the backup again.

Invariants:

- Idempotent. A backup whose manifest the destination already has (the same backup:
  component, type, parent, times, sizes) is skipped; if it was never verified there, it
  is verified first. A *different* backup under the same id is a problem, never
  overwritten. A WAL segment already indexed in the destination is skipped.
- Order. WAL before backups (a backup's WAL range must be there before the backup is),
  parents before children; the backups to copy are listed *before* the WAL, so every WAL
  range they need has been archived by the time the WAL is listed.
- Verified there. Each copied backup is read back end to end in the destination
  (:meth:`Repository.verify`), and its manifest must record the same plaintext sizes and
  SHA-256 as the source's; only then is it marked verified there. Copied WAL segments are
  read back too, and their index entries compared with the source's. A copy that fails
  this is deleted from the destination, so the next run copies it again.
- Locks. In the destination, the lock of each component while its backups are copied
  (``component-<name>``, the lock a purge of that repository takes; WAL: ``database``).
  The source is not locked: a backup purged there during the copy is skipped, with a note.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from payapi.backup.errors import (
    AlreadyExists,
    CorruptObject,
    NotFound,
    RepositoryError,
    WalConflict,
)
from payapi.backup.lock import (
    DEFAULT_LEASE,
    Held,
    Lock,
    lock_name,
)
from payapi.backup.manifest import BackupInfo, Manifest
from payapi.backup.repository import Repository
from payapi.core.journal import Journal

__all__ = [
    "WAL_COMPONENT",
    "CopyReport",
    "copy_backups",
    "copy_repository",
    "copy_wal",
    "wal_for_backups",
]

WAL_COMPONENT = "database"  # the repository's WAL archive is the PostgreSQL cluster's


# What must agree between a backup and its copy (the copy's own verification is not).
_SAME = (
    "component",
    "type",
    "parent",
    "started_at",
    "finished_at",
    "wal_start",
    "wal_end",
    "bytes",
    "objects",
    "meta",
)


@dataclass
class CopyReport:
    """What one copy did. ``ok`` when nothing failed (notes are not failures)."""

    source: str
    destination: str
    copied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    verified: list[str] = field(default_factory=list)
    wal_copied: list[str] = field(default_factory=list)
    wal_skipped: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "source": self.source,
            "destination": self.destination,
            "copied": self.copied,
            "skipped": self.skipped,
            "verified": self.verified,
            "wal_copied": len(self.wal_copied),
            "wal_skipped": self.wal_skipped,
            "bytes": self.bytes,
            "problems": self.problems,
            "notes": self.notes,
        }


def _renewing(chunks: Iterable[bytes], held: Held | None) -> Iterator[bytes]:
    for chunk in chunks:
        if held is not None:
            held.renew()
        yield chunk


@contextlib.contextmanager
def _holding(dst: Repository, component: str, lock: bool, wait: timedelta) -> Iterator[Held | None]:
    if not lock:
        yield None
        return
    with Lock(dst.lock_store()).hold(
        lock_name(component), f"copy from another repository into {dst.url}", DEFAULT_LEASE,
        wait=wait,
    ) as held:  # fmt: skip
        yield held


def _same(a: BackupInfo, b: BackupInfo) -> bool:
    return all(getattr(a, f) == getattr(b, f) for f in _SAME)


def _signature(m: Manifest) -> list[tuple[str, int, str]]:
    return [(o.name, o.size, o.sha256) for o in m.objects]


def _with_ancestors(wanted: Sequence[str], by_id: dict[str, BackupInfo]) -> list[str]:
    """``wanted`` and every backup they build on, parents first (then by finish time)."""
    depth: dict[str, int] = {}

    def level(bid: str, seen: frozenset[str]) -> int:
        if bid in depth:
            return depth[bid]
        info = by_id.get(bid)
        parent = info.parent if info is not None else None
        d = 0
        if parent is not None and parent in by_id and parent not in seen:
            d = level(parent, seen | {bid}) + 1
        depth[bid] = d
        return d

    todo: set[str] = set()
    for bid in wanted:
        cur: str | None = bid
        while cur is not None and cur in by_id and cur not in todo:
            todo.add(cur)
            cur = by_id[cur].parent
    for bid in todo:
        level(bid, frozenset())
    return sorted(todo, key=lambda b: (depth[b], by_id[b].finished_at, b))


def _still_in_source(src: Repository, backup_id: str) -> bool:
    try:
        src.read_manifest(backup_id)
    except NotFound:
        return False
    except RepositoryError:
        return True
    return True


def _check_copy(src_manifest: Manifest, dst: Repository) -> str | None:
    """Read the copy back in ``dst`` end to end and compare its manifest with the
    source's; what is wrong with it, or None."""
    bid = src_manifest.backup_id
    try:
        checked = dst.verify(bid)
        if not checked.ok:
            return f"copy of backup {bid} fails verification: {checked.problems[0]}"
        if _signature(dst.read_manifest(bid)) != _signature(src_manifest):
            return f"copy of backup {bid} records other checksums than the source"
    except RepositoryError as exc:
        return f"copy of backup {bid} cannot be verified: {exc}"
    return None


def _mark_verified(dst: Repository, bid: str, report: CopyReport, source_id: str) -> None:
    dst.mark_verified(bid, dst.now(), details={"kind": "checksum", "copied_from": source_id})
    report.verified.append(bid)


def _copy_one(src: Repository, dst: Repository, manifest: Manifest, held: Held | None) -> int:
    """Write one backup into ``dst`` under its own id; returns the plaintext bytes."""
    copied = 0
    with dst.begin_backup(
        manifest.component,
        manifest.type,
        manifest.parent,
        backup_id=manifest.backup_id,
        started_at=manifest.started_at,
    ) as writer:
        for entry in manifest.objects:
            chunks = src.iter_object(manifest.backup_id, entry.name)
            written = writer.add_object(entry.name, _renewing(chunks, held))
            if (written.size, written.sha256) != (entry.size, entry.sha256):  # pragma: no cover
                raise CorruptObject(manifest.backup_id, entry.name, "changed while copied")
            copied += written.size
        if manifest.wal_start is not None and manifest.wal_end is not None:
            writer.set_wal_range(manifest.wal_start, manifest.wal_end)
        writer.set_meta(**manifest.meta)
        writer.commit(finished_at=manifest.finished_at)
    return copied


def copy_backups(
    src: Repository,
    dst: Repository,
    *,
    backup_ids: Sequence[str] | None = None,
    journal: Journal | None = None,
    verify: bool = True,
    lock: bool = True,
    lock_wait: timedelta = timedelta(0),
    recheck: bool = False,
    report: CopyReport | None = None,
) -> CopyReport:
    """Copy backups from ``src`` into ``dst`` (default: every backup ``src`` lists; with
    ``backup_ids``, those and the backups they build on), parents first, skipping what
    ``dst`` already has. With ``recheck``, the backups ``dst`` already has are read back
    too, and those that fail are copied again. See the module docstring."""
    return _copy_backups(
        src, dst, src.list_backups(), backup_ids, journal=journal, verify=verify,
        lock=lock, lock_wait=lock_wait, recheck=recheck, report=report,
    )  # fmt: skip


def _copy_backups(
    src: Repository,
    dst: Repository,
    listing: Sequence[BackupInfo],
    backup_ids: Sequence[str] | None,
    *,
    journal: Journal | None,
    verify: bool,
    lock: bool,
    lock_wait: timedelta,
    recheck: bool,
    report: CopyReport | None,
) -> CopyReport:
    say = (journal or Journal()).note
    report = report or CopyReport(src.url, dst.url)
    source_id = src.require_config().repository_id
    dst.require_config()
    listed = {b.backup_id: b for b in listing}
    if backup_ids is None:
        wanted: Sequence[str] = list(listed)
    else:
        wanted = list(backup_ids)
        for bid in wanted:
            if bid not in listed:
                raise NotFound(f"backup {bid} not found in {src.url}")
    order = _with_ancestors(wanted, listed)
    there = {b.backup_id: b for b in dst.list_backups()}
    for component in sorted({listed[b].component for b in order}):
        mine = [b for b in order if listed[b].component == component]
        with _holding(dst, component, lock, lock_wait) as held:
            for bid in mine:
                _copy_backup(
                    src, dst, listed[bid], there, held, verify, recheck, say, report, source_id
                )
    return report


def _copy_backup(
    src: Repository,
    dst: Repository,
    info: BackupInfo,
    there: dict[str, BackupInfo],
    held: Held | None,
    verify: bool,
    recheck: bool,
    say: Callable[[str], None],
    report: CopyReport,
    source_id: str,
) -> None:
    bid = info.backup_id
    existing = there.get(bid)
    if existing is not None:
        if not _same(info, existing):
            report.problems.append(
                f"backup {bid}: the destination holds a different backup under this id"
            )
            return
        # Never verified there (a copy killed after its commit), or asked to: read it back.
        if not verify or (existing.verified_at is not None and not recheck):
            report.skipped.append(bid)
            return
        try:
            problem = _check_copy(src.read_manifest(bid), dst)
        except NotFound:
            report.skipped.append(bid)
            report.notes.append(f"backup {bid} was removed from the source meanwhile")
            return
        if problem is None:
            report.skipped.append(bid)
            _mark_verified(dst, bid, report, source_id)
            return
        try:
            dst.delete_backup(bid)
        except RepositoryError as exc:
            report.problems.append(f"{problem}; it could not be removed to copy it again: {exc}")
            return
        report.notes.append(f"{problem}: copied again")
        del there[bid]
    if info.parent is not None and info.parent not in there:
        report.problems.append(f"backup {bid}: its parent {info.parent} is not in the copy")
        return
    say(f"copy: backup {bid} ({info.component} {info.type}, {info.objects} objects)")
    try:
        manifest = src.read_manifest(bid)
        report.bytes += _copy_one(src, dst, manifest, held)
    except AlreadyExists:
        report.problems.append(
            f"backup {bid}: the destination has a manifest for it that does not read "
            "(run backup verify on the destination)"
        )
        return
    except RepositoryError as exc:
        if not _still_in_source(src, bid):
            report.notes.append(f"backup {bid} was removed from the source meanwhile")
        else:
            report.problems.append(f"backup {bid}: {exc}")
        return
    if verify:
        problem = _check_copy(manifest, dst)
        if problem is not None:
            report.problems.append(problem)
            with contextlib.suppress(RepositoryError):
                dst.delete_backup(bid)  # so that the next copy redoes it
            return
        _mark_verified(dst, bid, report, source_id)
    report.copied.append(bid)
    there[bid] = info


def wal_for_backups(src: Repository, backups: Iterable[str | BackupInfo]) -> list[str]:
    """The archived WAL that the backups' own WAL ranges need (and every timeline
    history file): what ``--backup ID`` copies besides the backups."""
    ranges: list[tuple[str, str]] = []
    for b in backups:
        info = b if isinstance(b, BackupInfo) else src.get_backup(b)
        if info.wal_start and info.wal_end:
            ranges.append((info.wal_start[8:24], info.wal_end[8:24]))
    out: list[str] = []
    for name in src.list_wal():
        if name.endswith(".history"):
            out.append(name)
            continue
        pos = name[8:24]
        if len(name) >= 24 and any(lo <= pos <= hi for lo, hi in ranges):
            out.append(name)
    return out


def copy_wal(
    src: Repository,
    dst: Repository,
    names: Sequence[str] | None = None,
    *,
    journal: Journal | None = None,
    verify: bool = True,
    lock: bool = True,
    lock_wait: timedelta = timedelta(0),
    work_dir: Path | None = None,
    recheck: bool = False,
    report: CopyReport | None = None,
) -> CopyReport:
    """Copy archived WAL (default: all of it) that ``dst`` does not have yet: fetched from
    ``src`` (checked), pushed into ``dst``, read back there and compared. With
    ``recheck``, the segments ``dst`` already has are read back too, and those that fail
    are copied again."""
    say = (journal or Journal()).note
    report = report or CopyReport(src.url, dst.url)
    dst.require_config()
    wanted = src.list_wal() if names is None else list(names)
    have = set(dst.list_wal())
    todo = [n for n in wanted if n not in have]
    if not todo and not recheck:
        report.wal_skipped += len(wanted)
        return report
    copied: list[str] = []
    with (
        _holding(dst, WAL_COMPONENT, lock, lock_wait) as held,
        tempfile.TemporaryDirectory(prefix="payapi-copy-", dir=work_dir) as tmp,
    ):
        if recheck:
            present = [n for n in wanted if n in have]
            say(f"copy: reading back {len(present)} WAL files")
            damaged = _damaged_wal(dst, present)
            for name, problem in sorted(damaged.items()):
                try:
                    dst.delete_wal([name])
                except RepositoryError as exc:
                    report.problems.append(f"{problem}; it could not be removed: {exc}")
                    continue
                report.notes.append(f"{problem}: copied again")
                todo.append(name)
        report.wal_skipped += len(wanted) - len(todo)
        if todo:
            say(f"copy: {len(todo)} WAL files")
        for name in todo:
            if held is not None:
                held.renew()
            path = Path(tmp) / name
            try:
                src.get_wal(name, path)
                dst.put_wal(name, path)
            except NotFound:
                report.notes.append(f"WAL {name} was removed from the source meanwhile")
                continue
            except (CorruptObject, WalConflict) as exc:
                report.problems.append(f"WAL {name}: {exc}")
                continue
            finally:
                path.unlink(missing_ok=True)
            copied.append(name)
        if verify and copied:
            copied = _verify_wal_copies(src, dst, copied, report)
    report.wal_copied.extend(copied)
    return report


def _damaged_wal(dst: Repository, names: list[str]) -> dict[str, str]:
    """The named segments that fail verification in ``dst``, with the first problem."""
    if not names:
        return {}
    bad: dict[str, str] = {}
    for p in dst.verify_wal(names).problems:
        bad.setdefault(p.object.split("/", 1)[-1], str(p))
    return bad


def _verify_wal_copies(
    src: Repository, dst: Repository, names: list[str], report: CopyReport
) -> list[str]:
    bad = _damaged_wal(dst, names)
    for name in names:
        if name in bad:
            continue
        try:
            if dst.wal_entry(name).sha256 != src.wal_entry(name).sha256:
                bad[name] = f"WAL {name}: the copy records another checksum than the source"
        except NotFound:
            continue  # removed from the source meanwhile: the copy stands on its own check
    for name, problem in sorted(bad.items()):
        report.problems.append(problem)
        with contextlib.suppress(RepositoryError):
            dst.delete_wal([name])
    return [n for n in names if n not in bad]


def copy_repository(
    src: Repository,
    dst: Repository,
    *,
    backup_ids: Sequence[str] | None = None,
    journal: Journal | None = None,
    verify: bool = True,
    lock_wait: timedelta = timedelta(0),
    work_dir: Path | None = None,
    recheck: bool = False,
) -> CopyReport:
    """Everything ``dst`` lacks (or, with ``backup_ids``, those backups, their parents
    and the WAL their ranges need): the backups are listed first, then the WAL is copied,
    then the backups (see the module docstring). ``recheck`` also reads back what
    ``dst`` already has, and copies again what fails (a repair)."""
    report = CopyReport(src.url, dst.url)
    listing = src.list_backups()
    by_id = {b.backup_id: b for b in listing}
    names: list[str] | None = None
    if backup_ids is not None:
        for bid in backup_ids:
            if bid not in by_id:
                raise NotFound(f"backup {bid} not found in {src.url}")
        chain = _with_ancestors(list(backup_ids), by_id)
        names = wal_for_backups(src, [by_id[b] for b in chain])
    copy_wal(
        src, dst, names, journal=journal, verify=verify, lock_wait=lock_wait,
        work_dir=work_dir, recheck=recheck, report=report,
    )  # fmt: skip
    return _copy_backups(
        src, dst, listing, list(backup_ids) if backup_ids is not None else None,
        journal=journal, verify=verify, lock=True, lock_wait=lock_wait, recheck=recheck,
        report=report,
    )  # fmt: skip
