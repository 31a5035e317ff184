"""A 429 from the Redis limiter, with the lab's real Redis, vault and SAPI behind an
in-process EAPI whose limits are set low."""

from __future__ import annotations

import httpx

from payapi.core.settings import load_settings
from payapi.eapi.app import create_app
from tests.scenarios.conftest import LabHandle


async def test_redis_limiter_answers_429_with_retry_after(lab: LabHandle) -> None:
    client = lab.create_client("limited")
    settings = load_settings(lab.config)
    settings.eapi.rate_limit.authenticate_per_ip_per_minute = 3
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("10.9.8.7", 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://eapi") as http:
            codes = [
                (await http.post("/api/v1/authenticate", headers=client.headers)).status_code
                for _ in range(5)
            ]
            assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
            r = await http.post("/api/v1/authenticate", headers=client.headers)
            assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
            assert r.json()["error"]["type"] == "rate_limit_error"
            # The counters live in Redis, not in this process.
            keys = [
                k
                async for k in app.state.deps.cache.redis.scan_iter("payapi:rl:auth-ip:10.9.8.7:*")
            ]
            assert keys
