"""EAPI's cache follows Redis through Sentinel, and its breaker lets it back in promptly.

Real servers only: a primary, a replica and three Sentinels (``tests.redis_ha``), and a
plain redis-server for the restart and the hung-server cases.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from payapi.core.settings import RedisSettings
from payapi.eapi.cache import Breaker, Cache, CacheDown
from payapi.servers.procs import free_port
from payapi.servers.redis import RedisServer
from payapi.systems.redis import replication_info, sentinel_failover, sentinel_master
from tests.redis_ha import RedisHA, redis_ha


@pytest.fixture
def ha(tmp_path: Path) -> Iterator[RedisHA]:
    with redis_ha(tmp_path / "ha") as ha:
        yield ha


def _wait_replicated(ha: RedisHA) -> None:
    """Until the replica has applied everything the primary has (a few milliseconds)."""
    target = replication_info(ha.primary.url)["offset"]
    deadline = time.monotonic() + 5
    while replication_info(ha.replicas[0].url)["offset"] < target:
        assert time.monotonic() < deadline
        time.sleep(0.01)


async def test_from_settings_without_sentinels_is_the_url(redis_url: str) -> None:
    cache = Cache.from_settings(RedisSettings(url=redis_url, socket_timeout_seconds=0.3))
    try:
        await cache.store_token("tok-plain", "shop-1", ttl=60)
        assert await cache.token_client("tok-plain") == "shop-1"
        kwargs = cache.redis.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == 0.3 and kwargs["db"] == int(
            urlsplit(redis_url).path.lstrip("/") or 0
        )
    finally:
        await cache.aclose()


async def test_a_token_survives_kill_9_of_the_primary(ha: RedisHA) -> None:
    cache = Cache.from_settings(ha.settings(db=3, timeout=0.3))
    try:
        await cache.store_token("tok-before", "shop-1", ttl=600)
        assert await cache.token_client("tok-before") == "shop-1"
        assert cache.redis.connection_pool.connection_kwargs["db"] == 3
        _wait_replicated(ha)
        assert ha.primary.pid is not None
        os.kill(ha.primary.pid, signal.SIGKILL)
        killed = time.monotonic()

        # The last moment Sentinel did not yet name the replica: promotion came later.
        not_yet = killed
        answered_at = None
        answers: list[str | None] = []
        while answered_at is None and time.monotonic() - killed < 15:
            if sentinel_master(ha.sentinel_addrs, ha.master_name, timeout=0.2) != (
                "127.0.0.1",
                ha.replicas[0].port,
            ):
                not_yet = time.monotonic()
            try:
                answers.append(await cache.token_client("tok-before"))
                answered_at = time.monotonic()
            except CacheDown:
                await asyncio.sleep(0.05)
        assert answered_at is not None, "the cache never reached the promoted replica"
        # Never a wrong answer: the token was either unreachable (CacheDown) or known.
        assert answers == ["shop-1"]
        assert answered_at - killed < 10
        assert answered_at - not_yet < 1.5  # the breaker let it in within its cooldown

        await cache.store_token("tok-after", "shop-2", ttl=600)  # writes go there too
    finally:
        await cache.aclose()
    fresh = Cache.from_settings(ha.settings(db=3))
    try:
        assert await fresh.token_client("tok-before") == "shop-1"
        assert await fresh.token_client("tok-after") == "shop-2"
    finally:
        await fresh.aclose()


async def test_switchover_under_token_writes_loses_none(ha: RedisHA) -> None:
    """Tokens stored through EAPI's cache while Sentinel switches the primary: every
    store that returned is readable afterwards; the others failed with CacheDown."""
    cache = Cache.from_settings(ha.settings(db=4, timeout=0.3))
    acked: list[str] = []
    refused = 0
    done = asyncio.Event()

    async def writer() -> None:
        nonlocal refused
        i = 0
        while not done.is_set():
            token = f"tok-{i}"
            i += 1
            try:
                await cache.store_token(token, "shop-1", ttl=600)
                acked.append(token)
            except CacheDown:
                refused += 1
                await asyncio.sleep(0.02)
            await asyncio.sleep(0)

    task = asyncio.create_task(writer())
    try:
        await asyncio.sleep(0.3)
        new = await asyncio.to_thread(
            sentinel_failover, ha.sentinel_addrs, ha.master_name, timeout=15
        )
        await asyncio.sleep(0.5)
    finally:
        done.set()
        await task
        await cache.aclose()
    assert new == ("127.0.0.1", ha.replicas[0].port)
    fresh = Cache.from_settings(ha.settings(db=4))
    try:
        found = [await fresh.token_client(t) for t in acked]
    finally:
        await fresh.aclose()
    assert len(acked) > 100
    assert [t for t, cid in zip(acked, found, strict=True) if cid != "shop-1"] == []


async def test_reads_come_back_promptly_after_a_restart(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", free_port())
    server.start()
    cache = Cache.from_url(server.url, timeout=0.3)
    try:
        await cache.store_token("tok", "shop-1", ttl=60)
        server.stop()
        with pytest.raises(CacheDown):
            await cache.token_client("tok")
        assert cache.breaker.open
        server.start()
        back = time.monotonic()
        while True:
            try:
                # Redis keeps nothing on disk: the restarted one is empty, not wrong.
                assert await cache.token_client("tok") is None
                break
            except CacheDown:
                assert time.monotonic() - back < 2.0, "breaker kept Redis out too long"
                await asyncio.sleep(0.05)
        assert time.monotonic() - back < 2.0
        assert not cache.breaker.open and await cache.ping()
    finally:
        await cache.aclose()
        server.stop()


async def test_a_hung_redis_costs_one_timeout_per_cooldown(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", free_port())
    server.start()
    cache = Cache.from_url(server.url, timeout=0.3)
    cache.breaker = Breaker(cooldown=0.5)
    assert server.pid is not None
    try:
        await cache.store_token("tok", "shop-1", ttl=60)
        os.kill(server.pid, signal.SIGSTOP)
        with pytest.raises(CacheDown):
            await cache.token_client("tok")
        await asyncio.sleep(0.55)  # the cooldown is over: one probe may go through
        t0 = time.monotonic()
        results = await asyncio.gather(
            *(cache.token_client("tok") for _ in range(20)), return_exceptions=True
        )
        assert all(isinstance(r, CacheDown) for r in results)
        assert time.monotonic() - t0 < 0.6  # one probe's timeout, not twenty
        os.kill(server.pid, signal.SIGCONT)
        back = time.monotonic()
        while True:
            try:
                assert await cache.token_client("tok") == "shop-1"
                break
            except CacheDown:
                assert time.monotonic() - back < 2.0
                await asyncio.sleep(0.05)
    finally:
        os.kill(server.pid, signal.SIGCONT)
        await cache.aclose()
        server.stop()
