"""SAPI with its production wiring: the service token read from the real vault server."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from payapi.core.settings import SapiSettings, Settings
from payapi.sapi.app import create_app
from payapi.servers.postgres import PgCluster
from payapi.vault.client import VaultClient

testing = pytest.importorskip("payapi.vault.testing")
platform = pytest.importorskip("payapi.credentials.platform")
naming = pytest.importorskip("payapi.core.naming")

GOOD = {"amount": "12.34", "currency": "EUR", "reference": "VAULT-1"}


async def test_service_token_from_the_vault_rotation_and_outage(
    pg: PgCluster, fresh_db: str, tmp_path: Path
) -> None:
    payments_db = "p_" + uuid.uuid4().hex[:12]
    pg.create_database(payments_db)
    try:
        async with testing.running_vault(fresh_db) as vault:
            admin = VaultClient(
                vault.url, vault.account, vault.admin_login, SecretStr(vault.admin_api_key)
            )
            key_file = tmp_path / "sapi.api_key"
            await platform.ensure_platform(
                admin, eapi_key_file=tmp_path / "eapi.api_key", sapi_key_file=key_file
            )
            settings = Settings(
                vault=vault.settings.vault,
                sapi=SapiSettings(dsn=pg.dsn(payments_db), vault_api_key_file=key_file),
            )
            app = create_app(settings)  # no injected auth: the vault is the source
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://s") as http:

                    async def pay(token: str) -> int:
                        headers = {"Authorization": f"Bearer {token}", "X-Client-ID": "c"}
                        r = await http.post("/api/internal/payments", headers=headers, json=GOOD)
                        return r.status_code

                    health = await http.get("/api/internal-health")
                    assert health.json() == {
                        "status": "ok",
                        "checks": {"database": "ok", "vault": "ok"},
                    }
                    token1 = (await admin.get_secret(naming.SAPI_SERVICE_TOKEN)).get_secret_value()
                    assert await pay(token1) == 201
                    assert await pay("not-the-token") == 401

                    await platform.rotate_service_token(admin)
                    token2 = (await admin.get_secret(naming.SAPI_SERVICE_TOKEN)).get_secret_value()
                    assert await pay(token2) == 201  # picked up without a restart
                    assert await pay(token1) == 401  # and the old one is dead

                    vault.server.stop()  # vault outage: the cached token keeps working
                    assert await pay(token2) == 201
                    degraded = await http.get("/api/internal-health")
                    assert degraded.status_code == 200
                    assert degraded.json()["status"] == "degraded"
                    assert await pay("not-the-token") == 503  # undecidable, never a wrong 401
            await admin.aclose()
    finally:
        pg.psql(f'DROP DATABASE IF EXISTS "{payments_db}" WITH (FORCE)')
