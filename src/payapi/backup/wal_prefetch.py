"""Read, hash and compress a WAL segment on a thread while ``wal push`` starts up.

A push is one process per 16 MB segment: about half of it is the interpreter starting
and importing (GIL-bound), the other half is reading, SHA-256 and zstd of the segment,
which release the GIL. :class:`PreparedSegment` starts that second half on a thread as
soon as the command line is parsed, so that on two cores it runs while the rest of the
push is still importing cryptography and opening the repository.

It produces exactly what :class:`payapi.backup.crypto.ObjectEncryptor` would: chunks of
``chunk_size`` plaintext bytes (the last one shorter; an empty file is one empty chunk),
each compressed on its own with zstd at :data:`ZSTD_LEVEL`, the SHA-256 and size of the
plaintext. The encryptor then only seals and frames them
(:meth:`~payapi.backup.crypto.ObjectEncryptor.encrypt_prepared`), so the stored object
is byte-for-byte what a sequential run would store, under the same per-object key.

This module imports only the standard library and zstandard (not cryptography, not the
repository): it is imported before them. Memory stays bounded: compressed chunks
wait to be sealed up to ``max_ahead`` bytes (and at least two, the sealer's look-ahead),
plus the one chunk being read.

Failure semantics are those of reading the file in the push itself: an error while
reading is raised by :meth:`frames` / :meth:`digest` to the push, which then fails and
stores nothing (the store writes to a temp name, renamed only when complete). The thread
is a daemon: a push that fails early exits without waiting for it.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import deque
from collections.abc import Iterator, Sequence

DEFAULT_CHUNK_SIZE = 1 << 20  # = payapi.backup.crypto.DEFAULT_CHUNK_SIZE (a test checks)
ZSTD_LEVEL = 3  # = payapi.backup.crypto.ZSTD_LEVEL (a test checks)
MAX_AHEAD_BYTES = 4 << 20


class PreparedSegment:
    """One file, read once on a thread: its compressed chunks, size and SHA-256.

    Single use: :meth:`frames` can be iterated once; :meth:`digest` may be called
    instead of it (then nothing more is compressed) or after it has ended.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        *,
        max_ahead: int = MAX_AHEAD_BYTES,
    ) -> None:
        self.path = os.fspath(path)
        self.chunk_size = chunk_size
        self.size = 0
        self._max_ahead = max_ahead
        self._hash = hashlib.sha256()
        self._cond = threading.Condition()
        self._frames: deque[bytes] = deque()
        self._ahead = 0
        self._done = False
        self._hash_only = False
        self._cancelled = False
        self._taken = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="payapi-wal-read", daemon=True)
        self._thread.start()

    # --- the thread --------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._produce()
        except BaseException as exc:  # handed to the push, which reports it
            self._error = exc
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def _produce(self) -> None:
        import zstandard

        zstd = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        size = self.chunk_size
        buf = bytearray(size)
        view = memoryview(buf)
        with open(self.path, "rb", buffering=0) as f:
            first = True
            while True:
                got = 0
                while got < size:  # short reads: keep reading until full or at the end
                    n = f.readinto(view[got:])
                    if not n:
                        break
                    got += n
                if not got and not first:  # a file of exactly N chunks is N frames
                    return
                first = False
                chunk = view[:got]
                self._hash.update(chunk)
                self.size += got
                if not self._hash_only:
                    self._queue(zstd.compress(chunk))
                if self._cancelled or got < size:
                    return

    def _queue(self, frame: bytes) -> None:
        with self._cond:
            # The sealer needs two frames to know whether the first is the final one, so
            # the reader never waits with fewer than two queued.
            while self._ahead >= self._max_ahead and len(self._frames) >= 2 and not self._hash_only:
                self._cond.wait()
            if not self._hash_only:
                self._frames.append(frame)
                self._ahead += len(frame)
                self._cond.notify_all()

    # --- the push ----------------------------------------------------------------------

    def frames(self) -> Iterator[tuple[bytes, bool]]:
        """The compressed chunks in order, each with whether it is the final one."""
        if self._taken or self._hash_only:
            raise RuntimeError("a prepared segment is read once")
        self._taken = True
        while True:
            with self._cond:
                while not self._done and len(self._frames) < 2 and not self._hash_only:
                    self._cond.wait()
                if self._hash_only:
                    raise RuntimeError("a prepared segment is read once")
                if self._error is not None:
                    raise self._error
                if not self._frames:  # cannot happen: a file is at least one chunk
                    raise RuntimeError("prepared segment ended without a final chunk")
                frame = self._frames.popleft()
                self._ahead -= len(frame)
                final = self._done and not self._frames
                self._cond.notify_all()
            yield frame, final
            if final:
                return

    def digest(self) -> tuple[int, str]:
        """Size and SHA-256 (hex) of the whole file; stops compressing what is left."""
        with self._cond:
            self._hash_only = True  # frames() cannot be used (or go on) after this
            self._frames.clear()
            self._ahead = 0
            self._cond.notify_all()
            while not self._done:
                self._cond.wait()
        if self._error is not None:
            raise self._error
        return self.size, self._hash.hexdigest()

    def plaintext(self) -> tuple[int, hashlib._Hash]:
        """Size and hash object of the plaintext, once :meth:`frames` has ended."""
        if not self._done or self._error is not None:
            raise RuntimeError("the prepared segment is not complete")
        return self.size, self._hash

    def cancel(self) -> None:
        """Stop the thread at its next chunk (the push does not use it after all)."""
        with self._cond:
            self._cancelled = True
            self._hash_only = True
            self._frames.clear()
            self._ahead = 0
            self._cond.notify_all()


def prefetch_for_argv(argv: Sequence[str]) -> PreparedSegment | None:
    """Start reading the segment of what looks like ``[--config C] wal push [opts] PATH``.

    Called first thing by the entry points, before even :mod:`payapi.backup.wal` is
    imported, so that the thread starts at once. It only guesses (the path is the last
    word); :func:`payapi.backup.wal.fast_path` parses the line properly and uses the
    prepared segment only if its path is the one it archives, cancelling it otherwise.
    """
    words = list(argv)
    for i in range(len(words) - 2):
        if words[i] == "wal" and words[i + 1] == "push":
            path = words[-1]
            if i + 2 < len(words) and not path.startswith("-"):
                return PreparedSegment(path)
            return None
    return None
