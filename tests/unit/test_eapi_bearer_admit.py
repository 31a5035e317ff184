"""A bearer token with rate limits on is admitted in one Redis round trip
(``Cache.admit_token``), with the answers of the three separate steps it replaces: the
IP counter (429, the token not looked up), the token (401 ``invalid_token``, the client
not counted), the client counter (429); and, Redis down, the old steps' degraded mode
(the local IP limiter, then 503: tokens live only in Redis)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from payapi.core.settings import Settings
from payapi.eapi.app import Metrics, authenticate_caller
from payapi.eapi.cache import CacheDown, LocalLimiter, RateDecision, TokenAdmission
from payapi.web import ApiError


class FakeCache:
    """``admit_token`` answers from ``tokens`` and per-scope counters, like ``_ADMIT_BEARER``;
    ``down`` makes every call raise CacheDown. Records the calls."""

    def __init__(self, tokens: dict[str, str], *, down: bool = False) -> None:
        self.tokens = tokens
        self.down = down
        self.counts: dict[str, int] = {}
        self.calls: list[str] = []

    def _count(self, scope: str) -> int:
        self.counts[scope] = self.counts.get(scope, 0) + 1
        return self.counts[scope]

    async def admit_token(
        self, ip_scope: str, ip_limit: int, token: str, now: float
    ) -> TokenAdmission:
        self.calls.append("admit_token")
        if self.down:
            raise CacheDown("down")
        retry = max(1, 60 - int(now % 60))
        ip = self._count(ip_scope)
        if ip > ip_limit:
            return TokenAdmission(ip, None, None, retry)
        cid = self.tokens.get(token)
        if cid is None:
            return TokenAdmission(ip, None, None, retry)
        return TokenAdmission(ip, cid, self._count(f"client:{cid}"), retry)

    async def hit(self, checks: list[tuple[str, int]], now: float | None = None) -> RateDecision:
        self.calls.append("hit")
        raise CacheDown("down")  # only reached on the degraded path in these tests

    async def token_client(self, token: str) -> str | None:
        self.calls.append("token_client")
        raise CacheDown("down")


def _deps(cache: FakeCache, *, ip_limit: int = 100, client_limit: int = 100) -> Any:
    settings = Settings.model_validate(
        {
            "eapi": {
                "rate_limit": {
                    "enabled": True,
                    "per_ip_per_minute": ip_limit,
                    "per_client_per_minute": client_limit,
                }
            }
        }
    )
    audit = SimpleNamespace(events=[])
    audit.emit = lambda type_, **kw: audit.events.append((type_, kw))
    return SimpleNamespace(
        settings=settings,
        cache=cache,
        local_limits=LocalLimiter(),
        metrics=Metrics.create(),
        audit=audit,
    )


def _request(auth: str | None) -> Any:
    headers = {} if auth is None else {"authorization": auth}
    return SimpleNamespace(
        headers=headers,
        client=SimpleNamespace(host="10.0.0.9"),
        url=SimpleNamespace(path="/api/v1/payments"),
        state=SimpleNamespace(request_id="rid-1"),
    )


def _auth(deps: Any, auth: str | None) -> str:
    return asyncio.run(authenticate_caller(deps, _request(auth)))


def test_a_valid_token_counts_the_ip_and_the_client_in_one_call() -> None:
    cache = FakeCache({"tok-1": "shop-1"})
    deps = _deps(cache)
    assert _auth(deps, "Bearer tok-1") == "shop-1"
    assert _auth(deps, "bearer  tok-1 ") == "shop-1"  # scheme case and spaces as before
    assert cache.calls == ["admit_token", "admit_token"]
    assert cache.counts == {"ip:10.0.0.9": 2, "client:shop-1": 2}


def test_an_unknown_token_is_401_and_the_client_not_counted() -> None:
    cache = FakeCache({"tok-1": "shop-1"})
    deps = _deps(cache)
    with pytest.raises(ApiError) as exc:
        _auth(deps, "Bearer nope")
    assert (exc.value.status, exc.value.code) == (401, "unauthorized")
    assert deps.audit.events[0][1]["details"]["reason"] == "invalid_token"
    assert cache.counts == {"ip:10.0.0.9": 1}


def test_over_the_ip_limit_is_429_before_the_token_is_looked_up() -> None:
    cache = FakeCache({"tok-1": "shop-1"})
    deps = _deps(cache, ip_limit=1)
    assert _auth(deps, "Bearer tok-1") == "shop-1"
    with pytest.raises(ApiError) as exc:
        _auth(deps, "Bearer tok-1")
    assert exc.value.status == 429 and 1 <= int(exc.value.headers["Retry-After"]) <= 60
    assert cache.counts["client:shop-1"] == 1  # not counted once the IP is over


def test_over_the_client_limit_is_429() -> None:
    cache = FakeCache({"tok-1": "shop-1"})
    deps = _deps(cache, client_limit=1)
    _auth(deps, "Bearer tok-1")
    with pytest.raises(ApiError) as exc:
        _auth(deps, "Bearer tok-1")
    assert exc.value.status == 429 and exc.value.headers["Retry-After"]


def test_an_empty_token_takes_the_old_steps() -> None:
    cache = FakeCache({}, down=True)
    deps = _deps(cache)
    with pytest.raises(ApiError) as exc:
        _auth(deps, "Bearer   ")
    assert exc.value.status == 401
    assert cache.calls == ["hit"]  # the IP counted (locally: Redis down), no lookup


def test_redis_down_is_the_old_degraded_mode_503_after_the_local_ip_limit() -> None:
    cache = FakeCache({"tok-1": "shop-1"}, down=True)
    deps = _deps(cache)
    with pytest.raises(ApiError) as exc:
        _auth(deps, "Bearer tok-1")
    assert exc.value.status == 503 and exc.value.headers["Retry-After"] == "5"
    assert cache.calls == ["admit_token", "hit", "token_client"]
    # The local limiter still applies first: over the IP limit it is a 429, not a 503.
    deps = _deps(FakeCache({"tok-1": "shop-1"}, down=True), ip_limit=1)
    for status in (503, 429):
        with pytest.raises(ApiError) as exc:
            _auth(deps, "Bearer tok-1")
        assert exc.value.status == status
