"""Everything EAPI keeps in Redis: opaque tokens, the verification cache, rate limits.

Redis is a cache. Losing it must never lose a payment, so every caller here handles
``CacheDown`` and degrades (verify against the vault, fall back to a local limiter).

What is stored, and why it is safe to store:
- tokens: only SHA-256 of the 256-bit token (``tok:<sha256>`` → client id), never the token;
- verifications: ``ver:<client id>`` → {HMAC(cache key, client id + secret): valid-until},
  a keyed hash, never a secret; the HMAC key comes from the vault and lives in memory only;
- rate limits: fixed one-minute windows (``rl:<scope>:<id>:<minute>`` counters).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from payapi.core.errors import PayapiError
from payapi.eapi.cachekeys import (
    GEN_KEY,
    TOKEN_PATTERN,
    TOKEN_SET_PATTERN,
    VERIFICATION_PATTERN,
    client_tokens_key,
    rate_key,
    token_key,
    verification_key,
)

T = TypeVar("T")


class CacheDown(PayapiError):
    """Redis is unreachable (or the breaker is open)."""


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Breaker:
    """Skip Redis for ``cooldown`` seconds after a failure, so that a hung Redis costs one
    timeout per cooldown instead of one per request."""

    def __init__(self, cooldown: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.cooldown = cooldown
        self.clock = clock
        self._open_until = 0.0

    @property
    def open(self) -> bool:
        return self.clock() < self._open_until

    def trip(self) -> None:
        self._open_until = self.clock() + self.cooldown

    def reset(self) -> None:
        self._open_until = 0.0


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    retry_after: int = 0


# Revoke every token of one client and its cached verifications, atomically, and bump
# the generation so that a verification looked up before the revocation is not cached.
_REVOKE_CLIENT = """
local members = redis.call('SMEMBERS', KEYS[1])
for _, h in ipairs(members) do redis.call('DEL', ARGV[1] .. h) end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('INCR', KEYS[3])
return #members
"""

# Cache a verification only if no revocation happened since it was looked up
# (compare-and-set on the generation counter).
_REMEMBER = """
local gen = redis.call('GET', KEYS[2]) or '0'
if gen ~= ARGV[4] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


class Cache:
    def __init__(self, client: aioredis.Redis, breaker: Breaker | None = None) -> None:
        self.redis = client
        self.breaker = breaker or Breaker()

    @classmethod
    def from_url(cls, url: str, timeout: float = 0.5) -> Cache:
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry_on_timeout=False,
            health_check_interval=0,
        )
        return cls(client)

    async def aclose(self) -> None:
        await self.redis.aclose()

    async def _guard(self, op: Callable[[], Awaitable[T]]) -> T:
        if self.breaker.open:
            raise CacheDown("redis unavailable (breaker open)")
        try:
            result = await op()
        except (RedisError, OSError) as exc:
            self.breaker.trip()
            raise CacheDown(f"redis unavailable: {type(exc).__name__}") from None
        return result

    async def ping(self) -> bool:
        try:
            return bool(await self._guard(self.redis.ping))
        except CacheDown:
            return False

    # -- tokens --------------------------------------------------------------------

    async def store_token(self, token: str, client_id: str, ttl: int) -> None:
        digest = token_digest(token)

        async def op() -> Any:
            pipe = self.redis.pipeline(transaction=True)
            pipe.set(token_key(digest), client_id, ex=ttl)
            pipe.sadd(client_tokens_key(client_id), digest)
            pipe.expire(client_tokens_key(client_id), ttl)
            return await pipe.execute()

        await self._guard(op)

    async def token_client(self, token: str) -> str | None:
        digest = token_digest(token)
        raw = await self._guard(lambda: self.redis.get(token_key(digest)))
        return raw.decode() if isinstance(raw, bytes) else raw

    async def revoke_token(self, token: str) -> bool:
        digest = token_digest(token)
        key = token_key(digest)
        raw = await self._guard(lambda: self.redis.getdel(key))
        if raw is None:
            return False
        cid = raw.decode() if isinstance(raw, bytes) else str(raw)
        await self._guard(lambda: self.redis.srem(client_tokens_key(cid), digest))
        return True

    async def revoke_client(self, client_id: str) -> int:
        """Drop every token and cached verification of one client; returns tokens revoked."""
        keys = [client_tokens_key(client_id), verification_key(client_id), GEN_KEY]
        n = await self._guard(lambda: self.redis.eval(_REVOKE_CLIENT, 3, *keys, token_key("")))
        return int(n)

    async def _delete(self, keys: list[Any]) -> int:
        async def op() -> int:
            return int(await self.redis.delete(*keys))

        return await self._guard(op)

    async def revoke_all(self) -> int:
        """Drop every token and every cached verification (emergency rotation)."""
        await self._guard(lambda: self.redis.incr(GEN_KEY))
        total = 0
        try:
            for pattern in (TOKEN_PATTERN, TOKEN_SET_PATTERN, VERIFICATION_PATTERN):
                batch: list[Any] = []
                async for key in self.redis.scan_iter(match=pattern, count=1000):
                    batch.append(key)
                    if len(batch) >= 500:
                        total += await self._delete(batch)
                        batch = []
                if batch:
                    total += await self._delete(batch)
        except (RedisError, OSError) as exc:
            self.breaker.trip()
            raise CacheDown(f"redis unavailable: {type(exc).__name__}") from None
        await self._guard(lambda: self.redis.incr(GEN_KEY))
        return total

    # -- verification cache --------------------------------------------------------

    async def verified_until(self, client_id: str, mac: str) -> tuple[float, str]:
        """(valid-until of a cached verification or 0, the revocation generation now)."""

        async def op() -> Any:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hget(verification_key(client_id), mac)
            pipe.get(GEN_KEY)
            return await pipe.execute()

        raw, gen = await self._guard(op)
        until = float(raw) if raw is not None else 0.0
        return until, (gen.decode() if isinstance(gen, bytes) else str(gen or "0"))

    async def remember_verification(
        self, client_id: str, mac: str, valid_until: float, ttl: int, generation: str
    ) -> bool:
        """Cache a verification unless a revocation happened since ``generation`` was read."""
        keys = [verification_key(client_id), GEN_KEY]
        stored = await self._guard(
            lambda: self.redis.eval(
                _REMEMBER, 2, *keys, mac, f"{valid_until:.3f}", str(ttl), generation
            )
        )
        return bool(stored)

    async def forget_verifications(self, client_id: str) -> None:
        """After a graceful rotation: drop cached verifications of one client."""

        async def op() -> Any:
            pipe = self.redis.pipeline(transaction=True)
            pipe.delete(verification_key(client_id))
            pipe.incr(GEN_KEY)
            return await pipe.execute()

        await self._guard(op)

    # -- rate limits ---------------------------------------------------------------

    async def hit(self, checks: list[tuple[str, int]], now: float | None = None) -> RateDecision:
        """Count one request against each ``(scope key, limit per minute)`` in one round trip."""
        now = time.time() if now is None else now
        window = int(now // 60)
        retry_after = max(1, 60 - int(now % 60))

        async def op() -> Any:
            pipe = self.redis.pipeline(transaction=False)
            for scope, _ in checks:
                key = rate_key(scope, window)
                pipe.incr(key)
                pipe.expire(key, 120)
            return await pipe.execute()

        counts = await self._guard(op)
        for i, (_, limit) in enumerate(checks):
            if int(counts[2 * i]) > limit:
                return RateDecision(False, retry_after)
        return RateDecision(True)


class LocalLimiter:
    """The in-process fallback while Redis is down: same windows, per process."""

    def __init__(self) -> None:
        self._window = -1
        self._counts: dict[str, int] = {}

    def hit(self, checks: list[tuple[str, int]], now: float | None = None) -> RateDecision:
        now = time.time() if now is None else now
        window = int(now // 60)
        if window != self._window:
            self._window = window
            self._counts.clear()
        retry_after = max(1, 60 - int(now % 60))
        decision = RateDecision(True)
        for scope, limit in checks:
            n = self._counts.get(scope, 0) + 1
            self._counts[scope] = n
            if n > limit:
                decision = RateDecision(False, retry_after)
        return decision
