"""The vault's cryptography: the data key, secrets at rest, API keys.

Invariants:
- The 32-byte data key lives outside the database (a key file or an environment
  variable). The database holds only a one-way *check value* derived from it, so that a
  vault started with the wrong key refuses to start instead of failing later, secret by
  secret.
- Every secret version is sealed with AES-256-GCM under a key derived from the data key,
  with a fresh random 96-bit nonce and associated data binding the resource id and the
  version: a ciphertext copied onto another variable or another version does not open.
- API keys are 256-bit random strings; only their SHA-256 is stored. A fast hash is right
  here (unlike passwords) because the input has full entropy, so nothing is gained from a
  slow KDF and authentication stays cheap.
- No function here puts key material or plaintext in an exception message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from payapi.core.errors import PayapiError
from payapi.core.settings import ConfigError, VaultSettings

DATA_KEY_BYTES = 32
NONCE_BYTES = 12
# First byte of every sealed value: lets a future format (another cipher, a key id)
# coexist with this one in the same table.
SEAL_FORMAT_V1 = b"\x01"

_INFO_SECRETS = b"payapi-vault/secrets/aes-256-gcm/v1"
_INFO_KEY_CHECK = b"payapi-vault/data-key-check/v1"
_INFO_TOKENS = b"payapi-vault/authn-token/hmac-sha256/v1/"


class DataKeyError(ConfigError):
    """The data key is missing, unreadable or malformed (a startup error for the operator)."""


class DataKeyMismatch(ConfigError):
    """The configured data key is not the key this vault database was sealed with."""


class DecryptionError(PayapiError):
    """A stored secret could not be opened: wrong data key, or the row was tampered with."""


def derive(data_key: bytes, info: bytes, length: int = 32) -> bytes:
    """HKDF-SHA256: one independent subkey per purpose, so no key is used for two jobs."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(data_key)


def parse_data_key(raw: bytes, source: str) -> bytes:
    """Accept base64 (the format ``generate_data_key_file`` writes) or exactly 32 raw bytes.

    ``source`` names where the key came from (a path or a variable name), never its value.
    """
    text = raw.strip()
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        decoded = None
    if decoded is not None and len(decoded) == DATA_KEY_BYTES:
        return decoded
    # Raw bytes are taken exactly as read: stripping could eat a key byte that happens
    # to be whitespace.
    if len(raw) == DATA_KEY_BYTES:
        return raw
    if decoded is not None:
        raise DataKeyError(
            f"vault data key from {source} decodes to {len(decoded)} bytes; "
            f"{DATA_KEY_BYTES} are required"
        )
    raise DataKeyError(
        f"vault data key from {source} is neither base64 nor {DATA_KEY_BYTES} raw bytes"
    )


def load_data_key(settings: VaultSettings) -> bytes:
    """Read the data key from ``settings.data_key_file``, else from ``$data_key_env``.

    A configured file that is missing is an error (no silent fallback to the environment:
    the operator said where the key is).
    """
    path = settings.data_key_file
    if path is not None:
        try:
            raw = Path(path).read_bytes()
        except FileNotFoundError:
            raise DataKeyError(f"vault data key file not found: {path}") from None
        except OSError as exc:
            raise DataKeyError(f"cannot read vault data key file {path}: {exc.strerror}") from None
        if not raw.strip():
            raise DataKeyError(f"vault data key file {path} is empty")
        return parse_data_key(raw, str(path))
    env_name = settings.data_key_env
    value = os.environ.get(env_name, "") if env_name else ""
    if not value.strip():
        raise DataKeyError(
            "no vault data key: set vault.data_key_file or the environment variable "
            f"{env_name or '(vault.data_key_env is empty)'}"
        )
    return parse_data_key(value.encode("utf-8"), f"${env_name}")


def generate_data_key_file(path: str | Path) -> Path:
    """Write a new random data key (base64) to ``path``, mode 0600; never overwrite one.

    Overwriting a data key would make every secret sealed under it unreadable, so an
    existing file is an error, not something to replace.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(DATA_KEY_BYTES)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise DataKeyError(f"refusing to overwrite existing vault data key file {target}") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(base64.b64encode(key) + b"\n")
    os.chmod(target, 0o600)
    return target


def key_check_value(data_key: bytes) -> str:
    """A one-way fingerprint of the data key, stored in the database to detect a wrong key."""
    return derive(data_key, _INFO_KEY_CHECK).hex()


def token_signing_key(data_key: bytes, account: str) -> bytes:
    """One HMAC key per account, like Conjur's one signing key per account."""
    return derive(data_key, _INFO_TOKENS + account.encode("utf-8"))


def _aad(resource_id: str, version: int) -> bytes:
    return b"payapi-vault/secret\x00%s\x00%d" % (resource_id.encode("utf-8"), version)


@dataclass(frozen=True)
class SecretCipher:
    """Seals and opens secret values; holds the derived key, not the data key itself."""

    _key: bytes = field(repr=False)

    @classmethod
    def from_data_key(cls, data_key: bytes) -> SecretCipher:
        if len(data_key) != DATA_KEY_BYTES:
            raise DataKeyError(f"vault data key must be {DATA_KEY_BYTES} bytes")
        return cls(derive(data_key, _INFO_SECRETS))

    def seal(self, resource_id: str, version: int, plaintext: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        ct = AESGCM(self._key).encrypt(nonce, plaintext, _aad(resource_id, version))
        return SEAL_FORMAT_V1 + nonce + ct

    def open(self, resource_id: str, version: int, sealed: bytes) -> bytes:
        if len(sealed) < 1 + NONCE_BYTES + 16 or sealed[:1] != SEAL_FORMAT_V1:
            raise DecryptionError(f"secret {resource_id} version {version}: unknown format")
        nonce = sealed[1 : 1 + NONCE_BYTES]
        try:
            return AESGCM(self._key).decrypt(
                nonce, sealed[1 + NONCE_BYTES :], _aad(resource_id, version)
            )
        except InvalidTag:
            raise DecryptionError(
                f"secret {resource_id} version {version} cannot be decrypted with the "
                "configured data key (wrong key, or the stored row was altered)"
            ) from None


def new_api_key() -> str:
    """A Conjur-like API key: 256 random bits, lowercase base32 (52 characters)."""
    return base64.b32encode(secrets.token_bytes(32)).decode("ascii").rstrip("=").lower()


def hash_api_key(api_key: str) -> bytes:
    return hashlib.sha256(api_key.encode("utf-8")).digest()


def api_key_matches(candidate: str, stored_hash: bytes) -> bool:
    """Constant-time comparison of digests (the candidate's length leaks nothing)."""
    return hmac.compare_digest(hash_api_key(candidate), stored_hash)
