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

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, Self, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError

from payapi import __version__
from payapi.backup.crypto import (
    DEFAULT_CHUNK_SIZE,
    KEY_BYTES,
    DataKey,
    DecryptError,
    DecryptingReader,
    ObjectEncryptor,
    check_key,
    encrypt_bytes,
    key_check_value,
)
from payapi.backup.errors import (
    AlreadyExists,
    CorruptObject,
    KeyUnavailable,
    MissingObject,
    NotFound,
    RepositoryError,
    WalConflict,
    WrongKey,
)
from payapi.backup.manifest import (
    BackupInfo,
    Manifest,
    ObjectEntry,
    RepositoryConfig,
    VerificationRecord,
    VerifyProblem,
    VerifyReport,
    WalEntry,
)
from payapi.systems.objectstore import Store, open_store
from payapi.systems.objectstore.base import check_key as check_store_key

if TYPE_CHECKING:
    from payapi.backup.lock import LockStore

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CONFIG = "config"
DATA = "data/"
MANIFESTS = "manifests/"
VERIFIED = "verified/"
WAL = "wal/"
WAL_INDEX = "wal-index/"
LOCKS = "locks/"

_LABEL = re.compile(r"^[a-z0-9][a-z0-9_]{0,31}$")
_BACKUP_ID = re.compile(r"^\d{8}T\d{6}Z-[a-z0-9][a-z0-9_]*-[a-z0-9][a-z0-9_]*-[0-9a-f]{6}$")
_WAL_NAME = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,127}$")

M = TypeVar("M", bound=BaseModel)

SERIES_TAG = "payapi-series"
WAL_SERIES = "database/wal"  # the repository's WAL archive is the PostgreSQL cluster's


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _check_label(value: str, what: str) -> str:
    if not _LABEL.match(value):
        raise ValueError(f"invalid {what} {value!r}: lowercase letters, digits and _ only")
    return value


def _check_backup_id(backup_id: str) -> str:
    if not _BACKUP_ID.match(backup_id):
        raise NotFound(f"invalid backup id {backup_id!r}")
    return backup_id


def check_wal_name(name: str) -> str:
    if not _WAL_NAME.match(name) or ".." in name:
        raise ValueError(f"invalid WAL file name {name!r}")
    return name


def _check_object_name(name: str) -> str:
    try:
        return check_store_key(name)
    except RepositoryError:
        raise ValueError(f"invalid object name {name!r}") from None


def object_tags(key: str) -> dict[str, str]:
    """The tags an object is stored with (S3 object tags): ``payapi-series`` =
    ``<component>/<type>`` of the backup it belongs to, or ``database/wal`` for WAL and
    its index. Bucket lifecycle rules select on it (``payapi retention lifecycle``), so
    that each series can expire after its own retention. Other keys get no tags."""
    head, _, rest = key.partition("/")
    if head in ("wal", "wal-index") and rest:
        return {SERIES_TAG: WAL_SERIES}
    if head in ("data", "manifests", "verified"):
        backup_id = rest.split("/", 1)[0]
        if _BACKUP_ID.match(backup_id):
            _stamp, component, type_, _hex = backup_id.split("-")
            return {SERIES_TAG: f"{component}/{type_}"}
    return {}


def _sha256_file(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
            size += len(block)
    return size, h.hexdigest()


def _atomic_write(dest: Path, chunks: Iterator[bytes]) -> None:
    """Write ``chunks`` to ``dest`` via a temp file in the same folder, fsync, rename."""
    dest = Path(dest)
    tmp = dest.with_name(f".{dest.name}.payapi-{secrets.token_hex(4)}")
    try:
        with open(tmp, "xb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


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


class Repository:
    """A backup repository at a URL, opened with its key (which it never stores)."""

    def __init__(
        self,
        store: Store,
        key: bytes,
        *,
        clock: Callable[[], datetime] | None = None,
        chunk_size: int | None = None,
    ) -> None:
        if len(key) != KEY_BYTES:
            raise KeyUnavailable("a repository key is 32 bytes")
        self.store = store
        store.tags_for = object_tags
        self.key = key
        self.now = clock or _utcnow
        self._chunk_size = chunk_size
        self.config: RepositoryConfig | None = None
        self._load_config()

    @classmethod
    def open(
        cls,
        url: str,
        key: bytes,
        *,
        s3_endpoint_url: str | None = None,
        s3_sse: str | None = "AES256",
        clock: Callable[[], datetime] | None = None,
        chunk_size: int | None = None,
        **store_options: Any,
    ) -> Repository:
        """Open the repository at ``url``; :class:`WrongKey` if it was made with another key.

        An uninitialized location opens too (so that :meth:`init` can be called); every
        other operation on it raises :class:`NotFound`.
        """
        options = dict(store_options)
        if url.lower().startswith("s3://"):
            options.setdefault("endpoint_url", s3_endpoint_url)
            options.setdefault("sse", s3_sse)
        store = open_store(url, **options)
        try:
            return cls(store, key, clock=clock, chunk_size=chunk_size)
        except BaseException:
            store.close()
            raise

    @classmethod
    def open_configured(
        cls,
        url: str,
        *,
        key_file: Path | None,
        key_env: str,
        s3_endpoint_url: str | None = None,
        s3_sse: str | None = "AES256",
        s3_region: str | None = None,
        create: bool = False,
        **store_options: Any,
    ) -> Repository:
        """Open a repository the way the configuration describes it: the key from its
        file (else the variable ``key_env``), the store, and its ``config`` checked.

        ``create`` initializes a location that holds no repository yet. The one way every
        caller (the commands, ``wal push``, the RPO check, the lab) opens a repository, so
        that none of them drifts from the others.
        """
        from payapi.backup.crypto import load_repository_key

        key = load_repository_key(key_file, env=key_env)
        if s3_region is not None:
            store_options.setdefault("region", s3_region)
        repo = cls.open(url, key, s3_endpoint_url=s3_endpoint_url, s3_sse=s3_sse, **store_options)
        try:
            if create and not repo.initialized:
                repo.init()
            repo.require_config()
        except BaseException:
            repo.close()
            raise
        return repo

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Repository({self.url!r})"

    def lock_store(self) -> LockStore:
        """Where this repository's locks live (``locks/``, outside the verified objects).

        Every writer (backups, copies, purge, restores) must use this one, so they all see
        each other's locks: a local folder with O_EXCL files for ``file://``, lock objects
        in the store otherwise.
        """
        from payapi.backup.lock import LocalFileLockStore, ObjectLockStore

        root = getattr(self.store, "root", None)
        if repository_scheme(self.url) == "file" and isinstance(root, Path):
            return LocalFileLockStore(root / "locks")
        return ObjectLockStore(self.store, "locks/")

    @property
    def url(self) -> str:
        return self.store.url

    @property
    def chunk_size(self) -> int:
        if self._chunk_size is not None:
            return self._chunk_size
        return self.config.chunk_size if self.config else DEFAULT_CHUNK_SIZE

    # --- config ------------------------------------------------------------------------

    def _load_config(self) -> None:
        try:
            raw = self.store.get_bytes(CONFIG)
        except NotFound:
            self.config = None
            return
        try:
            config = RepositoryConfig.model_validate_json(raw)
        except ValidationError:
            raise RepositoryError(f"repository config at {self.url} is unreadable") from None
        if config.format_version > FORMAT_VERSION:
            raise RepositoryError(
                f"repository at {self.url} has format {config.format_version}; "
                f"this payapi reads up to {FORMAT_VERSION}"
            )
        if not check_key(self.key, config.repository_id, config.key_check):
            raise WrongKey(f"wrong repository key for {self.url}")
        self.config = config

    @property
    def initialized(self) -> bool:
        return self.config is not None

    def init(self, *, chunk_size: int | None = None) -> RepositoryConfig:
        """Create the repository: write ``config`` (once; :class:`AlreadyExists` after)."""
        if self.config is not None or self.store.exists(CONFIG):
            raise AlreadyExists(f"a repository already exists at {self.url}")
        repository_id = secrets.token_hex(16)
        config = RepositoryConfig(
            format_version=FORMAT_VERSION,
            repository_id=repository_id,
            created_at=self.now(),
            tool_version=__version__,
            chunk_size=chunk_size or self._chunk_size or DEFAULT_CHUNK_SIZE,
            key_check=key_check_value(self.key, repository_id),
        )
        body = config.model_dump_json(indent=2).encode("utf-8") + b"\n"
        self.store.put_bytes(CONFIG, body, exclusive=True)
        self.config = config
        return config

    def require_config(self) -> RepositoryConfig:
        if self.config is None:
            raise NotFound(f"no repository at {self.url} (initialize it first)")
        return self.config

    # --- small encrypted objects ---------------------------------------------------------

    def put_model(
        self, key: str, model: BaseModel, data_key: DataKey | None = None, *, exclusive: bool
    ) -> None:
        data = model.model_dump_json().encode("utf-8")
        blob = encrypt_bytes(data, data_key or DataKey.new(self.key), key, self.chunk_size)
        self.store.put_bytes(key, blob, exclusive=exclusive)

    def get_model(self, key: str, model: type[M], backup_id: str | None, name: str) -> M:
        with self.store.open(key) as raw:
            reader = DecryptingReader(
                raw, self.key, key, make_error=lambda r: CorruptObject(backup_id, name, r)
            )
            data = b"".join(reader.read_chunks())
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

    def _decrypting(
        self, key: str, size: int, sha256: str, backup_id: str | None, name: str
    ) -> DecryptingReader:
        """A checked plaintext reader of stored object ``key`` (errors name backup/object)."""
        try:
            raw = self.store.open(key)
        except NotFound:
            raise MissingObject(backup_id, name) from None
        return DecryptingReader(
            raw,
            self.key,
            key,
            expected_size=size,
            expected_sha256=sha256,
            make_error=lambda r: CorruptObject(backup_id, name, r),
        )

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

    # --- WAL ---------------------------------------------------------------------------

    def _wal_entry(self, name: str) -> WalEntry:
        return self.get_model(WAL_INDEX + name, WalEntry, None, f"wal-index/{name}")

    def put_wal(self, name: str, path: Path | str) -> bool:
        """Archive one WAL segment. False if it is already there with the same content;
        :class:`WalConflict` if a different segment was archived under that name.

        The segment is written first and its index entry (exclusive create) second: a
        push killed in between is invisible and the next push simply redoes it.
        """
        self.require_config()
        check_wal_name(name)
        path = Path(path)
        for _attempt in range(2):
            try:
                existing = self._wal_entry(name)
            except NotFound:
                existing = None
            if existing is not None:
                size, sha = _sha256_file(path)
                if size == existing.size and sha == existing.sha256:
                    return False
                raise WalConflict(
                    f"WAL segment {name} is already archived in {self.url} "
                    "with different content; refusing to overwrite it"
                )
            key = WAL + name
            enc = ObjectEncryptor(DataKey.new(self.key), key, self.chunk_size)
            with open(path, "rb") as f:
                self.store.put(key, enc.encrypt(f))
            entry = WalEntry(
                name=name,
                size=enc.size,
                stored_size=enc.stored_size,
                sha256=enc.sha256,
                stored_sha256=enc.stored_sha256,
                archived_at=self.now(),
                tool_version=__version__,
            )
            try:
                self.put_model(WAL_INDEX + name, entry, exclusive=True)
            except AlreadyExists:  # a concurrent push of the same name won the index
                if self._settle_wal_race(name, key, entry):
                    return False
                continue
            return True
        raise WalConflict(f"WAL segment {name} is being archived concurrently; retry")

    def _settle_wal_race(self, name: str, key: str, ours: WalEntry, tries: int = 5) -> bool:
        """Two pushes of one segment (``wal push`` to a secondary and a copy after a
        backup, say) write the same object, then race to create its index entry. The
        loser's object may have replaced the winner's, leaving an index that does not
        describe the stored bytes, and a segment that no restore can read. The loser
        settles it: same plaintext (else :class:`WalConflict`), then if the stored bytes
        are the winner's there is nothing to do, and if they are its own its entry becomes
        the index. False when a third writer is still at it (the caller looks again)."""
        for _ in range(tries):
            winner = self._wal_entry(name)
            if (winner.size, winner.sha256) != (ours.size, ours.sha256):
                raise WalConflict(
                    f"WAL segment {name} is already archived in {self.url} "
                    "with different content; refusing to overwrite it"
                )
            stored = self._stored_sha256(key)
            if stored == winner.stored_sha256:
                return True
            if stored == ours.stored_sha256:
                self.put_model(WAL_INDEX + name, ours, exclusive=False)
                return True
            time.sleep(0.1)
        return False

    def _stored_sha256(self, key: str) -> str | None:
        try:
            raw = self.store.open(key)
        except NotFound:
            return None
        digest = hashlib.sha256()
        with raw:
            while chunk := raw.read(1 << 20):
                digest.update(chunk)
        return digest.hexdigest()

    def get_wal(self, name: str, dest: Path | str) -> None:
        """Restore one WAL segment to ``dest`` (checked, then renamed into place)."""
        self.require_config()
        check_wal_name(name)
        try:
            entry = self._wal_entry(name)
        except NotFound:
            raise NotFound(f"WAL segment {name} not found in {self.url}") from None
        key = WAL + name
        with self._decrypting(key, entry.size, entry.sha256, None, key) as reader:
            _atomic_write(Path(dest), reader.read_chunks())

    def list_wal(self) -> list[str]:
        self.require_config()
        return sorted(e.key[len(WAL_INDEX) :] for e in self.store.list(WAL_INDEX))

    def wal_entry(self, name: str) -> WalEntry:
        """The index entry of an archived segment (size, checksums, when it was archived)."""
        self.require_config()
        try:
            return self._wal_entry(check_wal_name(name))
        except NotFound:
            raise NotFound(f"WAL segment {name} not found in {self.url}") from None

    def delete_wal(self, names: Iterable[str]) -> int:
        """Delete segments: index entry first (from then on it is not listed), then data."""
        self.require_config()
        count = 0
        for name in names:
            check_wal_name(name)
            if self.store.exists(WAL_INDEX + name):
                count += 1
            self.store.delete(WAL_INDEX + name)
            self.store.delete(WAL + name)
        return count

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


def repository_scheme(url: str) -> str:
    """``file`` or ``s3`` (useful for callers that need to know without opening)."""
    return urlsplit(url).scheme.lower() if "://" in url else "file"
