"""Service-to-service authentication of SAPI's callers (a bearer service token).

The expected token lives in the vault (``settings.sapi.service_token_id``). SAPI keeps it
in memory and re-reads it from the vault when:

- a caller presents a token that does not match (it may have been rotated): the request
  waits for the next refresh slot, so a legitimate caller holding the new token is never
  refused for the sake of rate limiting;
- the cached copy is older than ``max_age`` (in the background): a rotated-out token
  stops working within ``max_age`` even if nobody presents the new one.

Invariants:
- At most one vault read per ``refresh_interval`` (1 s), and concurrent refreshes are
  single-flight: a burst of bad tokens costs one vault read per second, not one per request.
- If the vault is down, a request whose token matches the cached one still succeeds. A
  token that does not match while the vault cannot be read is neither accepted nor called
  wrong: :class:`ServiceAuthUnavailable` (HTTP 503).
- Comparison is constant-time (``hmac.compare_digest``); no token is ever logged.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Union

from pydantic import SecretStr

from payapi.core.errors import PayapiError
from payapi.core.logs import get_logger
from payapi.core.settings import ConfigError, read_secret_file
from payapi.vault.client import VaultClient, VaultError, VaultUnauthorized

if TYPE_CHECKING:
    from payapi.core.settings import Settings

log = get_logger("payapi.sapi.auth")

TokenValue = Union[SecretStr, str]  # noqa: UP007 - a runtime alias, not an annotation
TokenSource = Callable[[], Union[TokenValue, Awaitable[TokenValue]]]  # noqa: UP007
"""Returns the current service token (sync or async)."""
Probe = Callable[[], Awaitable[bool]]

REFRESH_INTERVAL_SECONDS = 1.0
MAX_AGE_SECONDS = 30.0
CHECK_TIMEOUT_SECONDS = 2.0


class ServiceAuthUnavailable(PayapiError):
    """The presented token did not match and the vault could not be read to re-check."""


def _raw(value: TokenValue) -> bytes:
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    return text.encode("utf-8")


class ServiceAuth:
    """Checks bearer tokens against the service token held in the vault."""

    def __init__(
        self,
        source: TokenSource,
        *,
        probe: Probe | None = None,
        close: Callable[[], Awaitable[None]] | None = None,
        refresh_interval: float = REFRESH_INTERVAL_SECONDS,
        max_age: float = MAX_AGE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._source = source
        self._probe = probe
        self._close = close
        self.refresh_interval = refresh_interval
        self.max_age = max_age
        self._clock = clock
        self._sleep = sleep
        self._token: bytes | None = None
        self._fetched_at = float("-inf")  # last successful read
        self._attempted_at = float("-inf")  # last read, successful or not
        self._last_ok = False
        self._generation = 0  # bumped by every finished read attempt
        self._lock = asyncio.Lock()
        self._background: asyncio.Task[None] | None = None
        self.fetches = 0  # vault reads made; tests and metrics look at it

    @classmethod
    def from_settings(cls, settings: Settings) -> ServiceAuth:
        """The production wiring: the token is read from the vault as SAPI's host identity."""
        source = VaultTokenSource.from_settings(settings)
        return cls(source, probe=source.health, close=source.aclose)

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Read the token once at startup; a vault outage here is not fatal."""
        await self._refresh(self._generation, wait=False)

    async def aclose(self) -> None:
        task = self._background
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._close is not None:
            await self._close()

    # -- checking --------------------------------------------------------------------

    @property
    def has_cached_token(self) -> bool:
        """True once a token was read: callers can be checked even if the vault is down."""
        return self._token is not None

    def _matches(self, presented: bytes) -> bool:
        token = self._token
        return token is not None and hmac.compare_digest(presented, token)

    async def verify(self, presented: str) -> bool:
        """True if ``presented`` is the current service token.

        Raises :class:`ServiceAuthUnavailable` when it does not match the cached token and
        the vault could not be read to learn whether the token was rotated.
        """
        raw = presented.encode("utf-8", "surrogateescape")
        if not raw:
            return False
        if self._matches(raw):
            if self._clock() - self._fetched_at > self.max_age:
                self._refresh_in_background()
            return True
        seen = self._generation
        await self._refresh(seen, wait=True)
        if self._matches(raw):
            return True
        if not self._last_ok:
            raise ServiceAuthUnavailable("service token could not be read from the vault")
        return False

    async def check(self) -> bool:
        """Health: can SAPI reach its token source? (Bounded: a health probe must answer.)"""
        try:
            if self._probe is not None:
                return await asyncio.wait_for(self._probe(), CHECK_TIMEOUT_SECONDS)
            value = await asyncio.wait_for(self._call_source(), CHECK_TIMEOUT_SECONDS)
            return bool(_raw(value))
        except Exception:
            return False

    # -- refreshing ------------------------------------------------------------------

    async def _call_source(self) -> TokenValue:
        result = self._source()
        if inspect.isawaitable(result):
            return await result
        return result

    def _refresh_in_background(self) -> None:
        if self._background is not None and not self._background.done():
            return
        if self._clock() - self._attempted_at < self.refresh_interval:
            return
        self._background = asyncio.create_task(self._refresh(self._generation, wait=False))

    async def _refresh(self, seen: int, *, wait: bool) -> None:
        """Read the token unless someone else finished a read since generation ``seen``."""
        async with self._lock:
            if self._generation != seen:
                return  # single flight: a read finished while we queued; use its result
            delay = self._attempted_at + self.refresh_interval - self._clock()
            if delay > 0:
                if not wait:
                    return
                await self._sleep(delay)
            try:
                value = _raw(await self._call_source())
                if not value:
                    raise ConfigError("service token in the vault is empty")
            except Exception as exc:
                self._last_ok = False
                detail = str(exc) if isinstance(exc, VaultError | ConfigError) else ""
                log.warning(
                    "service_token_refresh_failed",
                    error_type=type(exc).__name__,
                    detail=detail,
                    cached=self._token is not None,
                )
            else:
                if self._token is not None and not hmac.compare_digest(value, self._token):
                    log.info("service_token_changed")
                self._token = value
                self._fetched_at = self._clock()
                self._last_ok = True
            finally:
                self.fetches += 1
                self._attempted_at = self._clock()
                self._generation += 1


class VaultTokenSource:
    """Reads the service token from the vault as SAPI's own host identity.

    If the vault refuses SAPI's API key (it was rotated and the key file rewritten), the
    key file is read again once, so an API-key rotation needs no restart either.
    """

    def __init__(
        self, client: VaultClient, token_id: str, key_file_reader: Callable[[], SecretStr]
    ) -> None:
        self.client = client
        self.token_id = token_id
        self._read_key = key_file_reader

    @classmethod
    def from_settings(cls, settings: Settings) -> VaultTokenSource:
        key_file = settings.sapi.vault_api_key_file

        def read_key() -> SecretStr:
            return read_secret_file(key_file, "sapi vault API key")

        vault = settings.vault
        client = VaultClient(
            vault.endpoints(), vault.account, settings.sapi.vault_login, read_key(), timeout=5.0
        )
        return cls(client, settings.sapi.service_token_id, read_key)

    async def __call__(self) -> SecretStr:
        try:
            return await self.client.get_secret(self.token_id)
        except VaultUnauthorized:
            self.client.set_api_key(self._read_key())
            return await self.client.get_secret(self.token_id)

    async def health(self) -> bool:
        return await self.client.health()

    async def aclose(self) -> None:
        await self.client.aclose()
