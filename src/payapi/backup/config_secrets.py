"""Secret values in a configuration export: every value under a Kubernetes Secret's
``data``/``stringData`` becomes an AES-256-GCM envelope ``ENC[AES256_GCM,data:…,iv:…,
tag:…,type:str]`` (the shape sops uses), keyed from the backup repository key, bound to
its place, with a synthetic IV so an unchanged value gives an unchanged envelope. See
:mod:`payapi.backup.config_export` for why."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable, Sequence
from typing import Any

import yaml
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from payapi.backup.config_format import (
    ConfigBackupError,
)

_ENVELOPE = re.compile(
    r"^ENC\[AES256_GCM,data:([A-Za-z0-9+/=]*),iv:([A-Za-z0-9+/=]+),"
    r"tag:([A-Za-z0-9+/=]+),type:str\]$"
)
HKDF_INFO = b"payapi-config-export/secret-values/v1"


# --------------------------------------------------------------------------- secret values


class SecretBox:
    """Per-value AES-256-GCM envelopes under a key derived from the repository key."""

    def __init__(self, repository_key: bytes) -> None:
        material = HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=HKDF_INFO).derive(
            repository_key
        )
        self._aead = AESGCM(material[:32])
        self._mac_key = material[32:]
        self.key_id = hmac.new(self._mac_key, b"key-id", hashlib.sha256).hexdigest()[:16]

    def _iv(self, context: str, plaintext: bytes) -> bytes:
        msg = b"iv\x00" + context.encode("utf-8") + b"\x00" + plaintext
        return hmac.new(self._mac_key, msg, hashlib.sha256).digest()[:12]

    def fingerprint(self, context: str, content: bytes) -> str:
        msg = b"fingerprint\x00" + context.encode("utf-8") + b"\x00" + content
        return hmac.new(self._mac_key, msg, hashlib.sha256).hexdigest()[:32]

    def encrypt(self, context: str, value: str) -> str:
        plaintext = value.encode("utf-8")
        iv = self._iv(context, plaintext)
        sealed = self._aead.encrypt(iv, plaintext, context.encode("utf-8"))
        data, tag = sealed[:-16], sealed[-16:]

        def b64(b: bytes) -> str:
            return base64.b64encode(b).decode("ascii")

        return f"ENC[AES256_GCM,data:{b64(data)},iv:{b64(iv)},tag:{b64(tag)},type:str]"

    def decrypt(self, context: str, envelope: str) -> str:
        m = _ENVELOPE.match(envelope)
        if not m:
            raise ConfigBackupError(f"{context}: not an encrypted value")
        data, iv, tag = (base64.b64decode(g) for g in m.groups())
        try:
            plain = self._aead.decrypt(iv, data + tag, context.encode("utf-8"))
        except InvalidTag:
            raise ConfigBackupError(
                f"{context}: the value does not decrypt (wrong repository key, or moved)"
            ) from None
        return plain.decode("utf-8")


def is_envelope(value: object) -> bool:
    return isinstance(value, str) and _ENVELOPE.match(value) is not None


def is_secret_doc(doc: object) -> bool:
    return isinstance(doc, dict) and doc.get("kind") == "Secret"


def _secret_values(doc: dict[str, Any], place: str, fn: Callable[[str, str], str]) -> int:
    """Apply ``fn(context, value)`` to every value of ``data``/``stringData``; count them."""
    n = 0
    for fld in ("data", "stringData"):
        values = doc.get(fld)
        if not isinstance(values, dict):
            continue
        for key in sorted(values):
            value = values[key]
            if isinstance(value, str):
                values[key] = fn(f"{place}/{fld}/{key}", value)
                n += 1
    return n


def encrypt_secret_doc(doc: dict[str, Any], place: str, box: SecretBox) -> int:
    def enc(context: str, value: str) -> str:
        return value if is_envelope(value) else box.encrypt(context, value)

    return _secret_values(doc, place, enc)


def decrypt_secret_doc(doc: dict[str, Any], place: str, box: SecretBox) -> int:
    def dec(context: str, value: str) -> str:
        return box.decrypt(context, value) if is_envelope(value) else value

    return _secret_values(doc, place, dec)


def dump_yaml(doc: Any) -> bytes:
    text = yaml.safe_dump(
        doc, sort_keys=True, default_flow_style=False, allow_unicode=True, width=4096
    )
    return text.encode("utf-8")


def dump_yaml_all(docs: Sequence[Any]) -> bytes:
    text = yaml.safe_dump_all(
        docs, sort_keys=True, default_flow_style=False, allow_unicode=True, width=4096
    )
    return text.encode("utf-8")
