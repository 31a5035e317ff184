"""The probes' writes, over HTTP as a client would make them, and their checks after
recovery.

- ``payments``: ``POST /api/v1/payments`` through the global endpoint with a unique
  Idempotency-Key and reference; the ref is the payment id the API acknowledged.
- ``tokens``: ``POST /api/v1/authenticate``; the token stays in this process's memory
  only (it is a credential: never in a file), the ref is a digest of it. After recovery a
  token still works when ``GET /api/v1/payments/<unknown id>`` with it answers anything
  but 401.
- ``vault``: a new version of the variable ``drills/probe`` every attempt, the value a
  counter (nothing secret). One writer, so the versions are ordered: after recovery the
  writes missing are exactly those after the value the vault holds.

The client credentials are held as pydantic ``SecretStr`` and sent only in headers.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

import httpx
from pydantic import SecretStr

from payapi.drills.probe import AttemptResult

__all__ = [
    "PROBE_VARIABLE",
    "PaymentAttempt",
    "TokenAttempt",
    "VaultAttempt",
]

PROBE_VARIABLE = "drills/probe"
TIMEOUT = 5.0
AMOUNT = "1.00"


def _client(base_url: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, timeout=TIMEOUT, trust_env=False)


@dataclass
class PaymentAttempt:
    base_url: str
    client_id: str
    client_secret: SecretStr
    tag: str = "drill"  # the reference's prefix: the drill's payments are findable

    def _headers(self) -> dict[str, str]:
        return {
            "X-Client-ID": self.client_id,
            "X-Client-Secret": self.client_secret.get_secret_value(),
        }

    def __call__(self) -> AttemptResult:
        key = uuid.uuid4().hex
        body = {"amount": AMOUNT, "currency": "USD", "reference": f"{self.tag}-{key[:12]}"}
        with _client(self.base_url) as http:
            r = http.post(
                "/api/v1/payments", headers={**self._headers(), "Idempotency-Key": key}, json=body
            )
        if r.status_code in (200, 201):
            return AttemptResult(True, str(r.json()["id"]), str(r.status_code))
        return AttemptResult(False, None, str(r.status_code))


@dataclass
class TokenAttempt:
    base_url: str
    client_id: str
    client_secret: SecretStr
    _tokens: dict[str, SecretStr] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __call__(self) -> AttemptResult:
        headers = {
            "X-Client-ID": self.client_id,
            "X-Client-Secret": self.client_secret.get_secret_value(),
        }
        with _client(self.base_url) as http:
            r = http.post("/api/v1/authenticate", headers=headers)
        if r.status_code != 200:
            return AttemptResult(False, None, str(r.status_code))
        token = str(r.json()["access_token"])
        ref = hashlib.sha256(token.encode()).hexdigest()[:16]
        with self._lock:
            self._tokens[ref] = SecretStr(token)
        return AttemptResult(True, ref, "200")

    def found(self, refs: Iterable[str]) -> set[str]:
        """The refs whose token still authenticates."""
        out: set[str] = set()
        with self._lock:
            tokens = {r: self._tokens[r] for r in refs if r in self._tokens}
        with _client(self.base_url) as http:
            for ref, token in tokens.items():
                r = http.get(
                    f"/api/v1/payments/{uuid.uuid4()}",
                    headers={"Authorization": f"Bearer {token.get_secret_value()}"},
                )
                if r.status_code not in (401, 403) and r.status_code < 500:
                    out.add(ref)
        return out


@dataclass
class VaultAttempt:
    """Writes ``<tag>-<n>`` as the next version of :data:`PROBE_VARIABLE`."""

    urls: list[str]
    account: str
    login: str
    api_key: SecretStr
    tag: str
    _n: int = 0
    _loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)

    def _run(self, coro: object) -> object:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(coro)  # type: ignore[arg-type]

    async def _write(self, value: str) -> None:
        from payapi.vault.client import VaultClient

        async with VaultClient(self.urls, self.account, self.login, self.api_key) as vault:
            await vault.set_secret(PROBE_VARIABLE, value)

    async def _read(self) -> str:
        from payapi.vault.client import VaultClient

        async with VaultClient(self.urls, self.account, self.login, self.api_key) as vault:
            return (await vault.get_secret(PROBE_VARIABLE)).get_secret_value()

    def __call__(self) -> AttemptResult:
        self._n += 1
        value = f"{self.tag}-{self._n}"
        self._run(self._write(value))
        return AttemptResult(True, str(self._n), "201")

    def found(self, refs: Iterable[str]) -> set[str]:
        """Every write up to the one the vault holds now (a single writer: versions are
        ordered), as refs."""
        current = str(self._run(self._read()))
        if not current.startswith(f"{self.tag}-"):
            return set()
        upto = int(current.rsplit("-", 1)[1])
        return {r for r in refs if r.isdigit() and int(r) <= upto}

    def close(self) -> None:
        if self._loop is not None:
            self._loop.close()
            self._loop = None
