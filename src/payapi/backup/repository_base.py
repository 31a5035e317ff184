"""The repository's base: its store, key and ``config``, and its WAL archive.

:class:`RepositoryBase` is everything ``wal push`` and ``wal fetch`` need: opening a
repository (key, store, ``config`` checked), archiving and restoring WAL segments with
their index entries. :class:`payapi.backup.repository.Repository` adds backups,
manifests and verification. This module imports neither pydantic nor any store SDK that
is not used: ``wal push`` is PostgreSQL's ``archive_command``, one process per 16 MB
segment, and its start-up is most of its cost. The format is
``docs/repository-format.md``; the invariants are those of
:mod:`payapi.backup.repository`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlsplit

from payapi import __version__
from payapi.backup.crypto import (
    DEFAULT_CHUNK_SIZE,
    KEY_BYTES,
    DataKey,
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
from payapi.backup.records import RecordError, RepositoryConfig, WalEntry, from_json, to_json
from payapi.systems.objectstore import Store, open_store

if TYPE_CHECKING:
    from payapi.backup.lock import LockStore
    from payapi.backup.wal_prefetch import PreparedSegment

FORMAT_VERSION = 1
CONFIG = "config"
DATA = "data/"
MANIFESTS = "manifests/"
VERIFIED = "verified/"
WAL = "wal/"
WAL_INDEX = "wal-index/"
LOCKS = "locks/"

_BACKUP_ID = re.compile(r"^\d{8}T\d{6}Z-[a-z0-9][a-z0-9_]*-[a-z0-9][a-z0-9_]*-[0-9a-f]{6}$")
_WAL_NAME = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,127}$")

SERIES_TAG = "payapi-series"
WAL_SERIES = "database/wal"  # the repository's WAL archive is the PostgreSQL cluster's


def _utcnow() -> datetime:
    return datetime.now(UTC)


def check_wal_name(name: str) -> str:
    if not _WAL_NAME.match(name) or ".." in name:
        raise ValueError(f"invalid WAL file name {name!r}")
    return name


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
    tmp = dest.with_name(f".{dest.name}.payapi-{os.urandom(4).hex()}")
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


def repository_scheme(url: str) -> str:
    """``file`` or ``s3`` (useful for callers that need to know without opening)."""
    return urlsplit(url).scheme.lower() if "://" in url else "file"


class RepositoryBase:
    """A backup repository at a URL, opened with its key (which it never stores): its
    ``config`` and WAL archive (:class:`payapi.backup.repository.Repository` adds the rest)."""

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
    ) -> Self:
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
    ) -> Self:
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
        return f"{type(self).__name__}({self.url!r})"

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
            config = from_json(RepositoryConfig, raw)
        except RecordError:
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
        repository_id = os.urandom(16).hex()
        config = RepositoryConfig(
            format_version=FORMAT_VERSION,
            repository_id=repository_id,
            created_at=self.now(),
            tool_version=__version__,
            chunk_size=chunk_size or self._chunk_size or DEFAULT_CHUNK_SIZE,
            key_check=key_check_value(self.key, repository_id),
        )
        body = to_json(config, indent=2) + b"\n"
        self.store.put_bytes(CONFIG, body, exclusive=True)
        self.config = config
        return config

    def require_config(self) -> RepositoryConfig:
        if self.config is None:
            raise NotFound(f"no repository at {self.url} (initialize it first)")
        return self.config

    # --- small encrypted objects ---------------------------------------------------------

    def put_record_bytes(
        self, key: str, data: bytes, data_key: DataKey | None = None, *, exclusive: bool
    ) -> None:
        """Store ``data`` (a small JSON record) encrypted under ``key``."""
        blob = encrypt_bytes(data, data_key or DataKey.new(self.key), key, self.chunk_size)
        self.store.put_bytes(key, blob, exclusive=exclusive)

    def get_record_bytes(self, key: str, backup_id: str | None, name: str) -> bytes:
        """The plaintext of small object ``key`` (:class:`CorruptObject` names it)."""
        with self.store.open(key) as raw:
            reader = DecryptingReader(
                raw, self.key, key, make_error=lambda r: CorruptObject(backup_id, name, r)
            )
            return b"".join(reader.read_chunks())

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

    # --- WAL ---------------------------------------------------------------------------

    def _wal_entry(self, name: str) -> WalEntry:
        where = f"wal-index/{name}"
        data = self.get_record_bytes(WAL_INDEX + name, None, where)
        try:
            return from_json(WalEntry, data)
        except RecordError:
            raise CorruptObject(None, where, "does not parse") from None

    def put_wal(
        self, name: str, path: Path | str, *, prepared: PreparedSegment | None = None
    ) -> bool:
        """Archive one WAL segment. False if it is already there with the same content;
        :class:`WalConflict` if a different segment was archived under that name.

        The segment is written first and its index entry (exclusive create) second: a
        push killed in between is invisible and the next push simply redoes it.

        ``prepared`` is the same file already being read, hashed and compressed on a
        thread (:mod:`payapi.backup.wal_prefetch`, started by ``wal push`` before this
        module was even imported); it is used once, if its chunk size is the
        repository's, and the file is read again otherwise.
        """
        self.require_config()
        check_wal_name(name)
        path = Path(path)
        if prepared is not None and prepared.chunk_size != self.chunk_size:
            prepared.cancel()
            prepared = None
        for _attempt in range(2):
            try:
                existing = self._wal_entry(name)
            except NotFound:
                existing = None
            if existing is not None:
                size, sha = prepared.digest() if prepared is not None else _sha256_file(path)
                if size == existing.size and sha == existing.sha256:
                    return False
                raise WalConflict(
                    f"WAL segment {name} is already archived in {self.url} "
                    "with different content; refusing to overwrite it"
                )
            key = WAL + name
            enc = ObjectEncryptor(DataKey.new(self.key), key, self.chunk_size)
            if prepared is not None:
                self.store.put(key, enc.encrypt_prepared(prepared))
                prepared = None  # used: a second attempt reads the file
            else:
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
                self.put_record_bytes(WAL_INDEX + name, to_json(entry), exclusive=True)
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
                self.put_record_bytes(WAL_INDEX + name, to_json(ours), exclusive=False)
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
