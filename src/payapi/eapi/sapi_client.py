"""EAPI's client for Payment-SAPI, authenticated with the service token from the vault.

The token is fetched from the vault once and kept in memory. When SAPI answers 401 (the
token was rotated), it is fetched again and the call retried once: rotation needs no
restart of either service.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from payapi.credentials.naming import SAPI_SERVICE_TOKEN
from payapi.vault.client import VaultClient, VaultError


class SapiUnavailable(Exception):
    pass


class SapiClient:
    def __init__(
        self,
        base_url: str,
        vault: VaultClient,
        *,
        timeout: float = 10.0,
        max_connections: int = 200,
        token_id: str = SAPI_SERVICE_TOKEN,
    ) -> None:
        self.vault = vault
        self.token_id = token_id
        self._token: str | None = None
        self._lock = asyncio.Lock()
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=timeout,
            trust_env=False,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _service_token(self, refresh: bool = False) -> str:
        if self._token is not None and not refresh:
            return self._token
        async with self._lock:
            if self._token is None or refresh:
                try:
                    self._token = (await self.vault.get_secret(self.token_id)).get_secret_value()
                except VaultError:
                    if self._token is None:
                        raise SapiUnavailable("no service token: vault unavailable") from None
            return self._token

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
        json: Any = None,
    ) -> httpx.Response:
        hdrs = dict(headers or {})
        for attempt in (0, 1):
            token = await self._service_token(refresh=attempt == 1)
            hdrs["Authorization"] = f"Bearer {token}"
            try:
                resp = await self._http.request(
                    method, path, headers=hdrs, content=content, json=json
                )
            except httpx.HTTPError as exc:
                raise SapiUnavailable(f"sapi unreachable: {type(exc).__name__}") from None
            if resp.status_code != 401:
                return resp
        return resp

    async def health(self) -> bool:
        try:
            resp = await self._http.get("/api/internal-health")
        except httpx.HTTPError:
            return False
        return resp.status_code == 200
