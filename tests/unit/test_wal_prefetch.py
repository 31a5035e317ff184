"""`wal push` reads, hashes and compresses its segment on a thread while it starts up
(payapi.backup.wal_prefetch): the stored bytes, the checksums and the failure semantics
are exactly those of reading the file in the push itself."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

import payapi.backup.crypto as crypto
from payapi.backup import wal
from payapi.backup.crypto import MIN_CHUNK_SIZE, DataKey, ObjectEncryptor, decrypt_bytes
from payapi.backup.errors import WalConflict
from payapi.backup.repository_base import RepositoryBase
from payapi.backup.wal_prefetch import PreparedSegment, prefetch_for_argv
from payapi.systems.objectstore.file import FileStore

CHUNK = MIN_CHUNK_SIZE * 4
CTX = "wal/000000010000000000000001"
SEGMENT = "000000010000000000000001"


def test_constants_are_the_encryptors() -> None:
    import payapi.backup.wal_prefetch as prefetch

    assert prefetch.DEFAULT_CHUNK_SIZE == crypto.DEFAULT_CHUNK_SIZE
    assert prefetch.ZSTD_LEVEL == crypto.ZSTD_LEVEL


@pytest.mark.parametrize("size", [0, 1, CHUNK, CHUNK + 1, 2 * CHUNK, 25 * CHUNK + 3])
def test_prepared_segment_stores_the_bytes_of_a_sequential_run(
    tmp_path: Path, size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = (os.urandom(size // 3) + b"payment " * size)[:size]
    path = tmp_path / SEGMENT
    path.write_bytes(data)
    repo_key = crypto.generate_key()
    monkeypatch.setattr(crypto.os, "urandom", lambda n: b"\x07" * n)
    key = DataKey.new(repo_key)
    plain = ObjectEncryptor(key, CTX, CHUNK, workers=1)
    want = b"".join(plain.encrypt(path.open("rb")))
    # max_ahead smaller than a frame: the reader waits for the sealer at every chunk
    prepared = PreparedSegment(path, CHUNK, max_ahead=1)
    enc = ObjectEncryptor(key, CTX, CHUNK)
    got = b"".join(enc.encrypt_prepared(prepared))
    assert got == want
    assert (enc.size, enc.sha256, enc.chunks) == (plain.size, plain.sha256, plain.chunks)
    assert (enc.stored_size, enc.stored_sha256) == (plain.stored_size, plain.stored_sha256)
    assert prepared.digest() == (size, hashlib.sha256(data).hexdigest())
    monkeypatch.undo()
    assert decrypt_bytes(got, repo_key, CTX) == data


def test_digest_instead_of_frames_stops_compressing(tmp_path: Path) -> None:
    path = tmp_path / SEGMENT
    data = os.urandom(40 * CHUNK)  # incompressible: the reader would fill max_ahead
    path.write_bytes(data)
    prepared = PreparedSegment(path, CHUNK, max_ahead=2 * CHUNK)
    assert prepared.digest() == (len(data), hashlib.sha256(data).hexdigest())
    with pytest.raises(RuntimeError, match="read once"):
        next(prepared.frames())


def test_a_read_error_reaches_the_push(tmp_path: Path) -> None:
    prepared = PreparedSegment(tmp_path / "missing", CHUNK)
    with pytest.raises(FileNotFoundError):
        next(prepared.frames())
    with pytest.raises(FileNotFoundError):
        PreparedSegment(tmp_path / "missing", CHUNK).digest()


def test_cancel_ends_the_thread(tmp_path: Path) -> None:
    path = tmp_path / SEGMENT
    path.write_bytes(os.urandom(64 * CHUNK))
    prepared = PreparedSegment(path, CHUNK, max_ahead=CHUNK)
    prepared.cancel()
    prepared._thread.join(timeout=10)
    assert not prepared._thread.is_alive()


def _repo(tmp_path: Path, chunk_size: int = CHUNK) -> RepositoryBase:
    repo = RepositoryBase(FileStore(tmp_path / "repo"), crypto.generate_key())
    repo.init(chunk_size=chunk_size)
    return repo


def test_put_wal_with_a_prepared_segment_keeps_the_semantics(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    seg = tmp_path / SEGMENT
    seg.write_bytes(b"wal record " * 5000)
    assert repo.put_wal(SEGMENT, seg, prepared=PreparedSegment(seg, CHUNK)) is True
    entry = repo.wal_entry(SEGMENT)
    assert (entry.size, entry.sha256) == (
        seg.stat().st_size,
        hashlib.sha256(seg.read_bytes()).hexdigest(),
    )
    # the same content again: accepted, nothing changes (the prepared digest decides)
    stored = (tmp_path / "repo" / "wal" / SEGMENT).read_bytes()
    assert repo.put_wal(SEGMENT, seg, prepared=PreparedSegment(seg, CHUNK)) is False
    assert (tmp_path / "repo" / "wal" / SEGMENT).read_bytes() == stored
    # different content under the archived name: refused
    other = tmp_path / "other"
    other.write_bytes(b"something else " * 5000)
    with pytest.raises(WalConflict):
        repo.put_wal(SEGMENT, other, prepared=PreparedSegment(other, CHUNK))
    dest = tmp_path / "fetched"
    repo.get_wal(SEGMENT, dest)
    assert dest.read_bytes() == seg.read_bytes()


def test_put_wal_reads_the_file_when_the_chunk_size_differs(tmp_path: Path) -> None:
    repo = _repo(tmp_path, chunk_size=2 * CHUNK)
    seg = tmp_path / SEGMENT
    seg.write_bytes(os.urandom(5 * CHUNK))
    prepared = PreparedSegment(seg, CHUNK)
    assert repo.put_wal(SEGMENT, seg, prepared=prepared) is True
    dest = tmp_path / "fetched"
    repo.get_wal(SEGMENT, dest)
    assert dest.read_bytes() == seg.read_bytes()


def test_prefetch_guesses_only_a_plain_push() -> None:
    got = prefetch_for_argv(["--config", "/nonexistent/c.toml", "wal", "push", "/nonexistent/X"])
    assert got is not None and got.path == "/nonexistent/X"
    got.cancel()
    assert prefetch_for_argv(["wal", "push"]) is None
    assert prefetch_for_argv(["wal", "push", "--help"]) is None
    assert prefetch_for_argv(["wal", "fetch", "A", "B"]) is None
    assert prefetch_for_argv(["backup", "run"]) is None


def test_fast_path_cancels_a_guess_for_another_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[PreparedSegment | None] = []
    monkeypatch.setattr(wal, "run", lambda inv, prepared=None: seen.append(prepared) or 0)
    guess = PreparedSegment(tmp_path / "guessed", CHUNK)
    with pytest.raises(SystemExit):
        wal.fast_path(["wal", "push", str(tmp_path / SEGMENT)], prepared=guess)
    assert guess._hash_only  # cancelled
    assert seen[0] is not None and seen[0].path == str(tmp_path / SEGMENT)
    seen[0].cancel()
    # not a push at all: cancelled, and the full CLI gets the command line
    other = PreparedSegment(tmp_path / "guessed", CHUNK)
    assert wal.fast_path(["wal", "push", "--help"], prepared=other) is None
    assert other._hash_only
