"""Conjur-style access tokens: short-lived, stateless, signed.

The shape is Slosilo's JSON serialization of a JWT, which is what Conjur returns from
``/authn/{account}/{login}/authenticate``::

    {"protected": b64url(header), "payload": b64url(claims), "signature": b64url(sig)}

with claims ``{"sub": login, "iat": ..., "exp": ...}``. Clients send it back base64-encoded
in ``Authorization: Token token="..."``; the official Python client reads ``exp`` from the
payload to know when to re-authenticate.

Conjur signs with an RSA key per account; we sign with HMAC-SHA256 under a key derived
per account from the data key (HKDF), so tokens survive a restart and no signing key is
stored anywhere. Tokens are not revocable (neither are Conjur's): their lifetime is short
(8 minutes by default) for that reason.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from payapi.core.errors import PayapiError
from payapi.vault.crypto import token_signing_key

ALGORITHM = "HS256"
# Tolerated clock difference for "issued in the future" (several vault nodes).
CLOCK_SKEW_SECONDS = 60
_HEADER_RE = re.compile(r'^Token token="([^"]*)"\s*$')


class InvalidToken(PayapiError):
    """The token is missing, malformed, forged or expired. The message names which, only."""


@dataclass(frozen=True)
class Claims:
    account: str
    login: str
    issued_at: int
    expires_at: int


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


def _unb64url(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    return base64.urlsafe_b64decode(padded.encode("ascii"))


@dataclass
class TokenService:
    """Issues and verifies tokens for every account with keys derived from one data key."""

    data_key: bytes = field(repr=False)
    ttl_seconds: int = 480
    clock: Callable[[], float] = time.time
    _keys: dict[str, bytes] = field(default_factory=dict, repr=False)

    def _key(self, account: str) -> bytes:
        key = self._keys.get(account)
        if key is None:
            key = token_signing_key(self.data_key, account)
            self._keys[account] = key
        return key

    def _kid(self, account: str) -> str:
        return hashlib.sha256(b"kid" + self._key(account)).hexdigest()[:32]

    def issue(self, account: str, login: str, *, ttl_seconds: int | None = None) -> bytes:
        """Return the token JSON (bytes), exactly what ``authenticate`` answers."""
        now = int(self.clock())
        ttl = self.ttl_seconds if ttl_seconds is None else ttl_seconds
        header = {"alg": ALGORITHM, "typ": "JWT", "kid": self._kid(account), "account": account}
        claims = {"sub": login, "iat": now, "exp": now + ttl}
        protected = _b64url(orjson.dumps(header))
        payload = _b64url(orjson.dumps(claims))
        sig = hmac.new(self._key(account), f"{protected}.{payload}".encode(), "sha256").digest()
        return orjson.dumps({"protected": protected, "payload": payload, "signature": _b64url(sig)})

    def verify(self, token_json: bytes) -> Claims:
        try:
            doc = orjson.loads(token_json)
        except orjson.JSONDecodeError:
            raise InvalidToken("token is not JSON") from None
        if not isinstance(doc, dict):
            raise InvalidToken("token is not a JSON object")
        protected, payload, signature = (doc.get(k) for k in ("protected", "payload", "signature"))
        if not all(isinstance(p, str) for p in (protected, payload, signature)):
            raise InvalidToken("token is incomplete")
        assert isinstance(protected, str) and isinstance(payload, str)
        assert isinstance(signature, str)
        try:
            header = orjson.loads(_unb64url(protected))
            sig = _unb64url(signature)
        except (binascii.Error, ValueError, orjson.JSONDecodeError):
            raise InvalidToken("token is malformed") from None
        account = header.get("account") if isinstance(header, dict) else None
        if (
            not isinstance(account, str)
            or not account
            or header.get("alg") != ALGORITHM
            or not hmac.compare_digest(str(header.get("kid", "")), self._kid(account))
        ):
            raise InvalidToken("token was not issued by this vault")
        expected = hmac.new(
            self._key(account), f"{protected}.{payload}".encode(), "sha256"
        ).digest()
        if not hmac.compare_digest(expected, sig):
            raise InvalidToken("token signature is invalid")
        try:
            claims: Any = orjson.loads(_unb64url(payload))
        except (binascii.Error, ValueError, orjson.JSONDecodeError):
            raise InvalidToken("token is malformed") from None
        if not isinstance(claims, dict):
            raise InvalidToken("token is malformed")
        sub, iat, exp = claims.get("sub"), claims.get("iat"), claims.get("exp")
        if not isinstance(sub, str) or not isinstance(iat, int) or not isinstance(exp, int):
            raise InvalidToken("token is malformed")
        now = self.clock()
        if now >= exp:
            raise InvalidToken("token has expired")
        if iat > now + CLOCK_SKEW_SECONDS:
            raise InvalidToken("token is not valid yet")
        return Claims(account=account, login=sub, issued_at=iat, expires_at=exp)

    def verify_header(self, authorization: str | None) -> Claims:
        """Parse ``Token token="<base64 of token JSON>"`` (the Conjur wire form) and verify."""
        if not authorization:
            raise InvalidToken("authorization missing")
        match = _HEADER_RE.match(authorization.strip())
        if match is None:
            raise InvalidToken("authorization is not a Conjur token")
        try:
            raw = base64.b64decode(match.group(1).encode("ascii"), validate=False)
        except (binascii.Error, ValueError, UnicodeEncodeError):
            raise InvalidToken("token is not base64") from None
        return self.verify(raw)
