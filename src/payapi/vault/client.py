"""An async client for the Conjur REST API subset that payapi uses.

The services (EAPI, SAPI) and the CLI all talk to the vault through this class. It speaks
the same protocol as CyberArk Conjur, so in production it points at a real Conjur.

Invariants:
- The API key and access token are held as ``SecretStr`` and never appear in an exception
  message or a log line; errors name the variable and the HTTP status only.
- Identifiers are percent-encoded, slashes included, exactly as the official client does.

Several vaults (an active one and standbys, ``[vault] urls``): a call goes to the vault
that answered last and, when that one cannot serve it, to the next one in order:
:func:`attempt_order` decides where to go, :func:`should_try_next` whether a failure
moves on. A standby vault refuses writes with a 503 until promotion, so a write falls
through to the active vault; a read is served by whichever answers. After
``FAILBACK_SECONDS`` the first configured vault (the active one) is tried first again.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from payapi.core.errors import PayapiError

PolicyMethod = Literal["POST", "PUT", "PATCH"]

# Conjur access tokens live 8 minutes; refresh a little earlier than that.
TOKEN_REFRESH_SECONDS = 300.0
# How long a call keeps going first to the vault that answered after the preferred one
# failed, before trying the first configured (active) one first again.
FAILBACK_SECONDS = 30.0
_SAFE_METHODS = frozenset({"GET", "HEAD"})


class VaultError(PayapiError):
    """A vault call failed. ``status`` is the HTTP status, or None when unreachable."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class VaultUnavailable(VaultError):
    """The vault could not be reached (connection refused, timeout, 5xx)."""


class VaultStandby(VaultUnavailable):
    """Every vault that answered is a standby, and this call writes."""


class VaultNotFound(VaultError):
    pass


class VaultForbidden(VaultError):
    pass


class VaultUnauthorized(VaultError):
    pass


def _error_code(resp: httpx.Response) -> str | None:
    """The ``error.code`` of a vault's error envelope, if the body is one."""
    try:
        code = resp.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
    return code if isinstance(code, str) else None


def _enc(identifier: str) -> str:
    return quote(identifier, safe="")


@dataclass
class _Token:
    header: str
    obtained_at: float


def attempt_order(count: int, current: int, since_switch: float) -> list[int]:
    """The vaults to try, by index: the one that answered last, then the others in
    configured order; the configured order itself once ``FAILBACK_SECONDS`` have passed
    since the calls moved away from the first one."""
    start = current if 0 <= current < count and since_switch < FAILBACK_SECONDS else 0
    return [start] + [i for i in range(count) if i != start]


def should_try_next(method: str, *, error: httpx.HTTPError | None, status: int | None) -> bool:
    """Whether a failed call moves on to the next vault.

    A 503 does: the vault did not do it (a standby refusing a write, a vault whose
    database is down). A connection that could not be opened does: nothing was sent. Any
    other transport failure of a read does; of a write it does not, because the vault may
    have done it and only the answer was lost (the caller sees ``VaultUnavailable``).
    """
    if error is not None:
        if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout):
            return True
        return method.upper() in _SAFE_METHODS
    return status == 503


class VaultClient:
    """Authenticates with a login + API key and calls the vault.

    ``url`` is one vault, or several (the active one first, then standbys). One instance
    per process; safe for concurrent use (token refresh is serialized).
    """

    def __init__(
        self,
        url: str | Sequence[str],
        account: str,
        login: str,
        api_key: SecretStr,
        *,
        timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        urls = [url] if isinstance(url, str) else list(url)
        self.urls = list(dict.fromkeys(u.rstrip("/") for u in urls if u.strip()))
        if not self.urls:
            raise ValueError("VaultClient needs at least one vault URL")
        self.url = self.urls[0]
        self.account = account
        self.login = login
        self._api_key = api_key
        self._token: _Token | None = None
        self._lock = asyncio.Lock()
        self._current = 0
        self._switched_at = 0.0
        self._http = httpx.AsyncClient(
            base_url=self.url, timeout=timeout, transport=transport, trust_env=False
        )

    @property
    def current_url(self) -> str:
        """The vault that answered last (where the next call goes first)."""
        return self.urls[self._current]

    def _order(self) -> list[int]:
        return attempt_order(len(self.urls), self._current, time.monotonic() - self._switched_at)

    def _answered(self, index: int) -> None:
        if index != self._current:
            self._current = index
            self._switched_at = time.monotonic()

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
        resp = await self._send_anywhere(
            method, path, what=what, auth=auth, content=content, params=params, headers=hdrs
        )
        if resp.status_code == 503 and _error_code(resp) == "standby_read_only":
            raise VaultStandby(
                f"vault is a standby: read-only until promotion ({what})", resp.status_code
            )
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

    async def _send_anywhere(
        self,
        method: str,
        path: str,
        *,
        what: str,
        auth: bool,
        content: bytes | str | None,
        params: Mapping[str, str] | None,
        headers: dict[str, str],
    ) -> httpx.Response:
        """The answer of the first vault, in :meth:`_order`, that can serve the call; the
        last 503 when none can; ``VaultUnavailable`` when none answers."""
        order = self._order()
        for n, index in enumerate(order):
            last = n == len(order) - 1
            try:
                resp = await self._send_to(
                    self.urls[index],
                    method,
                    path,
                    auth=auth,
                    content=content,
                    params=params,
                    headers=headers,
                )
            except httpx.HTTPError as exc:
                if last or not should_try_next(method, error=exc, status=None):
                    raise VaultUnavailable(
                        f"vault unreachable ({what}): {type(exc).__name__}"
                    ) from None
                continue
            if not last and should_try_next(method, error=None, status=resp.status_code):
                continue
            self._answered(index)
            return resp
        raise AssertionError("unreachable: the last vault always answers or raises")

    async def _send_to(
        self,
        base: str,
        method: str,
        path: str,
        *,
        auth: bool,
        content: bytes | str | None,
        params: Mapping[str, str] | None,
        headers: dict[str, str],
    ) -> httpx.Response:
        """One vault: the request, and once more after re-authenticating on a 401."""
        for attempt in (0, 1):
            if auth:
                headers["Authorization"] = await self._auth_header()
            resp = await self._http.request(
                method, base + path, content=content, params=params, headers=headers
            )
            if resp.status_code == 401 and auth and attempt == 0:
                # The token may have expired or the key been rotated: authenticate again once.
                self._token = None
                continue
            break
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
        """True when one of the vaults answers its health check (a standby counts: it
        serves reads)."""
        for index in self._order():
            try:
                resp = await self._http.get(self.urls[index] + "/health")
            except httpx.HTTPError:
                continue
            if resp.status_code == 200:
                return True
        return False

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

    async def check_permission(self, kind: str, identifier: str, privilege: str) -> bool:
        """Conjur's permission check: may we do ``privilege`` on the resource? A resource
        we cannot see answers as no (404), like one that does not exist."""
        try:
            await self._send(
                "GET",
                f"/resources/{_enc(self.account)}/{_enc(kind)}/{_enc(identifier)}",
                what=f"check {privilege} on {kind}:{identifier}",
                params={"check": "true", "privilege": privilege},
            )
        except (VaultNotFound, VaultForbidden):
            return False
        return True

    async def memberships(self) -> list[str]:
        """Every role we are (full ids: ourselves and, recursively, our groups)."""
        kind, _, ident = self._own_role().partition(":")
        resp = await self._send(
            "GET",
            f"/roles/{_enc(self.account)}/{kind}/{_enc(ident)}",
            what=f"memberships of {self.login}",
            params={"all": "true"},
        )
        data: list[str] = resp.json()
        return data
