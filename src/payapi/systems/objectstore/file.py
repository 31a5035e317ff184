"""A repository in a local (or mounted) directory: ``file:///path``.

Every write goes to a hidden temp name in the target's directory, is fsynced, then renamed
into place (``os.link`` when the write must not replace anything) and the directory is
fsynced: after a crash an object is either absent or complete. Temp names start with
``.tmp-`` and are never listed; :meth:`FileStore.cleanup` removes stale ones.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

from payapi.systems.objectstore.base import Store, StoreEntry, check_key
from payapi.systems.objectstore.errors import (
    AlreadyExists,
    NotFound,
    StoreError,
    StoreFull,
    StoreUnreachable,
)

TEMP_PREFIX = ".tmp-"
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_UNREACHABLE = {errno.EIO, errno.ENOTCONN, errno.ESTALE, errno.EHOSTDOWN, errno.ETIMEDOUT}


class _Reader(io.RawIOBase):
    """A file opened for reading whose OS errors become repository errors."""

    def __init__(self, store: FileStore, key: str, f: BinaryIO) -> None:
        super().__init__()
        self._store, self._key, self._f = store, key, f

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        try:
            return self._f.readinto(b)  # type: ignore[attr-defined,no-any-return]
        except OSError as exc:
            raise self._store.error(exc, "read", self._key) from None

    def close(self) -> None:
        try:
            self._f.close()
        finally:
            super().close()


class FileStore(Store):
    def __init__(self, root: Path, **_ignored: Any) -> None:
        self.root = Path(root).expanduser().absolute()
        self.url = f"file://{self.root}"

    @classmethod
    def from_url(cls, url: str, **options: Any) -> FileStore:
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost") or not parts.path:
            raise StoreError(f"invalid file repository URL {url}: use file:///absolute/path")
        return cls(Path(unquote(parts.path)), **options)

    # --- helpers ---------------------------------------------------------------------

    def error(self, exc: OSError, op: str, key: str) -> StoreError:
        what = exc.strerror or type(exc).__name__
        if exc.errno in _FULL:
            return StoreFull(f"repository full: {what} while writing {key} to {self.url}")
        if exc.errno in _UNREACHABLE:
            return StoreUnreachable(f"repository unreachable: {self.url}: {what}")
        if isinstance(exc, FileNotFoundError):
            return NotFound(f"{key} not found in {self.url}")
        return StoreError(f"cannot {op} {key} in {self.url}: {what}")

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _owner(self) -> tuple[int, int] | None:
        """Who new files and folders are given to: when root writes into a repository
        that belongs to another user (the lab's PostgreSQL archives and fetches WAL as
        its own user, also from copies that root made), that user; otherwise nobody."""
        if os.geteuid() != 0:
            return None
        try:
            st = self.root.stat()
        except OSError:
            return None
        return None if st.st_uid == 0 else (st.st_uid, st.st_gid)

    def _give(self, folder: Path, owner: tuple[int, int]) -> None:
        for d in (folder, *folder.parents):
            if d == self.root or self.root not in d.parents:
                break
            if d.stat().st_uid != owner[0]:
                os.chown(d, *owner)

    @staticmethod
    def _fsync_dir(path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # --- Store -----------------------------------------------------------------------

    def put(self, key: str, blocks: Iterable[bytes], *, exclusive: bool = False) -> None:
        path = self._path(key)
        # os.urandom(6).hex() is secrets.token_hex(6), without importing secrets (wal push)
        tmp = path.with_name(f"{TEMP_PREFIX}{path.name}-{os.urandom(6).hex()}")
        owner = self._owner()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if owner is not None:
                self._give(path.parent, owner)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            if owner is not None:
                try:
                    os.fchown(fd, *owner)
                except OSError:
                    os.close(fd)
                    tmp.unlink()
                    raise
        except OSError as exc:
            raise self.error(exc, "write", key) from None
        try:
            try:
                for block in blocks:  # errors of the source propagate unchanged
                    self._write_all(fd, block, key)
                try:
                    os.fsync(fd)
                except OSError as exc:
                    raise self.error(exc, "write", key) from None
            finally:
                os.close(fd)
            try:
                if exclusive:
                    self._link_exclusive(tmp, path, key)
                else:
                    os.replace(tmp, path)
                self._fsync_dir(path.parent)
            except OSError as exc:
                raise self.error(exc, "write", key) from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def _write_all(self, fd: int, block: bytes, key: str) -> None:
        view = memoryview(block)
        try:
            while view:
                view = view[os.write(fd, view) :]
        except OSError as exc:
            raise self.error(exc, "write", key) from None

    def _link_exclusive(self, tmp: Path, path: Path, key: str) -> None:
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise AlreadyExists(f"{key} already exists in {self.url}") from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV):
                raise
            # A filesystem without hard links: check, then rename (not atomic, documented).
            if path.exists():
                raise AlreadyExists(f"{key} already exists in {self.url}") from None
            os.replace(tmp, path)

    def open(self, key: str) -> BinaryIO:
        try:
            f = open(self._path(key), "rb")  # noqa: SIM115 - the caller closes it
        except IsADirectoryError:
            raise NotFound(f"{key} not found in {self.url}") from None
        except OSError as exc:
            raise self.error(exc, "read", key) from None
        return io.BufferedReader(_Reader(self, key, f), buffer_size=1 << 16)

    def exists(self, key: str) -> bool:
        try:
            return self._path(key).is_file()
        except OSError as exc:
            raise self.error(exc, "stat", key) from None

    def list(self, prefix: str = "") -> Iterator[StoreEntry]:
        top = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not top.is_dir():
            if not self.root.is_dir():
                raise StoreUnreachable(f"repository unreachable: {self.url} does not exist")
            return
        try:
            for dirpath, dirnames, filenames in os.walk(top):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                base = Path(dirpath)
                for name in filenames:
                    if name.startswith("."):
                        continue
                    full = base / name
                    key = full.relative_to(self.root).as_posix()
                    if not key.startswith(prefix):
                        continue
                    try:
                        st = full.stat()
                    except FileNotFoundError:  # deleted while listing
                        continue
                    yield StoreEntry(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))
        except OSError as exc:
            raise self.error(exc, "list", prefix or "/") from None

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise self.error(exc, "delete", key) from None
        # Tidy empty directories (data/<backup id>/...) up to, not including, the root.
        parent = path.parent
        while parent != self.root and self.root in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def cleanup(self, older_than: timedelta | None = None) -> int:
        cutoff = datetime.now(UTC) - (older_than or timedelta(0))
        removed = 0
        if not self.root.is_dir():
            return 0
        for dirpath, _dirnames, filenames in os.walk(self.root):
            for name in filenames:
                if not name.startswith(TEMP_PREFIX):
                    continue
                full = Path(dirpath) / name
                try:
                    if datetime.fromtimestamp(full.stat().st_mtime, UTC) <= cutoff:
                        full.unlink()
                        removed += 1
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise self.error(exc, "delete", name) from None
        return removed
