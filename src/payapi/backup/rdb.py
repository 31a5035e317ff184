"""A streaming scanner of Redis RDB files: how many keys each database holds, and when they
expire, without loading the values.

Why: a Redis backup must say how many keys its snapshot holds (so that a restore can be
verified against it), and the only exact answer is in the snapshot itself — counting the
live server while clients write gives a different number. The scanner reads the RDB as it
streams past (or from a file), keeps the key names only long enough to classify them, and
skips every value by its encoded length, so memory does not grow with the values.

Invariants:
- Every value type Redis 6.2 writes (RDB version 9) is understood, plus the types of
  Redis 7.x (RDB 10-12). A type it does not know raises :class:`RdbError`; it never
  guesses, because a wrong skip would miscount everything after it.
- The scanner reads nothing past the EOF opcode and its 8-byte checksum; trailing bytes
  are an error (a replication stream is cut exactly at the payload's length).
- The checksum itself is not recomputed here (Redis checks it when it loads the file);
  the repository keeps a SHA-256 of the whole object.
"""

from __future__ import annotations

import bisect
import queue
import struct
from array import array
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from payapi.core.errors import PayapiError
from payapi.eapi.cachekeys import classify_key

__all__ = [
    "RdbError",
    "RdbSummary",
    "classify_key",
    "lzf_decompress",
    "scan_file",
    "scan_stream",
]

MAGIC = b"REDIS"
MAX_SUPPORTED_VERSION = 12

# Opcodes (rdb.h).
OP_SLOT_INFO = 0xF4
OP_FUNCTION2 = 0xF5
OP_FUNCTION_PRE_GA = 0xF6
OP_MODULE_AUX = 0xF7
OP_FREQ = 0xF8
OP_IDLE = 0xF9
OP_AUX = 0xFA
OP_RESIZEDB = 0xFB
OP_EXPIRETIME_MS = 0xFC
OP_EXPIRETIME = 0xFD
OP_SELECTDB = 0xFE
OP_EOF = 0xFF

# Value types.
T_STRING = 0
T_LIST = 1
T_SET = 2
T_ZSET = 3
T_HASH = 4
T_ZSET_2 = 5
T_MODULE = 6
T_MODULE_2 = 7
T_HASH_ZIPMAP = 9
T_LIST_ZIPLIST = 10
T_SET_INTSET = 11
T_ZSET_ZIPLIST = 12
T_HASH_ZIPLIST = 13
T_LIST_QUICKLIST = 14
T_STREAM_LISTPACKS = 15
T_HASH_LISTPACK = 16
T_ZSET_LISTPACK = 17
T_LIST_QUICKLIST_2 = 18
T_STREAM_LISTPACKS_2 = 19
T_SET_LISTPACK = 20
T_STREAM_LISTPACKS_3 = 21

_ONE_STRING = {
    T_STRING,
    T_HASH_ZIPMAP,
    T_LIST_ZIPLIST,
    T_SET_INTSET,
    T_ZSET_ZIPLIST,
    T_HASH_ZIPLIST,
    T_HASH_LISTPACK,
    T_ZSET_LISTPACK,
    T_SET_LISTPACK,
}

# Module value opcodes (RDB_MODULE_OPCODE_*).
_MOD_EOF, _MOD_SINT, _MOD_UINT, _MOD_FLOAT, _MOD_DOUBLE, _MOD_STRING = 0, 1, 2, 3, 4, 5


# Auxiliary fields worth recording (others, such as the replication id, are noise).
_AUX_KEPT = {"redis-ver", "redis-bits", "ctime", "used-mem", "aof-preamble"}


class RdbError(PayapiError):
    """The stream is not an RDB file this scanner understands; one line for the operator."""


def lzf_decompress(data: bytes, expected: int) -> bytes:
    """Decompress an LZF block (Redis compresses strings longer than 20 bytes with it)."""
    out = bytearray()
    i, n = 0, len(data)
    try:
        while i < n:
            ctrl = data[i]
            i += 1
            if ctrl < 32:  # a literal run of ctrl + 1 bytes
                out += data[i : i + ctrl + 1]
                i += ctrl + 1
                continue
            length = ctrl >> 5
            if length == 7:
                length += data[i]
                i += 1
            ref = len(out) - ((ctrl & 0x1F) << 8) - data[i] - 1
            i += 1
            if ref < 0:
                raise RdbError("corrupt LZF string (back reference before the start)")
            for _ in range(length + 2):  # byte by byte: references may overlap
                out.append(out[ref])
                ref += 1
    except IndexError:
        raise RdbError("corrupt LZF string (truncated)") from None
    if len(out) != expected:
        raise RdbError("corrupt LZF string (wrong length)")
    return bytes(out)


class Source(Protocol):
    """Where the scanner reads from: exact reads and skips, EOF is an error."""

    def read(self, n: int) -> bytes: ...

    def skip(self, n: int) -> None: ...


class FileSource:
    def __init__(self, f: BinaryIO) -> None:
        self._f = f

    def read(self, n: int) -> bytes:
        data = self._f.read(n)
        if len(data) != n:
            raise RdbError("the RDB stream ends early (truncated)")
        return data

    def skip(self, n: int) -> None:
        # Read rather than seek, so that a truncated file is noticed here too.
        while n > 0:
            block = self._f.read(min(n, 1 << 20))
            if not block:
                raise RdbError("the RDB stream ends early (truncated)")
            n -= len(block)

    def at_end(self) -> bool:
        return self._f.read(1) == b""


class ChunkPipe:
    """A bounded hand-over of chunks from a producer thread to the scanner (a consumer).

    The producer calls :meth:`put` for each chunk and :meth:`close` once; the scanner reads
    through the :class:`Source` methods. At most ``maxsize`` chunks wait in between, so a
    slow scanner slows the producer down instead of buffering the stream.
    """

    def __init__(self, maxsize: int = 16) -> None:
        self._q: queue.Queue[bytes | None] = queue.Queue(maxsize)
        self._buf = b""
        self._pos = 0
        self._eof = False

    # producer side
    def put(self, chunk: bytes) -> None:
        if chunk:
            self._q.put(bytes(chunk))

    def close(self) -> None:
        self._q.put(None)

    # consumer side
    def _more(self) -> bool:
        if self._eof:
            return False
        chunk = self._q.get()
        if chunk is None:
            self._eof = True
            return False
        self._buf = self._buf[self._pos :] + chunk
        self._pos = 0
        return True

    def read(self, n: int) -> bytes:
        while len(self._buf) - self._pos < n:
            if not self._more():
                raise RdbError("the RDB stream ends early (truncated)")
        data = self._buf[self._pos : self._pos + n]
        self._pos += n
        return data

    def skip(self, n: int) -> None:
        while n > 0:
            avail = len(self._buf) - self._pos
            if avail == 0:
                if not self._more():
                    raise RdbError("the RDB stream ends early (truncated)")
                continue
            take = min(avail, n)
            self._pos += take
            n -= take

    def at_end(self) -> bool:
        if len(self._buf) - self._pos > 0:
            return False
        while self._more():
            if len(self._buf) - self._pos > 0:
                return False
        return True

    def drain(self) -> None:
        """Consume everything until the producer closes (after a scan error)."""
        self._buf, self._pos = b"", 0
        while not self._eof:
            if self._q.get() is None:
                self._eof = True


@dataclass
class DbStats:
    keys: int = 0
    expires: int = 0
    expired: int = 0  # expiry at or before ``as_of``
    resize_keys: int | None = None  # what RESIZEDB announced
    soon: array[int] = field(default_factory=lambda: array("q"))  # expiries after as_of

    def alive_at(self, t_ms: int, as_of: int) -> int:
        """Keys not yet expired at ``t_ms`` (``t_ms`` >= ``as_of``; see :class:`RdbSummary`)."""
        if t_ms < as_of:
            raise ValueError("alive_at() answers for times at or after the scan's as_of")
        return self.keys - self.expired - bisect.bisect_right(self.soon, t_ms)


@dataclass
class RdbSummary:
    """What a snapshot holds, per database (db numbers as ints).

    With ``as_of`` (ms since the epoch) and ``horizon`` the scan also keeps the expiry times
    that fall within ``(as_of, as_of + horizon]``, so that :meth:`alive_at` can say how many
    keys a Redis loading the file at any time in that window should report.
    """

    rdb_version: int
    aux: dict[str, str] = field(default_factory=dict)
    dbs: dict[int, DbStats] = field(default_factory=dict)
    classes: Counter[str] = field(default_factory=Counter)
    bytes: int = 0
    as_of: int | None = None
    horizon_ms: int = 0

    @property
    def total_keys(self) -> int:
        return sum(s.keys for s in self.dbs.values())

    def keys(self) -> dict[int, int]:
        return {db: s.keys for db, s in sorted(self.dbs.items()) if s.keys}

    def expires(self) -> dict[int, int]:
        return {db: s.expires for db, s in sorted(self.dbs.items()) if s.expires}

    def alive_at(self, t_ms: int) -> dict[int, int]:
        """Per database: keys whose expiry has not passed at ``t_ms`` (Redis skips the
        others when it loads the file, and expires them once loaded)."""
        if self.as_of is None:
            raise ValueError("scan with as_of to ask which keys are alive")
        if t_ms > self.as_of + self.horizon_ms:
            raise ValueError("alive_at() beyond the scan's horizon")
        return {db: s.alive_at(t_ms, self.as_of) for db, s in sorted(self.dbs.items())}

    def meta(self) -> dict[str, object]:
        """JSON-ready: db numbers become strings."""
        return {
            "rdb_version": self.rdb_version,
            "keys": {str(db): n for db, n in self.keys().items()},
            "expires": {str(db): n for db, n in self.expires().items()},
            "total_keys": self.total_keys,
            "key_classes": dict(sorted(self.classes.items())),
        }


class _Scanner:
    def __init__(self, src: Source, as_of: int | None, horizon_ms: int) -> None:
        self.src = src
        self.as_of = as_of
        self.horizon_ms = horizon_ms

    # -- primitives ----------------------------------------------------------------

    def byte(self) -> int:
        return self.src.read(1)[0]

    def length(self) -> tuple[int, bool]:
        """(length, is_encoded): rdbLoadLenByRef."""
        b = self.byte()
        kind = b >> 6
        if kind == 0:
            return b & 0x3F, False
        if kind == 1:
            return ((b & 0x3F) << 8) | self.byte(), False
        if kind == 3:
            return b & 0x3F, True
        if b == 0x80:
            return int(struct.unpack(">I", self.src.read(4))[0]), False
        if b == 0x81:
            return int(struct.unpack(">Q", self.src.read(8))[0]), False
        raise RdbError(f"unknown length encoding 0x{b:02x}")

    def plain_length(self) -> int:
        n, encoded = self.length()
        if encoded:
            raise RdbError("an encoded value where a length was expected")
        return n

    def string(self) -> bytes:
        n, encoded = self.length()
        if not encoded:
            return self.src.read(n)
        if n == 0:
            return str(struct.unpack("<b", self.src.read(1))[0]).encode()
        if n == 1:
            return str(struct.unpack("<h", self.src.read(2))[0]).encode()
        if n == 2:
            return str(struct.unpack("<i", self.src.read(4))[0]).encode()
        if n == 3:
            clen = self.plain_length()
            ulen = self.plain_length()
            return lzf_decompress(self.src.read(clen), ulen)
        raise RdbError(f"unknown string encoding {n}")

    def skip_string(self) -> None:
        n, encoded = self.length()
        if not encoded:
            self.src.skip(n)
        elif n in (0, 1, 2):
            self.src.skip((1, 2, 4)[n])
        elif n == 3:
            clen = self.plain_length()
            self.plain_length()
            self.src.skip(clen)
        else:
            raise RdbError(f"unknown string encoding {n}")

    def skip_double(self) -> None:
        n = self.byte()
        if n < 253:  # 253, 254, 255: nan, +inf, -inf
            self.src.skip(n)

    # -- values --------------------------------------------------------------------

    def skip_module_value(self) -> None:
        while True:
            op = self.plain_length()
            if op == _MOD_EOF:
                return
            if op in (_MOD_SINT, _MOD_UINT):
                self.plain_length()
            elif op == _MOD_FLOAT:
                self.src.skip(4)
            elif op == _MOD_DOUBLE:
                self.src.skip(8)
            elif op == _MOD_STRING:
                self.skip_string()
            else:
                raise RdbError(f"unknown module value opcode {op}")

    def skip_stream(self, type_: int) -> None:
        for _ in range(self.plain_length()):  # listpacks: node key + listpack
            self.skip_string()
            self.skip_string()
        self.plain_length()  # length
        self.plain_length()  # last id: ms
        self.plain_length()  # last id: seq
        if type_ >= T_STREAM_LISTPACKS_2:
            for _ in range(5):  # first id (2), max deleted id (2), entries added
                self.plain_length()
        for _ in range(self.plain_length()):  # consumer groups
            self.skip_string()
            self.plain_length()
            self.plain_length()
            if type_ >= T_STREAM_LISTPACKS_2:
                self.plain_length()  # entries read
            for _ in range(self.plain_length()):  # group PEL: id, delivery time, count
                self.src.skip(16 + 8)
                self.plain_length()
            for _ in range(self.plain_length()):  # consumers
                self.skip_string()
                self.src.skip(8)  # seen time
                if type_ >= T_STREAM_LISTPACKS_3:
                    self.src.skip(8)  # active time
                self.src.skip(16 * self.plain_length())  # consumer PEL ids

    def skip_value(self, type_: int) -> None:
        if type_ in _ONE_STRING:
            self.skip_string()
        elif type_ in (T_LIST, T_SET, T_LIST_QUICKLIST):
            for _ in range(self.plain_length()):
                self.skip_string()
        elif type_ == T_LIST_QUICKLIST_2:
            for _ in range(self.plain_length()):
                self.plain_length()  # container kind
                self.skip_string()
        elif type_ == T_HASH:
            for _ in range(self.plain_length()):
                self.skip_string()
                self.skip_string()
        elif type_ == T_ZSET:
            for _ in range(self.plain_length()):
                self.skip_string()
                self.skip_double()
        elif type_ == T_ZSET_2:
            for _ in range(self.plain_length()):
                self.skip_string()
                self.src.skip(8)
        elif type_ == T_MODULE_2:
            self.plain_length()  # module id
            self.skip_module_value()
        elif type_ in (T_STREAM_LISTPACKS, T_STREAM_LISTPACKS_2, T_STREAM_LISTPACKS_3):
            self.skip_stream(type_)
        else:
            raise RdbError(f"unsupported value type {type_} (a newer Redis, or a module v1)")

    # -- the file ------------------------------------------------------------------

    def run(self) -> RdbSummary:
        head = self.src.read(9)
        if head[:5] != MAGIC or not head[5:].isdigit():
            raise RdbError("not an RDB file (bad magic)")
        version = int(head[5:])
        if version < 1 or version > MAX_SUPPORTED_VERSION:
            raise RdbError(f"RDB version {version} is not supported")
        out = RdbSummary(rdb_version=version, as_of=self.as_of, horizon_ms=self.horizon_ms)
        db = 0
        stats = out.dbs.setdefault(db, DbStats())
        expire_ms: int | None = None
        while True:
            op = self.byte()
            if op == OP_EOF:
                if version >= 5:
                    self.src.read(8)  # checksum
                return out
            if op == OP_SELECTDB:
                db = self.plain_length()
                stats = out.dbs.setdefault(db, DbStats())
            elif op == OP_RESIZEDB:
                stats.resize_keys = self.plain_length()
                self.plain_length()
            elif op == OP_AUX:
                k = self.string().decode("utf-8", "replace")
                v = self.string().decode("utf-8", "replace")
                if k in _AUX_KEPT:
                    out.aux[k] = v
            elif op == OP_EXPIRETIME_MS:
                expire_ms = int(struct.unpack("<q", self.src.read(8))[0])
            elif op == OP_EXPIRETIME:
                expire_ms = int(struct.unpack("<i", self.src.read(4))[0]) * 1000
            elif op == OP_IDLE:
                self.plain_length()
            elif op == OP_FREQ:
                self.src.skip(1)
            elif op == OP_MODULE_AUX:
                self.plain_length()  # module id
                self.plain_length()  # when opcode
                self.plain_length()  # when
                self.skip_module_value()
            elif op == OP_FUNCTION2:
                self.skip_string()
            elif op == OP_SLOT_INFO:
                for _ in range(3):
                    self.plain_length()
            elif op == OP_FUNCTION_PRE_GA:
                raise RdbError("RDB with pre-release functions (Redis 7.0 RC) is not supported")
            else:
                key = self.string()
                self.skip_value(op)
                stats.keys += 1
                out.classes[classify_key(key)] += 1
                if expire_ms is not None:
                    stats.expires += 1
                    if self.as_of is not None:
                        if expire_ms <= self.as_of:
                            stats.expired += 1
                        elif expire_ms <= self.as_of + self.horizon_ms:
                            stats.soon.append(expire_ms)
                expire_ms = None


def _finish(summary: RdbSummary, size: int) -> RdbSummary:
    summary.bytes = size
    for db, stats in summary.dbs.items():
        # Redis announces each database's size before its keys (RESIZEDB): a scan that
        # disagrees has misread a value, and every count after it would be wrong.
        if stats.resize_keys is not None and stats.resize_keys != stats.keys:
            raise RdbError(
                f"db{db}: {stats.keys} keys read but the RDB announced {stats.resize_keys}"
            )
        stats.soon = array("q", sorted(stats.soon))
    summary.dbs = {db: s for db, s in summary.dbs.items() if s.keys or s.resize_keys}
    return summary


def scan_source(src: Source, *, as_of: int | None = None, horizon_ms: int = 0) -> RdbSummary:
    return _Scanner(src, as_of, horizon_ms).run()


def scan_file(path: Path | str, *, as_of: int | None = None, horizon_ms: int = 0) -> RdbSummary:
    """Scan an RDB file; with ``as_of`` also note which keys are alive (see RdbSummary)."""
    path = Path(path)
    with open(path, "rb", buffering=1 << 20) as f:
        src = FileSource(f)
        summary = scan_source(src, as_of=as_of, horizon_ms=horizon_ms)
        if not src.at_end():
            raise RdbError("bytes after the end of the RDB file")
    return _finish(summary, path.stat().st_size)


def scan_stream(chunks: Iterable[bytes]) -> RdbSummary:
    """Scan an RDB given as chunks (tests; the backup uses :class:`ChunkPipe`)."""
    pipe = ChunkPipe(maxsize=0)
    size = 0
    for chunk in chunks:
        size += len(chunk)
        pipe.put(chunk)
    pipe.close()
    summary = scan_source(pipe)
    if not pipe.at_end():
        raise RdbError("bytes after the end of the RDB file")
    return _finish(summary, size)


def finish_pipe_scan(summary: RdbSummary, pipe: ChunkPipe, size: int) -> RdbSummary:
    """After :func:`scan_source` on a pipe: check nothing follows, and seal the summary."""
    if not pipe.at_end():
        raise RdbError("bytes after the end of the RDB file")
    return _finish(summary, size)
