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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.connection import parse_url as _redis_parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from payapi.core.errors import PayapiError
from payapi.core.hostport import parse_hostport
from payapi.core.settings import RedisSettings
from payapi.eapi.cachekeys import (
    ALL_CLIENTS,
    BLOCKED_KEY,
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


def _client_options(timeout: float) -> dict[str, Any]:
    """Short timeouts, and one immediate retry on a broken connection only: a pooled
    connection that Redis (restarted, or demoted by a failover) closed is replaced at
    once instead of failing the request; a timeout is never retried (the breaker is
    what protects EAPI from a hung Redis)."""
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        "health_check_interval": 0,
    }


class CacheDown(PayapiError):
    """Redis is unreachable (or the breaker is open)."""


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Breaker:
    """Skip Redis for ``cooldown`` seconds after a failure, so that a hung Redis costs one
    timeout per cooldown instead of one per request.

    After the cooldown one request at a time goes through as a probe (half-open): if it
    succeeds the breaker closes, if it fails the cooldown starts again. The cooldown is
    short (0.5 s) because Redis coming back, or Sentinel promoting a replica, must make
    EAPI healthy again within a second, not after the first requests got 503 for a while;
    and only one concurrent request pays for a probe of a Redis that is still hung.
    """

    def __init__(self, cooldown: float = 0.5, clock: Callable[[], float] = time.monotonic) -> None:
        self.cooldown = cooldown
        self.clock = clock
        self._open_until = 0.0
        self._tripped = False
        self._probing = False

    @property
    def open(self) -> bool:
        """Whether a request now would be refused without trying Redis."""
        return self._tripped and (self._probing or self.clock() < self._open_until)

    def allow(self) -> bool:
        """May this request try Redis? (While tripped: only one probe after the cooldown.)"""
        if not self._tripped:
            return True
        if self._probing or self.clock() < self._open_until:
            return False
        self._probing = True
        return True

    def trip(self) -> None:
        self._tripped, self._probing = True, False
        self._open_until = self.clock() + self.cooldown

    def reset(self) -> None:
        """A request succeeded: close the breaker."""
        self._tripped, self._probing = False, False
        self._open_until = 0.0

    def abandon(self) -> None:
        """A request ended with neither answer (cancelled): let the next one probe."""
        self._probing = False


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


# A header-authenticated request's Redis work with rate limits on, in one round trip and
# in the order of the separate calls it replaces: count the IP, and stop there if it is
# over its limit (the client is not counted); read the cached verification, the
# generation and the blocks; count the client only when the cached verification is valid
# at EAPI's ``now`` and the client is not blocked. On a miss EAPI asks the vault and counts
# the client afterwards, as before. KEYS: IP counter, verification hash, generation,
# blocked set, client counter. ARGV: IP limit, mac, client id, "every client", now.
_ADMIT = """
local ip = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], 120)
if ip > tonumber(ARGV[1]) then return {ip, '', '0', 0, -1} end
local raw = redis.call('HGET', KEYS[2], ARGV[2])
local gen = redis.call('GET', KEYS[3]) or '0'
local b = redis.call('SMISMEMBER', KEYS[4], ARGV[3], ARGV[4])
local blocked = 0
if b[1] == 1 or b[2] == 1 then blocked = 1 end
local n = -1
if raw and blocked == 0 and tonumber(raw) > tonumber(ARGV[5]) then
  n = redis.call('INCR', KEYS[5])
  redis.call('EXPIRE', KEYS[5], 120)
end
return {ip, raw or '', gen, blocked, n}
"""


# A bearer-token request's Redis work with rate limits on, in one round trip and in the
# order of the three calls it replaces: count the IP, and stop there if it is over its
# limit (the token is not looked up, the client not counted); look the token up by its
# digest; count the client only when the token is valid. The client counter's key is
# built here from the stored client id (``rate_key`` of ``client:<id>``: ARGV[2] .. id ..
# ARGV[3]), so it is not in KEYS: fine on one Redis or Sentinel (what payapi runs), not
# on Redis Cluster. KEYS: IP counter, token. ARGV: IP limit, the client counter key's
# two halves.
_ADMIT_BEARER = """
local ip = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], 120)
if ip > tonumber(ARGV[1]) then return {ip, 0, '', -1} end
local cid = redis.call('GET', KEYS[2])
if not cid then return {ip, 0, '', -1} end
local key = ARGV[2] .. cid .. ARGV[3]
local n = redis.call('INCR', key)
redis.call('EXPIRE', key, 120)
return {ip, 1, cid, n}
"""


@dataclass(frozen=True)
class TokenAdmission:
    """What :meth:`Cache.admit_token` found: the IP count, the token's client id (None:
    unknown or expired, or not looked up because the IP is over its limit) and the
    client count (None when the client was not counted)."""

    ip_count: int
    client_id: str | None
    client_count: int | None
    retry_after: int


@dataclass(frozen=True)
class Admission:
    """What :meth:`Cache.admit` found: the IP count, the cached verification (valid-until
    or 0, the generation, whether blocked) and the client count (None when the client was
    not counted: IP over its limit, blocked, or no valid cached verification)."""

    ip_count: int
    until: float
    generation: str
    blocked: bool
    client_count: int | None
    retry_after: int


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


class Cache:
    def __init__(
        self,
        client: aioredis.Redis,
        breaker: Breaker | None = None,
        sentinel: Sentinel | None = None,
    ) -> None:
        self.redis = client
        self.breaker = breaker or Breaker()
        self._sentinel = sentinel  # closed with the cache: it holds its own connections
        # EVALSHA, and SCRIPT LOAD again on NOSCRIPT (a restarted or promoted Redis).
        self._admit = client.register_script(_ADMIT)
        self._admit_token = client.register_script(_ADMIT_BEARER)

    @classmethod
    def from_url(cls, url: str, timeout: float = 0.5) -> Cache:
        client = aioredis.Redis.from_url(url, **_client_options(timeout))
        return cls(client)

    @classmethod
    def from_settings(cls, section: RedisSettings, timeout: float | None = None) -> Cache:
        """The cache ``[redis]`` describes: through its Sentinels when ``sentinels`` and
        ``sentinel_master`` are set (``url`` then gives only the db and credentials), so
        that after a failover new connections go to the promoted replica; else ``url``."""
        timeout = section.socket_timeout_seconds if timeout is None else timeout
        name = section.sentinel_master
        if not section.sentinels or name is None:
            return cls.from_url(section.url, timeout)
        # The db number and the credentials of the master connections (never logged).
        params: dict[str, Any] = _redis_parse_url(section.url)  # type: ignore[no-untyped-call]
        sentinel = Sentinel(
            [parse_hostport(a) for a in section.sentinels],
            # Each Sentinel is asked once per connect; a dead one is skipped at once.
            sentinel_kwargs={
                "socket_timeout": timeout,
                "socket_connect_timeout": timeout,
                "retry": Retry(NoBackoff(), 0),
            },
        )
        auth = {k: params[k] for k in ("username", "password") if params.get(k)}
        client = sentinel.master_for(
            name,
            redis_class=aioredis.Redis,
            db=int(params.get("db", 0) or 0),
            **auth,
            **_client_options(timeout),
        )
        return cls(client, sentinel=sentinel)

    async def aclose(self) -> None:
        await self.redis.aclose()
        if self._sentinel is not None:
            for conn in self._sentinel.sentinels:
                await conn.aclose()

    async def _guard(self, op: Callable[[], Awaitable[T]]) -> T:
        if not self.breaker.allow():
            raise CacheDown("redis unavailable (breaker open)")
        try:
            result = await op()
        except (RedisError, OSError) as exc:
            self.breaker.trip()
            raise CacheDown(f"redis unavailable: {type(exc).__name__}") from None
        except BaseException:
            self.breaker.abandon()
            raise
        self.breaker.reset()
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

    async def admit_token(
        self, ip_scope: str, ip_limit: int, token: str, now: float
    ) -> TokenAdmission:
        """The IP counter, :meth:`token_client` and the client counter (only for a valid
        token), in one round trip (``_ADMIT_BEARER``). Only the token's digest is sent."""
        window = int(now // 60)
        head, _, tail = rate_key("client:\0", window).partition("\0")
        keys = [rate_key(ip_scope, window), token_key(token_digest(token))]
        args: list[str | int] = [ip_limit, head, tail]
        ip, found, cid, n = await self._guard(lambda: self._admit_token(keys=keys, args=args))
        return TokenAdmission(
            ip_count=int(ip),
            client_id=_text(cid) if int(found) else None,
            client_count=None if int(n) < 0 else int(n),
            retry_after=max(1, 60 - int(now % 60)),
        )

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
        until, gen, _blocked = await self.verification_state(client_id, mac)
        return until, gen

    async def verification_state(self, client_id: str, mac: str | None) -> tuple[float, str, bool]:
        """:meth:`verified_until`, and whether the client is blocked (breach containment),
        in one round trip."""

        async def op() -> Any:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hget(verification_key(client_id), mac or "")
            pipe.get(GEN_KEY)
            pipe.smismember(BLOCKED_KEY, [client_id, ALL_CLIENTS])
            return await pipe.execute()

        raw, gen, blocked = await self._guard(op)
        until = float(raw) if raw is not None and mac else 0.0
        generation = gen.decode() if isinstance(gen, bytes) else str(gen or "0")
        return until, generation, any(blocked)

    async def admit(
        self,
        ip_scope: str,
        ip_limit: int,
        client_id: str,
        mac: str,
        client_scope: str,
        now: float,
    ) -> Admission:
        """The IP counter, :meth:`verification_state` and the client counter (when the
        cached verification is valid at ``now``), in one round trip (``_ADMIT``)."""
        window = int(now // 60)
        keys = [
            rate_key(ip_scope, window),
            verification_key(client_id),
            GEN_KEY,
            BLOCKED_KEY,
            rate_key(client_scope, window),
        ]
        args: list[str | int] = [ip_limit, mac, client_id, ALL_CLIENTS, repr(now)]
        ip, raw, gen, blocked, n = await self._guard(lambda: self._admit(keys=keys, args=args))
        until_text = _text(raw)
        return Admission(
            ip_count=int(ip),
            until=float(until_text) if until_text else 0.0,
            generation=_text(gen),
            blocked=bool(int(blocked)),
            client_count=None if int(n) < 0 else int(n),
            retry_after=max(1, 60 - int(now % 60)),
        )

    async def block(self, client_ids: Sequence[str] | None) -> None:
        """Refuse the credentials of ``client_ids`` (None: every client) until unblocked."""
        members = [ALL_CLIENTS] if client_ids is None else list(client_ids)
        if members:
            await self._guard(lambda: self.redis.sadd(BLOCKED_KEY, *members))

    async def unblock(self, client_ids: Sequence[str] | None) -> None:
        """Lift a block (None: the block of every client, and every single one)."""
        if client_ids is None:
            await self._guard(lambda: self.redis.delete(BLOCKED_KEY))
        elif client_ids:
            await self._guard(lambda: self.redis.srem(BLOCKED_KEY, *client_ids))

    async def blocked(self) -> list[str]:
        raw = await self._guard(lambda: self.redis.smembers(BLOCKED_KEY))
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in raw)

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
