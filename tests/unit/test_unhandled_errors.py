"""An unhandled exception answers 500 with the error envelope and the request id, in the
body and in the ``X-Request-ID`` header (Starlette answers it outside every middleware, so
the header is the handler's job)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from payapi.core.settings import Settings
from payapi.vault.app import create_app as create_vault
from payapi.vault.crypto import generate_data_key_file
from payapi.web import install_error_handlers


async def _boom() -> None:
    raise RuntimeError("a bug, not the client's fault")


def _web_app(tmp: Path) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.add_api_route("/boom", _boom)
    return app


def _vault_app(tmp: Path) -> FastAPI:
    settings = Settings()
    settings.vault.data_key_file = generate_data_key_file(tmp / "data.key")
    settings.vault.dsn = "postgresql://nobody@127.0.0.1:1/none"  # never connected to here
    app = create_vault(settings)
    app.add_api_route("/boom", _boom)
    return app


@pytest.mark.parametrize("make", [_web_app, _vault_app], ids=["eapi-sapi", "vault"])
@pytest.mark.parametrize("sent", [None, "req-500-check"], ids=["generated", "client's"])
async def test_a_500_carries_the_request_id_in_body_and_header(
    make: Callable[[Path], FastAPI], sent: str | None, tmp_path: Path
) -> None:
    transport = httpx.ASGITransport(app=make(tmp_path), raise_app_exceptions=False)
    headers = {"X-Request-ID": sent} if sent else {}
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        resp = await client.get("/boom", headers=headers)
    assert resp.status_code == 500
    header = resp.headers.get("x-request-id")
    assert header and (sent is None or header == sent)
    assert header in resp.text
    assert "a bug" not in resp.text
