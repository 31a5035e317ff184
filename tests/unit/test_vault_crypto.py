"""Crypto round trips, the data-key formats, and API key hashing."""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

import pytest

from payapi.core.settings import VaultSettings
from payapi.vault.crypto import (
    DataKeyError,
    DecryptionError,
    SecretCipher,
    api_key_matches,
    generate_data_key_file,
    hash_api_key,
    key_check_value,
    load_data_key,
    new_api_key,
    parse_data_key,
)


def test_seal_open_round_trip_with_fresh_nonces() -> None:
    cipher = SecretCipher.from_data_key(secrets.token_bytes(32))
    a = cipher.seal("acme:variable:x", 1, b"value")
    b = cipher.seal("acme:variable:x", 1, b"value")
    assert a != b  # a random nonce per value
    assert b"value" not in a
    assert cipher.open("acme:variable:x", 1, a) == b"value"
    assert cipher.open("acme:variable:x", 1, cipher.seal("acme:variable:x", 1, b"")) == b""


def test_ciphertext_is_bound_to_id_version_and_key() -> None:
    key = secrets.token_bytes(32)
    sealed = SecretCipher.from_data_key(key).seal("acme:variable:x", 3, b"v")
    cipher = SecretCipher.from_data_key(key)
    for rid, version in (("acme:variable:y", 3), ("acme:variable:x", 4)):
        with pytest.raises(DecryptionError):
            cipher.open(rid, version, sealed)
    with pytest.raises(DecryptionError, match="wrong key"):
        SecretCipher.from_data_key(secrets.token_bytes(32)).open("acme:variable:x", 3, sealed)
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(DecryptionError):
        cipher.open("acme:variable:x", 3, tampered)
    with pytest.raises(DecryptionError, match="unknown format"):
        cipher.open("acme:variable:x", 3, b"\x02" + sealed[1:])


def test_data_key_formats() -> None:
    raw = secrets.token_bytes(32)
    assert parse_data_key(base64.b64encode(raw) + b"\n", "f") == raw
    assert parse_data_key(raw, "f") == raw
    with pytest.raises(DataKeyError, match="32 are required"):
        parse_data_key(base64.b64encode(b"x" * 16), "f")
    with pytest.raises(DataKeyError, match="neither base64"):
        parse_data_key(b"not base64 and not 32 bytes", "f")


def test_error_messages_never_contain_the_key(tmp_path: Path) -> None:
    bad = "A" * 20 + "!"
    with pytest.raises(DataKeyError) as err:
        parse_data_key(bad.encode(), "$VAR")
    assert bad not in str(err.value)


def test_generate_and_load_key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = generate_data_key_file(tmp_path / "keys" / "data.key")
    assert path.stat().st_mode & 0o777 == 0o600
    key = load_data_key(VaultSettings(data_key_file=path))
    assert len(key) == 32
    with pytest.raises(DataKeyError, match="refusing to overwrite"):
        generate_data_key_file(path)
    # The environment variable is used when no file is configured.
    env = "PAYAPI_TEST_KEY_" + os.urandom(4).hex()
    monkeypatch.setenv(env, base64.b64encode(key).decode())
    assert load_data_key(VaultSettings(data_key_env=env)) == key
    # A configured file wins, and a missing one is an error (no fallback).
    with pytest.raises(DataKeyError, match="not found"):
        load_data_key(VaultSettings(data_key_file=tmp_path / "none", data_key_env=env))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(DataKeyError, match="empty"):
        load_data_key(VaultSettings(data_key_file=tmp_path / "empty"))


def test_key_check_value_is_stable_and_distinct() -> None:
    k1, k2 = secrets.token_bytes(32), secrets.token_bytes(32)
    assert key_check_value(k1) == key_check_value(k1)
    assert key_check_value(k1) != key_check_value(k2)
    assert k1.hex() not in key_check_value(k1)


def test_api_keys() -> None:
    key = new_api_key()
    assert len(key) == 52 and key.isalnum() and key == key.lower()
    assert new_api_key() != key
    stored = hash_api_key(key)
    assert api_key_matches(key, stored)
    assert not api_key_matches(key + "x", stored)
