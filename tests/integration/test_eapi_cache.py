"""EAPI's Redis state against a real Redis: tokens, revocation, limits, and the
generation check that keeps a revoked secret from being re-cached."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from payapi.eapi.cache import Breaker, Cache, CacheDown, LocalLimiter, token_digest


@pytest.fixture
async def cache(redis_url: str) -> AsyncIterator[Cache]:
    c = Cache.from_url(redis_url)
    yield c
    await c.aclose()


async def test_tokens_are_stored_only_as_hashes(cache: Cache) -> None:
    await cache.store_token("tok-abc", "shop-1", ttl=60)
    assert await cache.token_client("tok-abc") == "shop-1"
    keys = [k.decode() async for k in cache.redis.scan_iter("*")]
    assert all("tok-abc" not in k for k in keys)
    assert f"payapi:tok:{token_digest('tok-abc')}" in keys
    for k in keys:
        if (await cache.redis.type(k)) == b"string":
            assert b"tok-abc" not in (await cache.redis.get(k) or b"")


async def test_revoke_client_and_all(cache: Cache) -> None:
    await cache.store_token("t1", "a", 60)
    await cache.store_token("t2", "a", 60)
    await cache.store_token("t3", "b", 60)
    assert await cache.revoke_client("a") == 2
    assert await cache.token_client("t1") is None
    assert await cache.token_client("t3") == "b"
    await cache.revoke_all()
    assert await cache.token_client("t3") is None


async def test_verification_not_cached_across_a_revocation(cache: Cache) -> None:
    until, gen = await cache.verified_until("a", "mac1")
    assert until == 0.0
    await cache.revoke_all()  # a rotation happens while the vault lookup is in flight
    assert not await cache.remember_verification("a", "mac1", 9e9, 60, gen)
    assert (await cache.verified_until("a", "mac1"))[0] == 0.0
    _, gen = await cache.verified_until("a", "mac1")
    assert await cache.remember_verification("a", "mac1", 9e9, 60, gen)
    assert (await cache.verified_until("a", "mac1"))[0] == 9e9
    await cache.forget_verifications("a")
    assert (await cache.verified_until("a", "mac1"))[0] == 0.0


async def test_rate_limit_window(cache: Cache) -> None:
    now = 600.0
    for _ in range(3):
        assert (await cache.hit([("ip:1", 3)], now=now)).allowed
    d = await cache.hit([("ip:1", 3)], now=now + 10)
    assert not d.allowed and d.retry_after == 50
    assert (await cache.hit([("ip:1", 3)], now=now + 60)).allowed


def test_local_limiter() -> None:
    lim = LocalLimiter()
    assert lim.hit([("c", 1)], now=0).allowed
    assert not lim.hit([("c", 1)], now=1).allowed
    assert lim.hit([("c", 1)], now=61).allowed


async def test_down_redis_raises_cachedown_and_trips_breaker() -> None:
    from payapi.servers.procs import free_port

    c = Cache.from_url(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
    c.breaker = Breaker(cooldown=30)
    with pytest.raises(CacheDown):
        await c.token_client("x")
    assert c.breaker.open
    assert not await c.ping()
    await c.aclose()


async def test_a_block_is_read_with_the_verification(cache: Cache) -> None:
    assert (await cache.verification_state("a", "mac1"))[2] is False
    await cache.block(["a"])
    assert (await cache.verification_state("a", "mac1"))[2] is True
    assert (await cache.verification_state("b", None))[2] is False
    await cache.block(None)  # every client
    assert (await cache.verification_state("b", None))[2] is True
    assert await cache.blocked() == ["*", "a"]
    await cache.revoke_all()  # a rotation does not lift the block
    assert (await cache.verification_state("a", "mac1"))[2] is True
    await cache.unblock(["a"])
    assert await cache.blocked() == ["*"]
    await cache.unblock(None)
    assert await cache.blocked() == []


async def _count(cache: Cache, scope: str, now: float) -> int:
    raw = await cache.redis.get(f"payapi:rl:{scope}:{int(now // 60)}")
    return int(raw or 0)


async def test_admit_counts_the_client_only_on_a_valid_cached_verification(cache: Cache) -> None:
    now = 6000.0
    # A miss: the IP is counted, the client is not (EAPI asks the vault, then counts it).
    adm = await cache.admit("ip:9", 10, "a", "mac1", "client:a", now)
    assert (adm.ip_count, adm.until, adm.blocked, adm.client_count) == (1, 0.0, False, None)
    assert adm.generation == "0" and adm.retry_after == 60
    assert await cache.remember_verification("a", "mac1", now + 30, 60, adm.generation)
    adm = await cache.admit("ip:9", 10, "a", "mac1", "client:a", now + 1)
    assert (adm.ip_count, adm.until, adm.client_count) == (2, now + 30, 1)
    # Expired at EAPI's now: not counted, as a miss.
    adm = await cache.admit("ip:9", 10, "a", "mac1", "client:a", now + 31)
    assert adm.client_count is None and adm.until == now + 30
    # Another secret (another mac) finds nothing.
    assert (await cache.admit("ip:9", 10, "a", "mac2", "client:a", now + 2)).client_count is None
    assert await _count(cache, "client:a", now) == 1
    assert await _count(cache, "ip:9", now) == 4


async def test_admit_stops_at_the_ip_limit_and_at_a_block(cache: Cache) -> None:
    now = 6000.0
    _, gen = await cache.verified_until("a", "mac1")
    assert await cache.remember_verification("a", "mac1", now + 30, 60, gen)
    adm = await cache.admit("ip:8", 1, "a", "mac1", "client:a", now)
    assert adm.ip_count == 1 and adm.client_count == 1
    adm = await cache.admit("ip:8", 1, "a", "mac1", "client:a", now)
    assert adm.ip_count == 2 and adm.client_count is None  # over the IP limit: no client count
    assert await _count(cache, "client:a", now) == 1
    await cache.block(["a"])
    adm = await cache.admit("ip:7", 10, "a", "mac1", "client:a", now)
    assert adm.blocked and adm.client_count is None
    await cache.unblock(["a"])
    await cache.block(None)
    assert (await cache.admit("ip:7", 10, "a", "mac1", "client:a", now)).blocked
    assert await _count(cache, "client:a", now) == 1


async def test_admit_survives_a_script_cache_flush(cache: Cache) -> None:
    await cache.admit("ip:6", 10, "a", "mac1", "client:a", 6000.0)
    await cache.redis.script_flush()  # as after a Redis restart or a failover
    assert (await cache.admit("ip:6", 10, "a", "mac1", "client:a", 6000.0)).ip_count == 2


async def test_admit_on_a_down_redis_raises_cachedown() -> None:
    from payapi.servers.procs import free_port

    c = Cache.from_url(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
    with pytest.raises(CacheDown):
        await c.admit("ip:1", 10, "a", "mac1", "client:a", 6000.0)
    assert c.breaker.open
    await c.aclose()


async def test_admit_token_counts_the_client_only_for_a_valid_token(cache: Cache) -> None:
    now = 6000.0
    await cache.store_token("tok-ok", "shop-1", ttl=60)
    adm = await cache.admit_token("ip:5", 10, "tok-ok", now)
    assert (adm.ip_count, adm.client_id, adm.client_count) == (1, "shop-1", 1)
    assert adm.retry_after == 60
    # The client counter is the key Cache.hit counts ("client:<id>"), shared with it.
    assert await _count(cache, "client:shop-1", now) == 1
    assert (await cache.hit([("client:shop-1", 10)], now=now)).allowed
    assert (await cache.admit_token("ip:5", 10, "tok-ok", now + 1)).client_count == 3
    # Unknown, revoked: the IP is counted, the client is not.
    adm = await cache.admit_token("ip:5", 10, "tok-unknown", now)
    assert (adm.ip_count, adm.client_id, adm.client_count) == (3, None, None)
    assert await cache.revoke_token("tok-ok")
    assert (await cache.admit_token("ip:5", 10, "tok-ok", now)).client_id is None
    assert await _count(cache, "client:shop-1", now) == 3
    # Only the digest went to Redis: no key or value holds the token.
    keys = [k async for k in cache.redis.scan_iter("*")]
    assert all(b"tok-ok" not in k for k in keys)


async def test_admit_token_stops_at_the_ip_limit(cache: Cache) -> None:
    now = 6000.0
    await cache.store_token("tok-ip", "shop-2", ttl=60)
    assert (await cache.admit_token("ip:4", 1, "tok-ip", now)).client_count == 1
    adm = await cache.admit_token("ip:4", 1, "tok-ip", now)
    # Over the IP limit: the token is not looked up, the client not counted.
    assert (adm.ip_count, adm.client_id, adm.client_count) == (2, None, None)
    assert await _count(cache, "client:shop-2", now) == 1


async def test_admit_token_survives_a_script_cache_flush(cache: Cache) -> None:
    await cache.store_token("tok-f", "shop-3", ttl=60)
    await cache.admit_token("ip:3", 10, "tok-f", 6000.0)
    await cache.redis.script_flush()
    assert (await cache.admit_token("ip:3", 10, "tok-f", 6000.0)).client_count == 2


async def test_admit_token_on_a_down_redis_raises_cachedown() -> None:
    from payapi.servers.procs import free_port

    c = Cache.from_url(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
    with pytest.raises(CacheDown):
        await c.admit_token("ip:1", 10, "tok", 6000.0)
    assert c.breaker.open
    await c.aclose()
