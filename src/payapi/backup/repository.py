"""The backup repository: encrypted, checksummed backups and WAL over any :class:`Store`.

One job: the repository format — writing, reading, listing, deleting and verifying
backups and WAL objects in it (docs/repository-format.md). Engines, copies and retention
build on it; it knows nothing about what a backup contains.

Layout (the full format is ``docs/repository-format.md``)::

    config                       plaintext JSON: id, format, chunk size, key check value
    data/<backup id>/<name>      a backup's objects (written first)
    manifests/<backup id>        its manifest (written last: the backup exists from then on)
    verified/<backup id>         the last successful verification (manifests are immutable)
    wal/<segment>                an archived WAL segment
    wal-index/<segment>          its index entry (written after the segment)
    locks/                       reserved for locks and leases; never verified or pruned

Invariants:
- A backup is listed if and only if its manifest exists; the manifest is written last, with
  an exclusive create, after checking that every object it lists is in the store. A backup
  killed at any point leaves only unlisted ``data/<id>/`` objects; a rerun gets a new id,
  and :meth:`Repository.prune_orphans` removes the leftovers.
- Deleting removes the manifest first, so a half-deleted backup is never listed.
- Every stored object (manifest, data, WAL, index, verification record) is compressed and
  encrypted with AES-256-GCM under a data key wrapped by the repository key; its key is
  bound to its place in the layout, so objects cannot be swapped. The repository key itself
  is never written anywhere.
- Memory is bounded by the chunk size (and the S3 part size), never the object size.
"""

from __future__ import annotations

import io
import json
import logging
import re
import secrets
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Self, TypeVar

from pydantic import BaseModel, ValidationError

from payapi import __version__
from payapi.backup.crypto import (
    DataKey,
    DecryptError,
    DecryptingReader,
    ObjectEncryptor,
)
from payapi.backup.errors import (
    AlreadyExists,
    CorruptObject,
    MissingObject,
    NotFound,
    RepositoryError,
)
from payapi.backup.manifest import (
    BackupInfo,
    Manifest,
    ObjectEntry,
    VerificationRecord,
    VerifyProblem,
    VerifyReport,
)
from payapi.backup.records import RepositoryConfig, WalEntry
from payapi.backup.repository_base import (
    _BACKUP_ID,
    CONFIG,
    DATA,
    FORMAT_VERSION,
    LOCKS,
    MANIFESTS,
    SERIES_TAG,
    VERIFIED,
    WAL,
    WAL_INDEX,
    WAL_SERIES,
    RepositoryBase,
    _atomic_write,
    check_wal_name,
    object_tags,
    repository_scheme,
)
from payapi.systems.objectstore.base import check_key as check_store_key

# Re-exported: callers import the layout and helpers from here, as before the split.
__all__ = [
    "CONFIG",
    "DATA",
    "FORMAT_VERSION",
    "LOCKS",
    "MANIFESTS",
    "SERIES_TAG",
    "VERIFIED",
    "WAL",
    "WAL_INDEX",
    "WAL_SERIES",
    "BackupWriter",
    "Repository",
    "RepositoryConfig",
    "WalEntry",
    "check_wal_name",
    "object_tags",
    "repository_scheme",
]

log = logging.getLogger(__name__)

_LABEL = re.compile(r"^[a-z0-9][a-z0-9_]{0,31}$")

M = TypeVar("M", bound=BaseModel)


def _check_label(value: str, what: str) -> str:
    if not _LABEL.match(value):
        raise ValueError(f"invalid {what} {value!r}: lowercase letters, digits and _ only")
    return value


def _check_backup_id(backup_id: str) -> str:
    if not _BACKUP_ID.match(backup_id):
        raise NotFound(f"invalid backup id {backup_id!r}")
    return backup_id


def _check_object_name(name: str) -> str:
    try:
        return check_store_key(name)
    except RepositoryError:
        raise ValueError(f"invalid object name {name!r}") from None


class BackupWriter:
    """One backup being written. Objects stream in; :meth:`commit` writes the manifest.

    Use it as a context manager: leaving the block without :meth:`commit` (an exception,
    or simply forgetting) aborts, deleting the objects written so far.
    """

    def __init__(
        self,
        repo: Repository,
        backup_id: str,
        component: str,
        type: str,
        parent: str | None,
        started_at: datetime,
    ) -> None:
        self._repo = repo
        self.backup_id = backup_id
        self.component = component
        self.type = type
        self.parent = parent
        self.started_at = started_at
        self._data_key = DataKey.new(repo.key)
        self._entries: list[ObjectEntry] = []
        self._written: list[str] = []
        self._wal_start: str | None = None
        self._wal_end: str | None = None
        self._meta: dict[str, Any] = {}
        self._state = "open"
        self._manifest_attempted = False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._state == "open":
            try:
                self.abort()
            except RepositoryError as abort_exc:  # the original error matters more
                log.warning("abort of backup %s failed: %s", self.backup_id, abort_exc)

    @property
    def entries(self) -> list[ObjectEntry]:
        return list(self._entries)

    def _check_open(self) -> None:
        if self._state != "open":
            raise RepositoryError(f"backup {self.backup_id} is already {self._state}")

    def add_object(self, name: str, stream: BinaryIO | Iterable[bytes]) -> ObjectEntry:
        """Read, compress, encrypt, hash and upload ``stream`` in bounded memory."""
        self._check_open()
        _check_object_name(name)
        if any(e.name == name for e in self._entries):
            raise AlreadyExists(f"object {name} already added to backup {self.backup_id}")
        key = f"{DATA}{self.backup_id}/{name}"
        enc = ObjectEncryptor(self._data_key, key, self._repo.chunk_size)
        self._written.append(key)
        self._repo.store.put(key, enc.encrypt(stream))
        entry = ObjectEntry(
            name=name,
            size=enc.size,
            stored_size=enc.stored_size,
            sha256=enc.sha256,
            stored_sha256=enc.stored_sha256,
            chunks=enc.chunks,
        )
        self._entries.append(entry)
        return entry

    def add_bytes(self, name: str, data: bytes) -> ObjectEntry:
        return self.add_object(name, [data])

    def add_file(self, name: str, path: Path | str) -> ObjectEntry:
        with open(path, "rb") as f:
            return self.add_object(name, f)

    def set_wal_range(self, start: str, end: str) -> None:
        self._check_open()
        self._wal_start, self._wal_end = check_wal_name(start), check_wal_name(end)

    def set_meta(self, **kv: Any) -> None:
        """Free-form JSON metadata (PostgreSQL version, LSNs, timeline...). Never secrets."""
        self._check_open()
        try:
            json.dumps(kv)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"backup metadata must be JSON: {exc}") from None
        self._meta.update(kv)

    def commit(self, *, finished_at: datetime | None = None) -> BackupInfo:
        """Write the manifest, last and atomically; from now on the backup exists.

        ``finished_at`` (default: now) is for copies, which keep the original's.
        """
        self._check_open()
        repo = self._repo
        present = {e.key for e in repo.store.list(f"{DATA}{self.backup_id}/")}
        for entry in self._entries:  # e.g. removed by a concurrent prune_orphans
            if f"{DATA}{self.backup_id}/{entry.name}" not in present:
                raise MissingObject(self.backup_id, entry.name)
        manifest = Manifest(
            repository_id=repo.require_config().repository_id,
            backup_id=self.backup_id,
            component=self.component,
            type=self.type,
            parent=self.parent,
            started_at=self.started_at,
            finished_at=finished_at or max(repo.now(), self.started_at),
            wal_start=self._wal_start,
            wal_end=self._wal_end,
            tool_version=__version__,
            meta=self._meta,
            objects=self._entries,
        )
        self._manifest_attempted = True
        repo.put_model(MANIFESTS + self.backup_id, manifest, self._data_key, exclusive=True)
        self._state = "committed"
        return manifest.info()

    def abort(self) -> None:
        """Delete what this backup wrote; it never had a manifest, so it was never listed."""
        if self._state != "open":
            return
        self._state = "aborted"
        # A commit whose manifest write landed but whose reply was lost: manifest first.
        # (Only then: a copy keeps another repository's id, which this writer checked was
        # free, and must never delete a manifest it did not write.)
        if self._manifest_attempted:
            self._repo.store.delete(MANIFESTS + self.backup_id)
        leftovers = {e.key for e in self._repo.store.list(f"{DATA}{self.backup_id}/")}
        self._repo.store.delete_many(sorted(leftovers | set(self._written)))


class Repository(RepositoryBase):
    """A backup repository at a URL, opened with its key (which it never stores): the base
    (config, WAL) plus backups, manifests and verification."""

    # --- small encrypted objects ---------------------------------------------------------

    def put_model(
        self, key: str, model: BaseModel, data_key: DataKey | None = None, *, exclusive: bool
    ) -> None:
        data = model.model_dump_json().encode("utf-8")
        self.put_record_bytes(key, data, data_key, exclusive=exclusive)

    def get_model(self, key: str, model: type[M], backup_id: str | None, name: str) -> M:
        data = self.get_record_bytes(key, backup_id, name)
        try:
            return model.model_validate_json(data)
        except ValidationError:
            raise CorruptObject(backup_id, name, "does not parse") from None

    # --- backups -----------------------------------------------------------------------

    def begin_backup(
        self,
        component: str,
        type: str,
        parent: str | None = None,
        *,
        backup_id: str | None = None,
        started_at: datetime | None = None,
    ) -> BackupWriter:
        """Start a backup; its id is made from the start time, component and type.

        ``backup_id`` and ``started_at`` are for copies of a backup from another
        repository (:mod:`payapi.backup.copy`), which keep the original's: the id must
        name this component and type, and no backup may have it here yet.
        """
        self.require_config()
        _check_label(component, "component")
        _check_label(type, "backup type")
        if parent is not None and not self.store.exists(MANIFESTS + _check_backup_id(parent)):
            raise NotFound(f"parent backup {parent} not found in {self.url}")
        if started_at is not None and started_at.utcoffset() is None:
            raise ValueError("started_at must be timezone-aware")
        started = started_at or self.now()
        if backup_id is None:
            stamp = started.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
            backup_id = f"{stamp}-{component}-{type}-{secrets.token_hex(3)}"
        else:
            _check_backup_id(backup_id)
            if backup_id.split("-")[1:3] != [component, type]:
                raise ValueError(f"backup id {backup_id} is not a {component} {type} backup")
            if self.store.exists(MANIFESTS + backup_id):
                raise AlreadyExists(f"backup {backup_id} already exists in {self.url}")
        return BackupWriter(self, backup_id, component, type, parent, started)

    def _manifest_ids(self) -> list[str]:
        return sorted(e.key[len(MANIFESTS) :] for e in self.store.list(MANIFESTS))

    def read_manifest(self, backup_id: str) -> Manifest:
        config = self.require_config()
        _check_backup_id(backup_id)
        try:
            manifest = self.get_model(MANIFESTS + backup_id, Manifest, backup_id, "manifest")
        except NotFound:
            raise NotFound(f"backup {backup_id} not found in {self.url}") from None
        if manifest.backup_id != backup_id or manifest.repository_id != config.repository_id:
            raise CorruptObject(backup_id, "manifest", "belongs to another backup or repository")
        return manifest

    def _verified_at(self, backup_id: str) -> datetime | None:
        try:
            record = self.get_model(
                VERIFIED + backup_id, VerificationRecord, backup_id, "verification record"
            )
        except NotFound:
            return None
        return record.verified_at

    def list_backups(
        self, component: str | None = None, *, strict: bool = False
    ) -> list[BackupInfo]:
        """Committed backups, oldest first (by ``finished_at``).

        A manifest that does not authenticate is skipped with a warning (``strict=True``
        raises instead); ``verify`` reports it. A backup without a manifest never appears.
        """
        self.require_config()
        verified = {e.key[len(VERIFIED) :] for e in self.store.list(VERIFIED)}
        infos: list[BackupInfo] = []
        for backup_id in self._manifest_ids():
            if component is not None and f"-{component}-" not in backup_id:
                continue
            try:
                manifest = self.read_manifest(backup_id)
                if component is not None and manifest.component != component:
                    continue
                verified_at = self._verified_at(backup_id) if backup_id in verified else None
            except CorruptObject as exc:
                if strict:
                    raise
                log.warning("skipping unreadable backup: %s", exc)
                continue
            except NotFound:  # deleted while listing
                continue
            infos.append(manifest.info(verified_at))
        infos.sort(key=lambda i: (i.finished_at, i.backup_id))
        return infos

    def get_backup(self, backup_id: str) -> BackupInfo:
        manifest = self.read_manifest(backup_id)
        return manifest.info(self._verified_at(backup_id))

    def _entry(self, backup_id: str, name: str) -> ObjectEntry:
        entry = self.read_manifest(backup_id).entry(name)
        if entry is None:
            raise NotFound(f"object {name} is not part of backup {backup_id}")
        return entry

    def _object_reader(self, backup_id: str, name: str) -> tuple[ObjectEntry, DecryptingReader]:
        entry = self._entry(backup_id, name)
        key = f"{DATA}{backup_id}/{name}"
        return entry, self._decrypting(key, entry.size, entry.sha256, backup_id, name)

    def open_object(self, backup_id: str, name: str) -> BinaryIO:
        """The plaintext of one object, authenticated chunk by chunk as it is read.

        Raises :class:`CorruptObject` on tampering or truncation, at the latest when the
        end is reached (where size and SHA-256 are checked against the manifest).
        """
        _entry, reader = self._object_reader(backup_id, name)
        return io.BufferedReader(reader, buffer_size=1 << 16)

    def iter_object(self, backup_id: str, name: str) -> Iterator[bytes]:
        """The plaintext of one object as chunks (no per-read copying)."""
        _entry, reader = self._object_reader(backup_id, name)
        with reader:
            yield from reader.read_chunks()

    def restore_object(self, backup_id: str, name: str, dest_path: Path | str) -> ObjectEntry:
        """Write one object's plaintext to ``dest_path`` (temp + fsync + rename).

        Nothing is left at ``dest_path`` if the object turns out to be corrupt.
        """
        entry, reader = self._object_reader(backup_id, name)
        with reader:
            _atomic_write(Path(dest_path), reader.read_chunks())
        return entry

    def mark_verified(
        self, backup_id: str, at: datetime, details: dict[str, Any] | None = None
    ) -> None:
        """Record a successful verification (separately: manifests are immutable)."""
        self.require_config()
        if not self.store.exists(MANIFESTS + _check_backup_id(backup_id)):
            raise NotFound(f"backup {backup_id} not found in {self.url}")
        record = VerificationRecord(backup_id=backup_id, verified_at=at, details=details or {})
        self.put_model(VERIFIED + backup_id, record, exclusive=False)

    def delete_backup(self, backup_id: str) -> None:
        """Delete a backup: manifest first (from then on it is not listed), then the rest."""
        self.require_config()
        manifest_key = MANIFESTS + _check_backup_id(backup_id)
        if not self.store.exists(manifest_key):
            raise NotFound(f"backup {backup_id} not found in {self.url}")
        self.store.delete(manifest_key)
        self.store.delete(VERIFIED + backup_id)
        self.store.delete_many(sorted(e.key for e in self.store.list(f"{DATA}{backup_id}/")))

    def prune_orphans(self, older_than: timedelta | None = None) -> list[str]:
        """Remove what interrupted operations left: data of backups that have no manifest,
        WAL segments without an index entry, stray verification records, temp files and
        unfinished uploads. Returns what was removed (``data/<id>``, ``wal/<name>``, ...).

        Run it under the repository's exclusive lock, or pass ``older_than`` longer than
        any backup takes: a backup in progress has no manifest yet either. (Should one be
        pruned anyway, its commit fails instead of writing a manifest with holes.)
        """
        self.require_config()
        # Store timestamps are wall-clock times, so the cutoff is too (not the injected clock).
        cutoff = datetime.now(UTC) - older_than if older_than is not None else None
        manifests = set(self._manifest_ids())
        groups: dict[str, list[str]] = {}
        newest: dict[str, datetime] = {}

        def collect(group: str, key: str, modified: datetime) -> None:
            groups.setdefault(group, []).append(key)
            newest[group] = max(newest.get(group, modified), modified)

        for e in self.store.list(DATA):
            backup_id = e.key[len(DATA) :].split("/", 1)[0]
            if backup_id not in manifests:
                collect(f"{DATA}{backup_id}", e.key, e.modified)
        indexed = {e.key[len(WAL_INDEX) :] for e in self.store.list(WAL_INDEX)}
        for e in self.store.list(WAL):
            if e.key[len(WAL) :] not in indexed:
                collect(e.key, e.key, e.modified)
        for e in self.store.list(VERIFIED):
            if e.key[len(VERIFIED) :] not in manifests:
                collect(e.key, e.key, e.modified)
        removed: list[str] = []
        for group in sorted(groups):
            if cutoff is not None and newest[group] > cutoff:
                continue
            self.store.delete_many(groups[group])
            removed.append(group)
        self.store.cleanup(older_than)
        return removed

    # --- verification ------------------------------------------------------------------

    def _check_stored(
        self,
        report: VerifyReport,
        key: str,
        backup_id: str | None,
        name: str,
        expected: ObjectEntry | WalEntry,
    ) -> None:
        """Read one object end to end: every chunk tag, both SHA-256 values, both sizes."""

        def problem(kind: str, detail: str) -> None:
            report.problems.append(
                VerifyProblem(backup_id=backup_id, object=name, kind=kind, detail=detail)
            )

        try:
            raw = self.store.open(key)
        except NotFound:
            problem("missing", "missing from the repository")
            return
        reader = DecryptingReader(raw, self.key, key)
        report.objects_checked += 1
        try:
            with reader:
                reader.drain()
        except DecryptError as exc:
            problem("corrupt", exc.reason)
            return
        finally:
            report.bytes_checked += reader.stored_size
        if reader.stored_size != expected.stored_size:
            problem("size", f"stored size {reader.stored_size}, recorded {expected.stored_size}")
        elif reader.stored_sha256 != expected.stored_sha256:
            problem("checksum", "SHA-256 of the stored bytes differs from the record")
        elif reader.size != expected.size or reader.sha256 != expected.sha256:
            problem("checksum", "size or SHA-256 of the plaintext differs from the record")

    def _verify_backup(
        self, backup_id: str, report: VerifyReport, manifests: set[str], verified: set[str]
    ) -> None:
        report.backups.append(backup_id)
        try:
            manifest = self.read_manifest(backup_id)
        except CorruptObject as exc:
            report.problems.append(
                VerifyProblem(
                    backup_id=backup_id, object="manifest", kind="manifest", detail=exc.reason
                )
            )
            return
        prefix = f"{DATA}{backup_id}/"
        stored = {e.key[len(prefix) :] for e in self.store.list(prefix)}
        for entry in manifest.objects:
            self._check_stored(report, prefix + entry.name, backup_id, entry.name, entry)
        for extra in sorted(stored - {e.name for e in manifest.objects}):
            report.problems.append(
                VerifyProblem(
                    backup_id=backup_id,
                    object=extra,
                    kind="unlisted",
                    detail="stored under this backup but not in its manifest",
                )
            )
        if manifest.parent is not None and manifest.parent not in manifests:
            report.problems.append(
                VerifyProblem(
                    backup_id=backup_id,
                    object="manifest",
                    kind="missing",
                    detail=f"parent backup {manifest.parent} is missing",
                )
            )
        if backup_id in verified:
            try:
                self._verified_at(backup_id)
            except CorruptObject as exc:
                report.problems.append(
                    VerifyProblem(
                        backup_id=backup_id,
                        object="verification record",
                        kind="corrupt",
                        detail=exc.reason,
                    )
                )

    def verify_wal(self, names: Iterable[str]) -> VerifyReport:
        """Check the named WAL segments end to end (as :meth:`verify` does for all)."""
        self.require_config()
        report = VerifyReport(started_at=self.now())
        self._verify_wal(report, sorted(set(names)))
        report.finished_at = self.now()
        return report

    def _verify_wal(self, report: VerifyReport, names: list[str] | None = None) -> None:
        """Every archived segment, or only ``names`` (then a name that is not archived is
        a problem, and objects are looked up one by one instead of listed)."""
        if names is None:
            listed = {e.key[len(WAL) :] for e in self.store.list(WAL)}
            todo, explicit = self.list_wal(), False

            def stored(name: str) -> bool:
                return name in listed
        else:
            todo, explicit = names, True

            def stored(name: str) -> bool:
                return self.store.exists(WAL + name)

        for name in todo:
            if explicit:
                check_wal_name(name)
            try:
                entry = self._wal_entry(name)
            except CorruptObject as exc:
                report.problems.append(
                    VerifyProblem(
                        backup_id=None,
                        object=f"wal-index/{name}",
                        kind="corrupt",
                        detail=exc.reason,
                    )
                )
                continue
            except NotFound:  # deleted while verifying (or, when named, never archived)
                if explicit:
                    report.problems.append(
                        VerifyProblem(
                            backup_id=None,
                            object=f"wal-index/{name}",
                            kind="missing",
                            detail="not archived in this repository",
                        )
                    )
                continue
            report.wal_checked += 1
            if entry.name != name:
                report.problems.append(
                    VerifyProblem(
                        backup_id=None,
                        object=f"wal-index/{name}",
                        kind="corrupt",
                        detail="index entry names another segment",
                    )
                )
                continue
            if not stored(name):
                report.problems.append(
                    VerifyProblem(
                        backup_id=None,
                        object=WAL + name,
                        kind="missing",
                        detail="missing from the repository",
                    )
                )
                continue
            self._check_stored(report, WAL + name, None, WAL + name, entry)

    def verify(self, backup_id: str | None = None) -> VerifyReport:
        """Check objects end to end: manifests, data, verification records and (for the
        whole repository) every WAL segment. Locks are not objects and are not checked.

        With ``backup_id``, only that backup. Problems are collected, not raised; unlisted
        leftovers of interrupted operations are reported as ``orphans``.
        """
        self.require_config()
        report = VerifyReport(started_at=self.now())
        manifests = set(self._manifest_ids())
        verified = {e.key[len(VERIFIED) :] for e in self.store.list(VERIFIED)}
        if backup_id is not None:
            if _check_backup_id(backup_id) not in manifests:
                raise NotFound(f"backup {backup_id} not found in {self.url}")
            self._verify_backup(backup_id, report, manifests, verified)
        else:
            for bid in sorted(manifests):
                self._verify_backup(bid, report, manifests, verified)
            self._verify_wal(report)
            orphans: set[str] = set()
            for e in self.store.list(DATA):
                bid = e.key[len(DATA) :].split("/", 1)[0]
                if bid not in manifests:
                    orphans.add(f"{DATA}{bid}")
            indexed = set(self.list_wal())
            for e in self.store.list(WAL):
                if e.key[len(WAL) :] not in indexed:
                    orphans.add(e.key)
            report.orphans = sorted(orphans)
        report.finished_at = self.now()
        return report
