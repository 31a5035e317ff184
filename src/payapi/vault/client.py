"""An async client for the Conjur REST API subset that payapi uses.

The services (EAPI, SAPI) and the CLI all talk to the vault through this class. It speaks
the same protocol as CyberArk Conjur, so in production it points at a real Conjur.

Invariants:
- The API key and access token are held as ``SecretStr`` and never appear in an exception
  message or a log line; errors name the variable and the HTTP status only.
- Identifiers are percent-encoded, slashes included, exactly as the official client does.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from payapi.core.errors import PayapiError

PolicyMethod = Literal["POST", "PUT", "PATCH"]

# Conjur access tokens live 8 minutes; refresh a little earlier than that.
TOKEN_REFRESH_SECONDS = 300.0


class VaultError(PayapiError):
    """A vault call failed. ``status`` is the HTTP status, or None when unreachable."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class VaultUnavailable(VaultError):
    """The vault could not be reached (connection refused, timeout, 5xx)."""


class VaultNotFound(VaultError):
    pass


class VaultForbidden(VaultError):
    pass


class VaultUnauthorized(VaultError):
    pass


def _enc(identifier: str) -> str:
    return quote(identifier, safe="")


@dataclass
class _Token:
    header: str
    obtained_at: float


class VaultClient:
    """Authenticates with a login + API key and calls the vault.

    One instance per process; safe for concurrent use (token refresh is serialized).
    """

    def __init__(
        self,
        url: str,
        account: str,
        login: str,
        api_key: SecretStr,
        *,
        timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.account = account
        self.login = login
        self._api_key = api_key
        self._token: _Token | None = None
        self._lock = asyncio.Lock()
        self._http = httpx.AsyncClient(
            base_url=self.url, timeout=timeout, transport=transport, trust_env=False
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> VaultClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def set_api_key(self, api_key: SecretStr) -> None:
        """Use a new API key (after a rotation); the next call re-authenticates."""
        self._api_key = api_key
        self._token = None

    # -- low level -----------------------------------------------------------------

    async def _send(
        self,
        method: str,
        path: str,
        *,
        what: str,
        auth: bool = True,
        basic: bool = False,
        content: bytes | str | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send one request. ``auth`` uses an access token (re-authenticating once on a
        401); ``basic`` uses HTTP Basic with the login and API key instead."""
        hdrs = dict(headers or {})
        if basic:
            auth = False
            pair = f"{self.login}:{self._api_key.get_secret_value()}".encode()
            hdrs["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        for attempt in (0, 1):
            if auth:
                hdrs["Authorization"] = await self._auth_header()
            try:
                resp = await self._http.request(
                    method, path, content=content, params=params, headers=hdrs
                )
            except httpx.HTTPError as exc:
                raise VaultUnavailable(
                    f"vault unreachable ({what}): {type(exc).__name__}"
                ) from None
            if resp.status_code == 401 and auth and attempt == 0:
                # The token may have expired or the key been rotated: authenticate again once.
                self._token = None
                continue
            break
        if resp.status_code >= 500:
            raise VaultUnavailable(f"vault error {resp.status_code} ({what})", resp.status_code)
        if resp.status_code == 404:
            raise VaultNotFound(f"not found: {what}", 404)
        if resp.status_code == 403:
            raise VaultForbidden(f"forbidden: {what}", 403)
        if resp.status_code == 401:
            raise VaultUnauthorized(f"vault rejected the credentials of {self.login}", 401)
        if resp.status_code >= 400:
            raise VaultError(f"vault answered {resp.status_code} ({what})", resp.status_code)
        return resp

    async def _auth_header(self) -> str:
        tok = self._token
        if tok is not None and time.monotonic() - tok.obtained_at < TOKEN_REFRESH_SECONDS:
            return tok.header
        async with self._lock:
            tok = self._token
            if tok is None or time.monotonic() - tok.obtained_at >= TOKEN_REFRESH_SECONDS:
                raw = await self.authenticate()
                b64 = base64.b64encode(raw).decode()
                tok = _Token(header=f'Token token="{b64}"', obtained_at=time.monotonic())
                self._token = tok
            return tok.header

    # -- authn ---------------------------------------------------------------------

    async def authenticate(self) -> bytes:
        """Exchange the API key for a short-lived access token (raw JSON bytes)."""
        resp = await self._send(
            "POST",
            f"/authn/{_enc(self.account)}/{_enc(self.login)}/authenticate",
            what=f"authenticate {self.login}",
            auth=False,
            content=self._api_key.get_secret_value(),
        )
        return resp.content

    def _own_role(self) -> str:
        """Our role as ``kind:id`` (Conjur: a ``host/`` login is a host, else a user)."""
        if self.login.startswith("host/"):
            return "host:" + self.login.removeprefix("host/")
        return "user:" + self.login

    async def rotate_api_key(self, role: str | None = None) -> SecretStr:
        """Rotate the API key of ``role`` ("host:payment-system/x"), or our own.

        Conjur refuses an access token for rotating one's own key ("Credential strength is
        insufficient"): our own key is rotated with HTTP Basic and the current key, another
        role's with a token (and ``update`` on that role).
        """
        own = role is None or role in (self._own_role(), f"{self.account}:{self._own_role()}")
        params = {"role": role} if role and not own else None
        resp = await self._send(
            "PUT",
            f"/authn/{_enc(self.account)}/api_key",
            what=f"rotate api key {role or self.login}",
            params=params,
            basic=own,
        )
        key = SecretStr(resp.text.strip())
        if own:
            self.set_api_key(key)
        return key

    async def whoami(self) -> dict[str, Any]:
        resp = await self._send("GET", "/whoami", what="whoami")
        data: dict[str, Any] = resp.json()
        return data

    async def health(self) -> bool:
        try:
            resp = await self._http.get("/health")
        except httpx.HTTPError:
            return False
        return resp.status_code == 200

    # -- secrets -------------------------------------------------------------------

    async def get_secret(self, variable_id: str, version: int | None = None) -> SecretStr:
        params = {"version": str(version)} if version is not None else None
        resp = await self._send(
            "GET",
            f"/secrets/{_enc(self.account)}/variable/{_enc(variable_id)}",
            what=f"variable {variable_id}",
            params=params,
        )
        return SecretStr(resp.text)

    async def get_secrets(self, variable_ids: Iterable[str]) -> dict[str, SecretStr]:
        """Batch read, all or nothing; keys are the plain variable ids."""
        ids = list(variable_ids)
        full = [f"{self.account}:variable:{v}" for v in ids]
        resp = await self._send(
            "GET",
            "/secrets",
            what=f"batch of {len(ids)} variables",
            params={"variable_ids": ",".join(full)},
        )
        data: dict[str, str] = resp.json()
        prefix = f"{self.account}:variable:"
        return {k.removeprefix(prefix): SecretStr(v) for k, v in data.items()}

    async def set_secret(self, variable_id: str, value: SecretStr | str) -> None:
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        await self._send(
            "POST",
            f"/secrets/{_enc(self.account)}/variable/{_enc(variable_id)}",
            what=f"set variable {variable_id}",
            content=raw,
        )

    # -- policy and resources -----------------------------------------------------

    async def load_policy(
        self, policy_id: str, body: str, method: PolicyMethod = "POST"
    ) -> dict[str, Any]:
        resp = await self._send(
            method,
            f"/policies/{_enc(self.account)}/policy/{_enc(policy_id)}",
            what=f"policy {policy_id}",
            content=body,
        )
        data: dict[str, Any] = resp.json()
        return data

    async def list_resources(
        self, kind: str | None = None, search: str | None = None
    ) -> list[dict[str, Any]]:
        params: dict[str, str] = {}
        if kind:
            params["kind"] = kind
        if search:
            params["search"] = search
        resp = await self._send(
            "GET", f"/resources/{_enc(self.account)}", what="list resources", params=params
        )
        data: list[dict[str, Any]] = resp.json()
        return data
