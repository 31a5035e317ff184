"""SAPI served by a real uvicorn on a free port (what `payapi serve sapi` runs)."""

from __future__ import annotations

import asyncio

import httpx
import uvicorn

from payapi.core.settings import SapiSettings, Settings
from payapi.sapi.app import create_app
from payapi.sapi.auth import ServiceAuth
from payapi.servers.procs import free_port

TOKEN = "uvicorn-service-token"


async def test_over_real_http(fresh_db: str) -> None:
    auth = ServiceAuth(lambda: TOKEN)
    app = create_app(Settings(sapi=SapiSettings(dsn=fresh_db)), service_auth=auth)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(100):
            if server.started:
                break
            await asyncio.sleep(0.05)
        assert server.started
        headers = {"Authorization": f"Bearer {TOKEN}", "X-Client-ID": "c-1"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            assert (await http.get("/api/internal-health")).json()["status"] == "ok"
            created = await http.post(
                "/api/internal/payments",
                headers={**headers, "Idempotency-Key": "u-1"},
                content=b'{"amount": 100.1, "currency": "USD", "reference": "TEST-12345"}',
            )
            assert created.status_code == 201
            assert created.json()["amount"] == "100.10"
            again = await http.post(
                "/api/internal/payments",
                headers={**headers, "Idempotency-Key": "u-1"},
                content=b'{"amount": "100.10", "currency": "USD", "reference": "TEST-12345"}',
            )
            assert again.status_code == 200
            assert again.content == created.content
            bad = await http.post("/api/internal/payments", headers=headers, content=b"{")
            assert bad.status_code == 400
            assert bad.json()["error"]["code"] == "malformed_json"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
        await auth.aclose()


async def test_audit_append(fresh_db: str, tmp_path: object) -> None:
    from pathlib import Path

    settings = Settings(sapi=SapiSettings(dsn=fresh_db))
    settings.audit.head_file = Path(str(tmp_path)) / "head.json"
    auth = ServiceAuth(lambda: TOKEN)
    app = create_app(settings, service_auth=auth)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    event = {"type": "credential.rotated", "actor": "ops", "subject": "client-x", "details": {}}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sapi") as http:
            first = await http.post("/api/internal/audit", headers=headers, json=event)
            assert first.status_code == 201, first.text
            no_subject = {**event, "subject": None}
            second = await http.post("/api/internal/audit", headers=headers, json=no_subject)
            assert second.status_code == 201, second.text
    await auth.aclose()
    assert set(first.json()) == {"seq", "hash"}
    assert second.json()["seq"] == first.json()["seq"] + 1
    assert second.json()["hash"] != first.json()["hash"]


async def test_audit_body_is_validated(fresh_db: str) -> None:
    auth = ServiceAuth(lambda: TOKEN)
    app = create_app(Settings(sapi=SapiSettings(dsn=fresh_db)), service_auth=auth)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sapi") as http:
            missing = await http.post("/api/internal/audit", headers=headers, json={"type": "x"})
            assert missing.status_code == 422
            assert missing.json()["error"]["param"] == "actor"
            extra = await http.post(
                "/api/internal/audit",
                headers=headers,
                json={"type": "x", "actor": "a", "subject": "s", "details": {}, "more": 1},
            )
            assert extra.status_code == 422
            assert extra.json()["error"]["param"] == "more"
            bad = await http.post("/api/internal/audit", headers=headers, content=b"nope")
            assert bad.status_code == 400
    await auth.aclose()
