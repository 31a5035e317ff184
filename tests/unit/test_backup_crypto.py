"""Chunked zstd + AES-256-GCM objects: round trips, and every kind of tampering fails."""

from __future__ import annotations

import base64
import io
import os
import struct
from pathlib import Path

import pytest

from payapi.backup.crypto import (
    HEADER_BYTES,
    KEY_BYTES,
    MIN_CHUNK_SIZE,
    DataKey,
    DecryptError,
    DecryptingReader,
    ObjectEncryptor,
    check_key,
    decrypt_bytes,
    encrypt_bytes,
    generate_key,
    key_check_value,
    load_repository_key,
    parse_key,
    rechunk,
    write_key_file,
)
from payapi.backup.errors import KeyUnavailable

CHUNK = MIN_CHUNK_SIZE * 4  # 4 KiB: many chunks from small inputs
CTX = "data/20261127T014500Z-db-full-abcdef/base.tar"


@pytest.fixture
def repo_key() -> bytes:
    return generate_key()


def _encrypt(repo_key: bytes, data: bytes, context: str = CTX) -> bytes:
    return encrypt_bytes(data, DataKey.new(repo_key), context, CHUNK)


def _decrypt(repo_key: bytes, blob: bytes, context: str = CTX) -> bytes:
    return decrypt_bytes(blob, repo_key, context)


def _frames(blob: bytes) -> tuple[bytes, list[bytes]]:
    """Split a stored object into its header and its length-prefixed frames."""
    header, pos, frames = blob[:HEADER_BYTES], HEADER_BYTES, []
    while pos < len(blob):
        (n,) = struct.unpack_from(">I", blob, pos)
        frames.append(blob[pos : pos + 4 + n])
        pos += 4 + n
    return header, frames


@pytest.mark.parametrize(
    "size", [0, 1, 100, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 10 * CHUNK + 17]
)
def test_round_trip_sizes(repo_key: bytes, size: int) -> None:
    data = os.urandom(size // 2) + b"a" * (size - size // 2)
    blob = _encrypt(repo_key, data)
    assert _decrypt(repo_key, blob) == data
    _header, frames = _frames(blob)
    assert len(frames) == max(1, -(-size // CHUNK))


def test_encryptor_measures_both_sides(repo_key: bytes) -> None:
    import hashlib

    data = b"payment " * 5000
    enc = ObjectEncryptor(DataKey.new(repo_key), CTX, CHUNK)
    stored = b"".join(enc.encrypt(io.BytesIO(data)))
    assert (enc.size, enc.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert (enc.stored_size, enc.stored_sha256) == (
        len(stored),
        hashlib.sha256(stored).hexdigest(),
    )
    assert enc.stored_size < enc.size  # compressed before encryption
    reader = DecryptingReader(io.BytesIO(stored), repo_key, CTX)
    assert reader.read() == data
    assert reader.finished and reader.stored_sha256 == enc.stored_sha256


def test_iterable_and_stream_sources_agree(repo_key: bytes) -> None:
    data = os.urandom(3 * CHUNK + 5)
    pieces = [data[i : i + 777] for i in range(0, len(data), 777)]
    for source in (io.BytesIO(data), pieces, iter(pieces)):
        assert (
            _decrypt(
                repo_key,
                b"".join(ObjectEncryptor(DataKey.new(repo_key), CTX, CHUNK).encrypt(source)),
            )
            == data
        )


def test_rechunk_exact_blocks() -> None:
    assert list(rechunk([b"ab", b"cde", b"f"], 2)) == [b"ab", b"cd", b"ef"]
    assert list(rechunk(io.BytesIO(b"abcde"), 2)) == [b"ab", b"cd", b"e"]
    assert list(rechunk([], 2)) == []


def test_plaintext_not_visible(repo_key: bytes) -> None:
    marker = b"PAYAPI-PLAINTEXT-MARKER-7f3a"
    blob = _encrypt(repo_key, marker * 1000)
    assert marker not in blob
    assert repo_key not in blob


def test_wrong_repository_key(repo_key: bytes) -> None:
    blob = _encrypt(repo_key, b"secret data")
    with pytest.raises(DecryptError, match="unwrap"):
        _decrypt(generate_key(), blob)


def test_object_moved_to_another_place_does_not_open(repo_key: bytes) -> None:
    blob = _encrypt(repo_key, b"data", context="data/a/base.tar")
    with pytest.raises(DecryptError, match="authentication failed"):
        _decrypt(repo_key, blob, context="data/b/base.tar")


def test_flipped_byte_anywhere_is_detected(repo_key: bytes) -> None:
    data = os.urandom(2 * CHUNK + 10)
    blob = _encrypt(repo_key, data)
    for pos in [0, 9, 20, HEADER_BYTES - 1, HEADER_BYTES + 2, HEADER_BYTES + 10, len(blob) - 1]:
        bad = bytearray(blob)
        bad[pos] ^= 0x01
        with pytest.raises(DecryptError):
            _decrypt(repo_key, bytes(bad))


def test_reordered_chunks_fail(repo_key: bytes) -> None:
    blob = _encrypt(repo_key, os.urandom(3 * CHUNK))
    header, frames = _frames(blob)
    swapped = header + frames[1] + frames[0] + frames[2]
    with pytest.raises(DecryptError, match="chunk 0"):
        _decrypt(repo_key, swapped)


def test_dropped_or_duplicated_chunk_fails(repo_key: bytes) -> None:
    blob = _encrypt(repo_key, os.urandom(3 * CHUNK))
    header, frames = _frames(blob)
    with pytest.raises(DecryptError):
        _decrypt(repo_key, header + frames[0] + frames[2])
    with pytest.raises(DecryptError):
        _decrypt(repo_key, header + frames[0] + frames[0] + frames[1] + frames[2])


def test_truncation_at_a_chunk_boundary_fails(repo_key: bytes) -> None:
    """Dropping whole trailing chunks leaves valid frames: the final flag catches it."""
    blob = _encrypt(repo_key, os.urandom(3 * CHUNK))
    header, frames = _frames(blob)
    with pytest.raises(DecryptError, match="truncated"):
        _decrypt(repo_key, header + frames[0] + frames[1])
    with pytest.raises(DecryptError, match="truncated"):
        _decrypt(repo_key, header)


@pytest.mark.parametrize("keep", [0, 10, HEADER_BYTES - 1, HEADER_BYTES + 2, -1, -17, -300])
def test_truncation_anywhere_fails(repo_key: bytes, keep: int) -> None:
    blob = _encrypt(repo_key, os.urandom(2 * CHUNK))
    with pytest.raises(DecryptError, match="truncated"):
        _decrypt(repo_key, blob[:keep])


def test_trailing_data_fails(repo_key: bytes) -> None:
    blob = _encrypt(repo_key, b"abc")
    with pytest.raises(DecryptError, match="trailing"):
        _decrypt(repo_key, blob + b"\x00")
    header, frames = _frames(_encrypt(repo_key, os.urandom(2 * CHUNK)))
    with pytest.raises(DecryptError):  # a frame after the final one
        _decrypt(repo_key, header + frames[0] + frames[1] + frames[1])


def test_absurd_frame_length_refused_before_reading(repo_key: bytes) -> None:
    blob = _encrypt(repo_key, b"abc")
    bad = blob[:HEADER_BYTES] + struct.pack(">I", 2**31) + blob[HEADER_BYTES + 4 :]
    with pytest.raises(DecryptError, match="frame length"):
        _decrypt(repo_key, bad)


def test_expected_size_and_sha_checked_at_the_end(repo_key: bytes) -> None:
    blob = _encrypt(repo_key, b"abc")
    reader = DecryptingReader(io.BytesIO(blob), repo_key, CTX, expected_sha256="0" * 64)
    with pytest.raises(DecryptError, match="SHA-256"):
        reader.read()
    reader = DecryptingReader(io.BytesIO(blob), repo_key, CTX, expected_size=4)
    with pytest.raises(DecryptError, match="size"):
        reader.read()


def test_custom_error_factory(repo_key: bytes) -> None:
    class Boom(Exception):
        pass

    reader = DecryptingReader(io.BytesIO(b"garbage" * 20), repo_key, CTX, make_error=Boom)
    with pytest.raises(Boom, match="magic"):
        reader.read()


def test_key_check_value(repo_key: bytes) -> None:
    value = key_check_value(repo_key, "repo-1")
    assert check_key(repo_key, "repo-1", value)
    assert not check_key(generate_key(), "repo-1", value)
    assert not check_key(repo_key, "repo-2", value)
    assert not check_key(repo_key, "repo-1", "not base64!")
    assert base64.b64encode(repo_key).decode() not in value


def test_data_key_wrapping(repo_key: bytes) -> None:
    dk = DataKey.new(repo_key)
    assert DataKey.unwrap(repo_key, dk.wrapped).key == dk.key
    assert dk.key not in dk.wrapped
    with pytest.raises(DecryptError):
        DataKey.unwrap(generate_key(), dk.wrapped)
    assert dk.key.hex() not in repr(dk)


def test_parse_key_raw_and_base64() -> None:
    key = generate_key()
    assert parse_key(key, "x") == key
    assert parse_key(base64.b64encode(key) + b"\n", "x") == key
    assert parse_key(base64.urlsafe_b64encode(key).rstrip(b"="), "x") == key
    assert parse_key(key.hex().encode() + b"\n", "x") == key
    for bad in (b"", b"short", base64.b64encode(os.urandom(16)), b"!" * 44):
        with pytest.raises(KeyUnavailable, match="not 32 bytes") as exc:
            parse_key(bad, "x")
        assert bad.decode(errors="replace") not in str(exc.value) or not bad


def test_load_repository_key_from_file_and_env(tmp_path: Path) -> None:
    key = generate_key()
    path = tmp_path / "repo.key"
    assert write_key_file(path, key) == key
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert load_repository_key(path) == key
    with pytest.raises(KeyUnavailable, match="already exists"):
        write_key_file(path)
    env = {"PAYAPI_BACKUP_KEY": base64.b64encode(key).decode()}
    assert load_repository_key(environ=env) == key
    with pytest.raises(KeyUnavailable, match="PAYAPI_BACKUP_KEY"):
        load_repository_key(environ={})
    with pytest.raises(KeyUnavailable, match="cannot read"):
        load_repository_key(tmp_path / "missing.key")
    raw_path = tmp_path / "raw.key"
    raw_path.write_bytes(key)
    assert load_repository_key(raw_path) == key
    assert len(generate_key()) == KEY_BYTES


@pytest.mark.parametrize("size", [0, CHUNK, CHUNK + 1, 2 * CHUNK, 25 * CHUNK + 3])
def test_threaded_compression_stores_the_same_bytes(
    repo_key: bytes, size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Same salt, same data key: workers may only change the speed, never the bytes.
    import payapi.backup.crypto as crypto

    data = (os.urandom(size // 3) + b"payment " * size)[:size]
    monkeypatch.setattr(crypto.os, "urandom", lambda n: b"\x07" * n)
    key = DataKey.new(repo_key)
    outputs = []
    for workers in (1, 2, 4):
        enc = ObjectEncryptor(key, CTX, CHUNK, workers=workers)
        outputs.append((b"".join(enc.encrypt(io.BytesIO(data))), enc.size, enc.chunks))
    assert outputs[0] == outputs[1] == outputs[2]
    assert _decrypt(repo_key, outputs[0][0]) == data


def test_threaded_encryptor_stops_when_the_consumer_stops(repo_key: bytes) -> None:
    enc = ObjectEncryptor(DataKey.new(repo_key), CTX, CHUNK, workers=2)
    stream = enc.encrypt(io.BytesIO(os.urandom(50 * CHUNK)))
    next(stream), next(stream)  # header and first frame
    stream.close()  # e.g. the store failed: the pool shuts down, nothing hangs
    assert enc.chunks == 1


def test_rechunk_passes_exact_blocks_through_and_mixes_others() -> None:
    block = b"x" * 4
    out = list(rechunk([block, b"ab", b"cdef", block, b"g"], 4))
    assert out == [block, b"abcd", b"efxx", b"xxg"]
    assert out[0] is block


def test_aesgcm_is_cryptographys_public_class() -> None:
    # crypto takes AESGCM from cryptography's Rust binding (cheaper to import for wal
    # push): it must be the very class the public module exports.
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    import payapi.backup.crypto as crypto

    assert crypto.AESGCM is AESGCM
