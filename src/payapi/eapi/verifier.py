"""Client-credential verification: constant-time by construction, degraded by design.

Path for ``(client_id, secret)``:
1. the verification cache in Redis (a keyed hash of id + secret → valid-until);
2. on a miss, the vault: the client's four variables in one batch read. An unknown or
   malformed client id takes **the same path**: ``compare_credentials`` runs against
   ``DUMMY_RECORD``, so an unknown id costs what a wrong secret costs.

Degraded modes: Redis down → step 2 every time; vault down → step 1 only (a miss is a
503, never a 401: we cannot tell); both down → 503.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from pydantic import SecretStr

from payapi.core.errors import PayapiError
from payapi.core.logs import get_logger
from payapi.core.naming import EAPI_CACHE_KEY, ClientPaths, name_of
from payapi.eapi.cache import Cache, CacheDown
from payapi.vault.client import VaultClient, VaultError, VaultNotFound, VaultUnavailable

log = get_logger("payapi.eapi.verifier")


class DependencyDown(PayapiError):
    """Verification could not be decided because a dependency is down (→ 503)."""

    def __init__(self, dependency: str) -> None:
        super().__init__(f"{dependency} unavailable")
        self.dependency = dependency


@dataclass(frozen=True)
class ClientRecord:
    client_id: str
    secret: str
    previous_secret: str
    previous_valid_until: float

    def __repr__(self) -> str:  # never print secrets, even in a debugger dump
        return f"ClientRecord(client_id={self.client_id!r}, secret=***)"


# Random per process, never a valid credential: the unknown-client comparison target.
DUMMY_RECORD = ClientRecord(
    client_id="unknown-" + secrets.token_hex(8),
    secret=secrets.token_urlsafe(32),
    previous_secret=secrets.token_urlsafe(32),
    previous_valid_until=0.0,
)


@dataclass(frozen=True)
class Match:
    ok: bool
    via_previous: bool


def _eq(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def compare_credentials(record: ClientRecord, client_id: str, secret: str, now: float) -> Match:
    """Compare every field, always, without short-circuiting on the first mismatch."""
    id_ok = _eq(client_id, record.client_id)
    current_ok = _eq(secret, record.secret)
    previous_ok = _eq(secret, record.previous_secret)
    in_grace = now < record.previous_valid_until
    ok = id_ok & (current_ok | (previous_ok & in_grace))
    return Match(ok=ok, via_previous=ok and not current_ok)


def _parse_until(raw: str) -> float:
    try:
        return datetime.fromisoformat(raw).timestamp()
    except ValueError:
        return 0.0


class ClientVerifier:
    def __init__(
        self,
        vault: VaultClient,
        cache: Cache,
        *,
        cache_seconds: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.vault = vault
        self.cache = cache
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._cache_key: bytes | None = None
        self._key_lock = asyncio.Lock()

    async def mac(self, client_id: str, secret: str) -> str | None:
        """The keyed hash the verification cache stores (None while the vault cannot give
        the cache key)."""
        key = await self._get_cache_key()
        if key is None:
            return None
        msg = client_id.encode() + b"\0" + secret.encode()
        return hmac.new(key, msg, hashlib.sha256).hexdigest()

    async def _get_cache_key(self) -> bytes | None:
        if self._cache_key is not None:
            return self._cache_key
        async with self._key_lock:
            if self._cache_key is None:
                try:
                    raw = await self.vault.get_secret(EAPI_CACHE_KEY)
                except VaultError:
                    return None
                self._cache_key = base64.b64decode(raw.get_secret_value())
        return self._cache_key

    async def load_record(self, client_id: str) -> ClientRecord:
        """The client's stored credentials, or ``DUMMY_RECORD`` when there is no such client."""
        name = name_of(client_id)
        if name is None:
            return DUMMY_RECORD
        paths = ClientPaths(name)
        try:
            values = await self.vault.get_secrets(paths.all())
        except VaultNotFound:
            return DUMMY_RECORD
        except VaultUnavailable:
            raise DependencyDown("vault") from None
        except VaultError as exc:
            log.error("vault_lookup_failed", status=exc.status)
            raise DependencyDown("vault") from None

        def v(k: str) -> str:
            s: SecretStr | None = values.get(k)
            return s.get_secret_value() if s is not None else ""

        return ClientRecord(
            client_id=v(paths.client_id),
            secret=v(paths.client_secret),
            previous_secret=v(paths.previous_secret),
            previous_valid_until=_parse_until(v(paths.previous_valid_until)),
        )

    async def verify(self, client_id: str, secret: str) -> bool:
        """True if the pair is valid; raises DependencyDown when it cannot be decided."""
        now = self.clock()
        mac: str | None = None
        generation = ""
        redis_up = True
        try:
            mac = await self.mac(client_id, secret)
            until, generation, blocked = await self.cache.verification_state(client_id, mac)
            if blocked:  # breach containment: refused before anything else is asked
                return False
            if until > now:
                return True
        except CacheDown:
            redis_up = False
        return await self.verify_with_vault(
            client_id, secret, now, mac=mac, generation=generation, redis_up=redis_up
        )

    async def verify_with_vault(
        self,
        client_id: str,
        secret: str,
        now: float,
        *,
        mac: str | None,
        generation: str,
        redis_up: bool = True,
    ) -> bool:
        """The vault step of :meth:`verify`, after the cache had no valid verification:
        compare against the stored record, and cache a match unless a revocation happened
        since ``generation`` was read."""
        try:
            record = await self.load_record(client_id)
        except DependencyDown:
            if not redis_up:
                raise DependencyDown("vault and redis") from None
            raise
        match = compare_credentials(record, client_id, secret, now)
        if match.ok and redis_up and mac is not None:
            until = now + self.cache_seconds
            if match.via_previous:
                until = min(until, record.previous_valid_until)
            with contextlib.suppress(CacheDown):
                await self.cache.remember_verification(
                    client_id, mac, until, self.cache_seconds, generation
                )
        return match.ok
