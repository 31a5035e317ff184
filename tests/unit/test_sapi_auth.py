"""ServiceAuth: cached service token, rotation without restart, vault outages."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from payapi.sapi.auth import ServiceAuth, ServiceAuthUnavailable
from payapi.vault.client import VaultUnavailable


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


class Vault:
    """A token source: the current value, a call counter, and an outage switch."""

    def __init__(self, value: str) -> None:
        self.value = value
        self.calls = 0
        self.down = False
        self.delay = 0.0

    async def __call__(self) -> SecretStr:
        self.calls += 1
        await asyncio.sleep(self.delay)  # a network call always yields to the loop
        if self.down:
            raise VaultUnavailable("vault unreachable (variable x): ConnectError")
        return SecretStr(self.value)


def make(vault: Vault, clock: FakeClock, *, max_age: float = 30.0) -> ServiceAuth:
    return ServiceAuth(vault, clock=clock, sleep=clock.sleep, max_age=max_age)


async def test_matching_token_uses_the_cache() -> None:
    vault, clock = Vault("t1"), FakeClock()
    auth = make(vault, clock)
    await auth.start()
    for _ in range(100):
        assert await auth.verify("t1")
    assert vault.calls == 1


async def test_empty_token_is_refused_without_a_vault_read() -> None:
    vault, clock = Vault("t1"), FakeClock()
    auth = make(vault, clock)
    await auth.start()
    assert not await auth.verify("")
    assert vault.calls == 1


async def test_rotation_is_picked_up_on_mismatch() -> None:
    vault, clock = Vault("t1"), FakeClock()
    auth = make(vault, clock)
    await auth.start()
    vault.value = "t2"
    # The new token is accepted: the mismatch waits for the next refresh slot (<= 1 s).
    assert await auth.verify("t2")
    assert clock.slept == [1.0]
    assert vault.calls == 2
    clock.now += 5
    assert not await auth.verify("t1")  # the old one no longer works


async def test_refresh_at_most_once_per_second_and_single_flight() -> None:
    vault, clock = Vault("t1"), FakeClock()
    auth = make(vault, clock)
    await auth.start()
    clock.now += 10
    results = await asyncio.gather(*(auth.verify(f"bad-{i}") for i in range(50)))
    assert results == [False] * 50
    assert vault.calls == 2  # one read for the whole burst
    # Another bad token right away waits for the next slot instead of hammering the vault.
    assert not await auth.verify("bad-again")
    assert vault.calls == 3
    assert clock.slept[-1] == pytest.approx(1.0)


async def test_concurrent_readers_share_one_refresh_with_a_real_clock() -> None:
    vault = Vault("t1")
    auth = ServiceAuth(vault, refresh_interval=0.05)
    await auth.start()
    vault.value = "t2"
    vault.delay = 0.02
    results = await asyncio.gather(*(auth.verify("t2") for _ in range(20)))
    assert all(results)
    assert vault.calls == 2


async def test_vault_down_cached_token_keeps_working() -> None:
    vault, clock = Vault("t1"), FakeClock()
    auth = make(vault, clock)
    await auth.start()
    vault.down = True
    clock.now += 3600  # far past max_age: background refresh fails, cache stays
    for _ in range(3):
        assert await auth.verify("t1")
        await asyncio.sleep(0)
    assert await auth.verify("t1")


async def test_vault_down_unknown_token_is_unavailable_not_wrong() -> None:
    vault, clock = Vault("t1"), FakeClock()
    auth = make(vault, clock)
    await auth.start()
    vault.down = True
    clock.now += 5
    with pytest.raises(ServiceAuthUnavailable):
        await auth.verify("t2")
    vault.down = False
    vault.value = "t2"
    clock.now += 5
    assert await auth.verify("t2")


async def test_vault_down_at_start_then_back() -> None:
    vault, clock = Vault("t1"), FakeClock()
    vault.down = True
    auth = make(vault, clock)
    await auth.start()  # not fatal
    with pytest.raises(ServiceAuthUnavailable):
        await auth.verify("t1")
    vault.down = False
    assert await auth.verify("t1")


async def test_stale_cache_is_refreshed_in_background() -> None:
    vault, clock = Vault("t1"), FakeClock()
    auth = make(vault, clock, max_age=30.0)
    await auth.start()
    vault.value = "t2"  # rotated; the caller still holds t1
    clock.now += 31
    assert await auth.verify("t1")  # still cached: answered now, refresh started
    for _ in range(5):
        await asyncio.sleep(0)
    assert vault.calls == 2
    clock.now += 5
    assert not await auth.verify("t1")  # the rotated-out token stops working
    assert await auth.verify("t2")
    await auth.aclose()


async def test_sync_source_and_check() -> None:
    holder = {"token": "abc"}
    auth = ServiceAuth(lambda: holder["token"])
    await auth.start()
    assert await auth.verify("abc")
    assert await auth.check()

    def broken() -> str:
        raise RuntimeError("no")

    assert not await ServiceAuth(broken).check()


async def test_probe_is_used_for_health() -> None:
    async def probe() -> bool:
        return False

    auth = ServiceAuth(lambda: "x", probe=probe)
    assert not await auth.check()


async def test_tokens_never_reach_the_logs() -> None:
    vault, clock = Vault("secret-token-1"), FakeClock()
    auth = make(vault, clock)
    with capture_logs() as logs:
        await auth.start()
        vault.value = "secret-token-2"
        assert await auth.verify("secret-token-2")
        vault.down = True
        clock.now += 5
        with pytest.raises(ServiceAuthUnavailable):
            await auth.verify("secret-token-3")
    text = repr(logs)
    assert logs  # something was logged (the change, the failure)
    for secret in ("secret-token-1", "secret-token-2", "secret-token-3"):
        assert secret not in text
