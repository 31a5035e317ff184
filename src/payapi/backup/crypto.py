"""Client-side encryption of repository objects: streaming, chunked zstd + AES-256-GCM.

Object format (see ``docs/repository-format.md``)::

    header  = magic "PAYAPIB1" | chunk_size u32 | wrapped data key (60) | salt (16)
    frame*  = length u32 | AES-256-GCM(zstd(chunk)) with its 16-byte tag

Invariants:
- The repository key never encrypts data. It only wraps data keys (one per backup, one per
  WAL segment, one per small metadata object) and seals the key check value in ``config``;
  each of these uses its own HKDF subkey of the repository key.
- Every object gets its own key: HKDF(data key, salt = 16 random bytes, info = the object's
  *context*, e.g. ``data/<backup id>/<name>``). An object copied or renamed to another place
  therefore does not open, and nonces can be a plain counter without ever repeating.
- The nonce of chunk ``i`` is ``i`` (11 bytes, big-endian) followed by a final-chunk flag
  byte, and the header is the associated data of every chunk. Reordered, dropped, duplicated
  or appended chunks, a truncated object and an edited header all fail authentication.
- Memory is bounded by the chunk size (plus zstd's bound), whatever the object size: a
  frame length larger than the header's chunk size allows is refused before it is read.
- Nothing here puts key material or plaintext in an exception message.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import io
import itertools
import os
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NamedTuple

import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

try:
    # The class cryptography.hazmat.primitives.ciphers.aead re-exports, taken where it is
    # defined: importing the public module first imports the whole ciphers package
    # (algorithms, modes, the decrepit ones), about 2.4 ms of every `wal push`. A unit
    # test checks that it is the public class; any other cryptography takes the public way.
    from cryptography.hazmat.bindings._rust import openssl as _rust_openssl

    AESGCM = _rust_openssl.aead.AESGCM
except (ImportError, AttributeError):  # pragma: no cover - another cryptography layout
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from payapi.backup.errors import KeyUnavailable
from payapi.core.errors import PayapiError

if TYPE_CHECKING:
    from concurrent.futures import Future

    from payapi.backup.wal_prefetch import PreparedSegment

KEY_BYTES = 32
KEY_ENV = "PAYAPI_BACKUP_KEY"
DEFAULT_CHUNK_SIZE = 1 << 20
MIN_CHUNK_SIZE = 1 << 10
MAX_CHUNK_SIZE = 16 << 20
ZSTD_LEVEL = 3
WORKERS_ENV = "PAYAPI_BACKUP_WORKERS"

MAGIC = b"PAYAPIB1"
NONCE_BYTES = 12
TAG_BYTES = 16
SALT_BYTES = 16
WRAPPED_KEY_BYTES = NONCE_BYTES + KEY_BYTES + TAG_BYTES
HEADER_BYTES = len(MAGIC) + 4 + WRAPPED_KEY_BYTES + SALT_BYTES
_LEN = struct.Struct(">I")

_INFO_WRAP = b"payapi-backup/wrap-data-key/v1"
_INFO_CHECK = b"payapi-backup/key-check/v1"
_INFO_OBJECT = b"payapi-backup/object/v1\x00"
_KEY_CHECK_PLAINTEXT = b"payapi backup repository key check v1"

# Keys, nonces and salts come from os.urandom: it is what secrets.token_bytes returns,
# without importing secrets (and random, which it imports) in every `wal push`.


class DecryptError(PayapiError):
    """An object did not authenticate or decode; ``reason`` is a short phrase for the operator."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _hkdf(key: bytes, info: bytes, salt: bytes | None = None) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, info=info).derive(key)


# --- the repository key -----------------------------------------------------------------


def generate_key() -> bytes:
    return os.urandom(KEY_BYTES)


def parse_key(raw: bytes, source: str) -> bytes:
    """Accept exactly 32 raw bytes, their hex, or their base64 (standard or URL-safe)."""
    if len(raw) == KEY_BYTES:
        return bytes(raw)
    text = raw.strip()
    if len(text) == 2 * KEY_BYTES:
        with contextlib.suppress(ValueError):
            return bytes.fromhex(text.decode("ascii"))
    try:
        padded = text + b"=" * (-len(text) % 4)
        decoded = base64.b64decode(padded.replace(b"-", b"+").replace(b"_", b"/"), validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) != KEY_BYTES:
        raise KeyUnavailable(
            f"repository key from {source} is not 32 bytes (raw, hex or base64 encoded)"
        )
    return decoded


def load_repository_key(
    key_file: Path | str | None = None,
    *,
    env: str = KEY_ENV,
    environ: Mapping[str, str] | None = None,
) -> bytes:
    """The repository key from ``key_file`` if given, else from the variable ``env``.

    The key never enters the repository; it is 32 bytes, raw or base64 encoded.
    """
    if key_file is not None:
        path = Path(key_file).expanduser()
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise KeyUnavailable(
                f"cannot read repository key file {path}: {exc.strerror or exc}"
            ) from None
        return parse_key(raw, f"key file {path}")
    env_map = os.environ if environ is None else environ
    value = env_map.get(env)
    if not value:
        raise KeyUnavailable(f"no repository key: set {env} or configure a key file")
    return parse_key(value.encode("utf-8"), f"${env}")


def write_key_file(path: Path | str, key: bytes | None = None) -> bytes:
    """Create a new key file (base64, mode 0600); refuses to overwrite an existing one."""
    key = generate_key() if key is None else key
    if len(key) != KEY_BYTES:
        raise KeyUnavailable("a repository key is 32 bytes")
    target = Path(path).expanduser()
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyUnavailable(f"key file {target} already exists; not overwriting it") from None
    except OSError as exc:
        raise KeyUnavailable(f"cannot create key file {target}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(base64.b64encode(key) + b"\n")
        f.flush()
        os.fsync(f.fileno())
    return key


def key_check_value(repo_key: bytes, repository_id: str) -> str:
    """A known plaintext sealed under a subkey of ``repo_key``: reveals nothing about the key."""
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(_hkdf(repo_key, _INFO_CHECK)).encrypt(
        nonce, _KEY_CHECK_PLAINTEXT, repository_id.encode("utf-8")
    )
    return base64.b64encode(nonce + sealed).decode("ascii")


def check_key(repo_key: bytes, repository_id: str, value: str) -> bool:
    try:
        blob = base64.b64decode(value, validate=True)
        plain = AESGCM(_hkdf(repo_key, _INFO_CHECK)).decrypt(
            blob[:NONCE_BYTES], blob[NONCE_BYTES:], repository_id.encode("utf-8")
        )
    except (InvalidTag, binascii.Error, ValueError):
        return False
    return plain == _KEY_CHECK_PLAINTEXT


# --- data keys ---------------------------------------------------------------------------


class DataKey(NamedTuple):
    """A random data key and its copy wrapped by the repository key (stored in each header).

    A NamedTuple, not a dataclass (``wal push`` does not import dataclasses); its repr
    shows neither field."""

    key: bytes
    wrapped: bytes

    def __repr__(self) -> str:
        return "DataKey()"

    @classmethod
    def new(cls, repo_key: bytes) -> DataKey:
        key = os.urandom(KEY_BYTES)
        nonce = os.urandom(NONCE_BYTES)
        wrapped = nonce + AESGCM(_hkdf(repo_key, _INFO_WRAP)).encrypt(nonce, key, _INFO_WRAP)
        return cls(key=key, wrapped=wrapped)

    @classmethod
    def unwrap(cls, repo_key: bytes, wrapped: bytes) -> DataKey:
        if len(wrapped) != WRAPPED_KEY_BYTES:
            raise DecryptError("malformed wrapped data key")
        try:
            key = AESGCM(_hkdf(repo_key, _INFO_WRAP)).decrypt(
                wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _INFO_WRAP
            )
        except InvalidTag:
            raise DecryptError("data key does not unwrap (wrong key or tampered header)") from None
        return cls(key=key, wrapped=bytes(wrapped))


def _object_cipher(data_key: bytes, salt: bytes, context: str) -> AESGCM:
    return AESGCM(_hkdf(data_key, _INFO_OBJECT + context.encode("utf-8"), salt=salt))


def _nonce(index: int, final: bool) -> bytes:
    return index.to_bytes(NONCE_BYTES - 1, "big") + (b"\x01" if final else b"\x00")


def max_frame_bytes(chunk_size: int) -> int:
    """Upper bound of one stored frame: zstd's compress bound plus the tag, with margin."""
    return chunk_size + (chunk_size >> 7) + 4096 + TAG_BYTES


def _check_chunk_size(chunk_size: int) -> None:
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk size must be between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE}")


# --- streaming ---------------------------------------------------------------------------


def rechunk(source: BinaryIO | Iterable[bytes], size: int) -> Iterator[bytes]:
    """Blocks of exactly ``size`` bytes (the last one shorter) from a stream or an iterable."""
    read = getattr(source, "read", None)
    if callable(read):
        while True:
            block = read(size)
            if not block:
                return
            while len(block) < size:  # short reads from pipes and sockets
                more = read(size - len(block))
                if not more:
                    break
                block += more
            yield bytes(block)
            if len(block) < size:
                return
    else:
        buf = bytearray()
        for piece in source:
            if not buf and len(piece) == size:  # the common case: no copying
                yield bytes(piece)
                continue
            buf += piece
            while len(buf) >= size:
                yield bytes(buf[:size])
                del buf[:size]
        if buf:
            yield bytes(buf)


def default_workers() -> int:
    """Compression threads per object: ``$PAYAPI_BACKUP_WORKERS``, else 2 (at most the
    CPU count). zstd and SHA-256 release the GIL, so they run in parallel for real."""
    raw = os.environ.get(WORKERS_ENV, "")
    if raw.strip().isdigit():
        return max(1, min(int(raw), 64))
    return max(1, min(2, os.cpu_count() or 1))


_local = threading.local()


def _compress(chunk: bytes) -> bytes:
    """zstd of one chunk with this thread's compressor (compressors are not thread-safe)."""
    zstd: zstandard.ZstdCompressor | None = getattr(_local, "zstd", None)
    if zstd is None:
        zstd = _local.zstd = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    return zstd.compress(chunk)


class ObjectEncryptor:
    """Encrypts one object as a stream of stored blocks and measures both sides of it.

    After the generator from :meth:`encrypt` is exhausted, ``size``/``sha256`` describe the
    plaintext and ``stored_size``/``stored_sha256`` the bytes that were yielded for storage.

    An object of more than one chunk is compressed on ``workers`` threads, a few chunks
    ahead of the one being sealed; chunks are hashed, sealed and emitted strictly in order,
    so the stored bytes are exactly those of a sequential run. Memory stays bounded: at
    most ``2 * workers + 1`` chunks are in flight.
    """

    def __init__(
        self,
        data_key: DataKey,
        context: str,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        *,
        workers: int | None = None,
    ) -> None:
        _check_chunk_size(chunk_size)
        self.chunk_size = chunk_size
        self.workers = default_workers() if workers is None else max(1, workers)
        self._salt = os.urandom(SALT_BYTES)
        self._header = MAGIC + _LEN.pack(chunk_size) + data_key.wrapped + self._salt
        self._cipher = _object_cipher(data_key.key, self._salt, context)
        self._zstd = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        self._plain_hash = hashlib.sha256()
        self._stored_hash = hashlib.sha256()
        self.size = 0
        self.stored_size = 0
        self.chunks = 0

    @property
    def sha256(self) -> str:
        return self._plain_hash.hexdigest()

    @property
    def stored_sha256(self) -> str:
        return self._stored_hash.hexdigest()

    def _emit(self, block: bytes) -> bytes:
        self._stored_hash.update(block)
        self.stored_size += len(block)
        return block

    def _take(self, chunk: bytes) -> None:
        self._plain_hash.update(chunk)
        self.size += len(chunk)

    def _seal(self, compressed: bytes, final: bool) -> bytes:
        sealed = self._cipher.encrypt(_nonce(self.chunks, final), compressed, self._header)
        self.chunks += 1
        return self._emit(_LEN.pack(len(sealed)) + sealed)

    def _frame(self, chunk: bytes, final: bool) -> bytes:
        self._take(chunk)
        return self._seal(self._zstd.compress(chunk), final)

    def encrypt(self, source: BinaryIO | Iterable[bytes]) -> Iterator[bytes]:
        yield self._emit(self._header)
        chunks = rechunk(source, self.chunk_size)
        first = next(chunks, None)
        second = next(chunks, None) if first is not None else None
        if first is None or second is None or self.workers == 1:  # sequential, no threads
            pending = b"" if first is None else first
            rest = chunks if second is None else itertools.chain((second,), chunks)
            for chunk in rest:
                yield self._frame(pending, final=False)
                pending = chunk
            yield self._frame(pending, final=True)
            return
        # Imported here: concurrent.futures imports logging (~4 ms), and `wal push`
        # seals chunks prepared on its own thread (encrypt_prepared) without a pool.
        from concurrent.futures import ThreadPoolExecutor

        ahead = 2 * self.workers
        with ThreadPoolExecutor(self.workers, thread_name_prefix="payapi-zstd") as pool:
            window: deque[Future[bytes]] = deque()
            try:
                for piece in itertools.chain((first, second), chunks):
                    self._take(piece)
                    window.append(pool.submit(_compress, piece))
                    while len(window) > ahead:  # not the last chunk: one more follows
                        yield self._seal(window.popleft().result(), final=False)
                while window:
                    compressed = window.popleft().result()
                    yield self._seal(compressed, final=not window)
            finally:
                for future in window:  # stopped early: do not compress the rest
                    future.cancel()

    def encrypt_prepared(self, prepared: PreparedSegment) -> Iterator[bytes]:
        """Like :meth:`encrypt` of the prepared file, from chunks a thread has already
        hashed and compressed (:mod:`payapi.backup.wal_prefetch`): only sealing is left.

        The stored bytes are those :meth:`encrypt` would produce with the same salt; the
        prepared chunk size must be this encryptor's.
        """
        if prepared.chunk_size != self.chunk_size:
            raise ValueError("prepared with another chunk size")
        yield self._emit(self._header)
        for compressed, final in prepared.frames():
            yield self._seal(compressed, final)
        self.size, self._plain_hash = prepared.plaintext()


def encrypt_bytes(
    data: bytes, data_key: DataKey, context: str, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> bytes:
    """A small object (manifest, index, marker) in one piece."""
    return b"".join(ObjectEncryptor(data_key, context, chunk_size).encrypt([data]))


class DecryptingReader(io.RawIOBase):
    """A readable plaintext stream over a stored object, authenticating chunk by chunk.

    Raises :class:`DecryptError` as soon as a chunk fails its tag, the object ends before
    its final chunk, bytes follow the final chunk, or (if given) the plaintext size or
    SHA-256 differ from what the manifest recorded. Holds at most one chunk in memory.
    """

    def __init__(
        self,
        raw: BinaryIO,
        repo_key: bytes,
        context: str,
        *,
        expected_size: int | None = None,
        expected_sha256: str | None = None,
        make_error: Callable[[str], Exception] = DecryptError,
    ) -> None:
        super().__init__()
        self._make_error = make_error
        self._raw = raw
        self._repo_key = repo_key
        self._context = context
        self._expected_size = expected_size
        self._expected_sha256 = expected_sha256
        self._plain_hash = hashlib.sha256()
        self._stored_hash = hashlib.sha256()
        self._zstd = zstandard.ZstdDecompressor()
        self._cipher: AESGCM | None = None
        self._header = b""
        self._chunk_size = 0
        self._index = 0
        self._buf = b""
        self._pos = 0
        self._done = False
        self.size = 0
        self.stored_size = 0

    @property
    def sha256(self) -> str:
        return self._plain_hash.hexdigest()

    @property
    def stored_sha256(self) -> str:
        return self._stored_hash.hexdigest()

    @property
    def finished(self) -> bool:
        """True once the final chunk authenticated and nothing followed it."""
        return self._done

    def readable(self) -> bool:
        return True

    def _read_exact(self, n: int) -> bytes:
        parts: list[bytes] = []
        got = 0
        while got < n:
            piece = self._raw.read(n - got)
            if not piece:
                break
            parts.append(piece)
            got += len(piece)
        data = b"".join(parts)
        self._stored_hash.update(data)
        self.stored_size += len(data)
        return data

    def _start(self) -> None:
        header = self._read_exact(HEADER_BYTES)
        if len(header) < HEADER_BYTES:
            raise DecryptError("truncated header")
        if not header.startswith(MAGIC):
            raise DecryptError("not a payapi repository object (bad magic)")
        pos = len(MAGIC)
        (chunk_size,) = _LEN.unpack_from(header, pos)
        if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
            raise DecryptError("bad chunk size in header")
        pos += _LEN.size
        wrapped = header[pos : pos + WRAPPED_KEY_BYTES]
        salt = header[pos + WRAPPED_KEY_BYTES :]
        data_key = DataKey.unwrap(self._repo_key, wrapped)
        self._cipher = _object_cipher(data_key.key, salt, self._context)
        self._header = header
        self._chunk_size = chunk_size

    def _next_chunk(self) -> None:
        try:
            self._read_next_chunk()
        except DecryptError as exc:
            raise self._make_error(exc.reason) from None

    def _read_next_chunk(self) -> None:
        if self._cipher is None:
            self._start()
        assert self._cipher is not None
        length_bytes = self._read_exact(_LEN.size)
        if len(length_bytes) < _LEN.size:
            raise DecryptError("truncated: ends before its final chunk")
        (length,) = _LEN.unpack(length_bytes)
        if not TAG_BYTES < length <= max_frame_bytes(self._chunk_size):
            raise DecryptError(f"bad frame length at chunk {self._index}")
        sealed = self._read_exact(length)
        if len(sealed) < length:
            raise DecryptError("truncated: ends inside a chunk")
        compressed: bytes | None = None
        final = False
        for final_flag in (False, True):
            try:
                compressed = self._cipher.decrypt(
                    _nonce(self._index, final_flag), sealed, self._header
                )
            except InvalidTag:
                continue
            final = final_flag
            break
        if compressed is None:
            raise DecryptError(f"authentication failed at chunk {self._index}")
        try:
            plain = self._zstd.decompress(compressed, max_output_size=self._chunk_size)
        except zstandard.ZstdError:
            raise DecryptError(f"chunk {self._index} does not decompress") from None
        if len(plain) > self._chunk_size:
            raise DecryptError(f"chunk {self._index} larger than the chunk size")
        self._index += 1
        self._plain_hash.update(plain)
        self.size += len(plain)
        self._buf, self._pos = plain, 0
        if final:
            self._finish()

    def _finish(self) -> None:
        if self._read_exact(1):
            raise DecryptError("trailing data after the final chunk")
        if self._expected_size is not None and self.size != self._expected_size:
            raise DecryptError(f"size {self.size} differs from the recorded {self._expected_size}")
        if self._expected_sha256 is not None and self.sha256 != self._expected_sha256:
            raise DecryptError("SHA-256 of the plaintext differs from the manifest")
        self._done = True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        while self._pos >= len(self._buf):
            if self._done:
                return 0
            self._next_chunk()
        n = min(len(b), len(self._buf) - self._pos)
        b[:n] = self._buf[self._pos : self._pos + n]
        self._pos += n
        if self._pos >= len(self._buf):
            self._buf, self._pos = b"", 0
        return n

    def read_chunks(self) -> Iterator[bytes]:
        """The remaining plaintext, one chunk at a time (no copy into caller buffers)."""
        while True:
            if self._pos < len(self._buf):
                chunk = self._buf[self._pos :]
                self._buf, self._pos = b"", 0
                yield chunk
            if self._done:
                return
            self._next_chunk()

    def drain(self) -> None:
        """Read to the end, checking every chunk; used by verification."""
        for _ in self.read_chunks():
            pass

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


def decrypt_bytes(data: bytes, repo_key: bytes, context: str) -> bytes:
    reader = DecryptingReader(io.BytesIO(data), repo_key, context)
    return b"".join(reader.read_chunks())
