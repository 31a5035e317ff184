"""Extract a tar stream (a physical backup's ``base.tar``) straight from plaintext chunks.

Why not :mod:`tarfile`: a restore moves every byte of the database through here, and
``tarfile``'s stream mode copies each one several times through Python-level buffers of
10-16 KiB (profiled: more CPU than decrypting, decompressing and hashing together). This
reader writes slices of the chunks it is given with ``os.write`` and nothing else, and it
only has to understand what ``pg_basebackup`` writes.

What is accepted (anything else fails the restore with :class:`UntarError`):

- ustar/GNU headers with a valid checksum; names from ``name``/``prefix``, a GNU long name
  (``L``) or a pax ``path`` record (``x``; a pax ``size`` too); global pax headers are
  ignored. Sizes in octal or GNU base-256.
- regular files (``0``, NUL, ``7``), directories (``5``) and symbolic links (``2``).

Safety (the archive was authenticated chunk by chunk, but a restore must not write outside
its folder even then): names must be relative, without ``..``, and may not pass through a
symbolic link the archive created; files are created with ``O_EXCL | O_NOFOLLOW`` (never
through or over an existing entry). Directory modes are applied last, deepest first, so a
read-only directory does not block its own contents. Owners are not restored (the caller
chowns the result to the server's user).

Every chunk is consumed, also after the end-of-archive blocks: the reader behind the chunks
checks the object's final chunk and SHA-256 only when it reaches the end.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

from payapi.core.errors import PayapiError

BLOCK = 512
_REGULAR = frozenset(b"0\x007")

FileDone = Callable[[int], None]


class UntarError(PayapiError):
    """The tar stream is damaged or holds something a restore does not write; one line."""


def _number(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip(b" ")
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise UntarError("bad number in a tar header") from None


def _checksum_ok(header: bytes) -> bool:
    stored = _number(header[148:156])
    blanked = header[:148] + b" " * 8 + header[156:]
    return stored in (sum(blanked), sum(b - 256 if b > 127 else b for b in blanked))


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _pax(data: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(data[pos:space])
        except ValueError:
            raise UntarError("bad pax header") from None
        if length <= 0:
            raise UntarError("bad pax header")
        record = data[space + 1 : pos + length - 1]  # without the trailing newline
        key, eq, value = record.partition(b"=")
        if eq:
            out[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


class _Member:
    __slots__ = ("kind", "link", "mode", "mtime", "name", "size")

    def __init__(self, name: str, kind: int, size: int, mode: int, mtime: int, link: str):
        self.name, self.kind, self.size = name, kind, size
        self.mode, self.mtime, self.link = mode, mtime, link


class Extractor:
    """Feed plaintext chunks with :meth:`feed`, then call :meth:`close`.

    ``on_file`` receives the descriptor of each regular file once all its bytes are
    written, and must close it (e.g. after an ``fsync`` on another thread); by default
    the file is simply closed.
    """

    def __init__(self, dest: Path, *, on_file: FileDone | None = None) -> None:
        self.dest = Path(dest)
        self.on_file = on_file or os.close
        self.files = 0
        self.bytes = 0
        self.ended = False
        self._header = bytearray()
        self._meta = bytearray()  # a pax or long-name member being collected
        self._meta_kind = 0
        self._meta_left = 0
        self._pending: dict[str, str] = {}  # from pax / long-name members, for the next one
        self._fd = -1
        self._left = 0  # data bytes of the current member still to come
        self._pad = 0  # padding after it
        self._current: _Member | None = None
        self._dirs: list[tuple[Path, int, int]] = []
        self._links: set[PurePosixPath] = set()

    # -- names

    def _target(self, name: str) -> tuple[PurePosixPath, Path]:
        rel = PurePosixPath(name)
        if not name or "\0" in name or rel.is_absolute() or ".." in rel.parts:
            raise UntarError(f"refusing tar member {name!r}: not a relative path inside")
        parts = tuple(p for p in rel.parts if p != ".")
        rel = PurePosixPath(*parts) if parts else PurePosixPath(".")
        for parent in rel.parents:
            if parent in self._links:
                raise UntarError(f"refusing tar member {name!r}: it is under a symbolic link")
        return rel, self.dest.joinpath(*rel.parts) if parts else self.dest

    # -- the stream

    def feed(self, chunk: bytes | memoryview) -> None:
        view = memoryview(chunk)
        while view:
            if self.ended:
                return  # the rest is end-of-archive padding; the caller keeps draining
            if self._left:
                n = min(self._left, len(view))
                if self._meta_left:
                    self._meta += view[:n]
                    self._meta_left -= n
                else:
                    self._write(view[:n])
                self._left -= n
                view = view[n:]
                if not self._left:
                    self._member_done()
                continue
            if self._pad:
                n = min(self._pad, len(view))
                self._pad -= n
                view = view[n:]
                continue
            need = BLOCK - len(self._header)
            self._header += view[:need]
            view = view[need:]
            if len(self._header) == BLOCK:
                header = bytes(self._header)
                self._header.clear()
                self._start(header)

    def _write(self, data: memoryview) -> None:
        done = 0
        while done < len(data):
            done += os.write(self._fd, data[done:])
        self.bytes += len(data)

    def _start(self, header: bytes) -> None:
        if header == b"\0" * BLOCK:
            self.ended = True
            return
        if not _checksum_ok(header):
            raise UntarError("tar header checksum mismatch (not a tar stream, or damaged)")
        kind = header[156]
        size = _number(header[124:136])
        pad = -size % BLOCK
        if kind in (ord("x"), ord("L"), ord("g")):
            if size > 1 << 20:
                raise UntarError("tar extension header too large")
            self._meta_kind, self._meta_left = kind, size
            self._meta.clear()
            self._left, self._pad = size, pad
            if not size:
                self._member_done()
            return
        name = _text(header[:100])
        if header[257:262] == b"ustar":
            prefix = _text(header[345:500])
            if prefix:
                name = f"{prefix}/{name}"
        name = self._pending.pop("path", name)
        if "size" in self._pending:
            try:
                size = int(self._pending.pop("size"))
            except ValueError:
                raise UntarError("bad pax size") from None
            pad = -size % BLOCK
        link = self._pending.pop("linkpath", _text(header[157:257]))
        self._pending.clear()
        member = _Member(
            name, kind, size, _number(header[100:108]) & 0o7777, _number(header[136:148]), link
        )
        self._current = member
        # Data of anything but a regular file (there should be none) is skipped.
        self._left, self._pad = (size, pad) if kind in _REGULAR else (0, size + pad)
        rel, path = self._target(name)
        if kind in _REGULAR:
            try:
                self._fd = os.open(
                    path,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o600,
                )
            except FileNotFoundError:  # a parent the archive did not list
                path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(
                    path,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o600,
                )
            if not size:
                self._member_done()
        elif kind == ord("5"):
            if path != self.dest:
                try:
                    path.mkdir(mode=0o700, parents=True)
                except FileExistsError:
                    if not stat.S_ISDIR(os.lstat(path).st_mode):
                        msg = f"tar member {name!r} exists, and not as a directory"
                        raise UntarError(msg) from None
            self._dirs.append((path, member.mode, member.mtime))
        elif kind == ord("2"):
            path.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(link, path)
            self._links.add(rel)
        else:
            raise UntarError(
                f"tar member {name!r} has type {chr(kind)!r}: a restore writes only files, "
                "directories and symbolic links"
            )

    def _member_done(self) -> None:
        if self._meta_kind:
            kind, data = self._meta_kind, bytes(self._meta)
            self._meta_kind = 0
            self._meta.clear()
            if kind == ord("L"):
                self._pending["path"] = _text(data)
            elif kind == ord("x"):
                self._pending.update(_pax(data))
            return  # "g": global pax headers say nothing a restore needs
        member, self._current = self._current, None
        if member is None or member.kind not in _REGULAR:
            return
        fd, self._fd = self._fd, -1
        try:
            os.fchmod(fd, member.mode)
            os.utime(fd, (member.mtime, member.mtime))
        except BaseException:
            os.close(fd)
            raise
        self.files += 1
        self.on_file(fd)

    def close(self) -> None:
        """Check that the stream ended cleanly, then apply directory modes and times."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._left or self._meta_left or self._header:
            raise UntarError("the tar stream ends inside a member")
        for path, mode, mtime in sorted(self._dirs, key=lambda d: len(d[0].parts), reverse=True):
            os.chmod(path, mode)
            os.utime(path, (mtime, mtime))

    def abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def extract(chunks: Iterable[bytes], dest: Path, *, on_file: FileDone | None = None) -> int:
    """Extract the tar in ``chunks`` into ``dest`` (created if missing); returns the
    number of regular files. Every chunk is consumed."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    ex = Extractor(dest, on_file=on_file)
    try:
        for chunk in chunks:
            ex.feed(chunk)
        ex.close()
    except BaseException:
        ex.abort()
        raise
    return ex.files
