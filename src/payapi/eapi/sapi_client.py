"""EAPI's client for Payment-SAPI, authenticated with the service token from the vault.

The token is fetched from the vault once and kept in memory. When SAPI answers 401 (the
token was rotated), it is fetched again and the call retried once: rotation needs no
restart of either service.

Transport: a small HTTP/1.1 keep-alive pool on asyncio with the ``httptools`` response
parser (both already under uvicorn), not httpx. This hop is on every payment, and the
benchmark (``docs/benchmarks.md``) measured httpx at about 3.5 ms of CPU per call here
(its connection pool walks every connection, with a ``poll()`` each, on every request),
which made EAPI the bottleneck of the whole platform. The pool below does one thing:
one request at a time per connection, reuse the most recently used idle connection,
drop a connection on any doubt. It never retries a request on another connection (a
POST may not be repeated blindly); idle connections are dropped before the server's
keep-alive timeout would close them under us.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any, cast
from urllib.parse import quote, urlsplit

import httptools
import orjson

from payapi.core.errors import PayapiError
from payapi.core.naming import SAPI_SERVICE_TOKEN
from payapi.vault.client import VaultClient, VaultError

MAX_RESPONSE_BYTES = 1024 * 1024
KEEPALIVE_EXPIRY_SECONDS = 4.0  # below uvicorn's default keep-alive timeout (5 s)
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


class SapiUnavailable(PayapiError):
    pass


class SapiResponse:
    """What callers use of an answer: status, body, headers (names lower-cased)."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, content: bytes, headers: dict[str, str]) -> None:
        self.status_code = status_code
        self.content = content
        self.headers = headers

    def json(self) -> Any:
        return orjson.loads(self.content)


class _ProtocolError(Exception):
    pass


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reusable = True
        self.idle_since = time.monotonic()
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[SapiResponse] | None = None
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self._fail(_ProtocolError("data without a request"))
            return
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, _ProtocolError) as exc:
            self._fail(exc)

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionError("sapi closed the connection"))

    # -- httptools callbacks -------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > MAX_RESPONSE_BYTES:
            raise _ProtocolError("response too large")
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if not self._parser.should_keep_alive():
            self.reusable = False
        status = self._parser.get_status_code()
        waiter.set_result(SapiResponse(status, b"".join(self._body), self._headers))
        # Anything after the answer (there should be nothing) must not touch it.
        self._headers = {}
        self._body = []

    # -- use -----------------------------------------------------------------------------

    def _fail(self, exc: Exception) -> None:
        self.reusable = False
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close()

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    async def exchange(self, request: bytes) -> SapiResponse:
        if self.transport is None or self.closed:
            raise ConnectionError("connection closed")
        self._headers = {}
        self._body = []
        self._size = 0
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            self.transport.write(request)
            return await self._waiter
        finally:
            self._waiter = None


class _Pool:
    def __init__(self, host: str, port: int, max_connections: int) -> None:
        self.host = host
        self.port = port
        self._idle: collections.deque[_Connection] = collections.deque()
        self._slots = asyncio.Semaphore(max_connections)
        self._all: set[_Connection] = set()

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()  # most recently used: the warmest, least likely stale
            if (
                conn.reusable
                and not conn.closed
                and now - conn.idle_since < (KEEPALIVE_EXPIRY_SECONDS)
            ):
                return conn
            conn.close()
            self._all.discard(conn)
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(_Connection, self.host, self.port)
        self._all.add(conn)
        return conn

    async def exchange(self, request: bytes) -> SapiResponse:
        async with self._slots:
            conn = self._take_idle() or await self._connect()
            try:
                resp = await conn.exchange(request)
            except BaseException:
                conn.close()  # cancelled or failed mid-request: its state is unknown
                self._all.discard(conn)
                raise
            if conn.reusable and not conn.closed:
                conn.idle_since = time.monotonic()
                self._idle.append(conn)
            else:
                conn.close()
                self._all.discard(conn)
            return resp

    def close(self) -> None:
        for conn in list(self._all):
            conn.close()
        self._all.clear()
        self._idle.clear()


def _request_bytes(
    method: str, path: str, host: str, headers: dict[str, str], body: bytes | None
) -> bytes:
    lines = [f"{method} {quote(path, safe=_PATH_SAFE)} HTTP/1.1", f"Host: {host}"]
    for name, value in headers.items():
        if any(c in name or c in value for c in "\r\n\0") or ":" in name:
            raise SapiUnavailable("refusing a header with a control character")
        lines.append(f"{name}: {value}")
    if body is not None:
        lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(body)}")
    try:
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    except UnicodeEncodeError:
        raise SapiUnavailable("refusing a header that is not latin-1") from None
    return head + body if body is not None else head


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
        self.timeout = timeout
        self._token: str | None = None
        self._lock = asyncio.Lock()
        url = urlsplit(base_url.rstrip("/"))
        if url.scheme != "http" or not url.hostname:
            raise ValueError(f"sapi url must be http://host:port, not {base_url!r}")
        self._prefix = url.path
        self._host = url.netloc
        self._pool = _Pool(url.hostname, url.port or 80, max_connections)

    async def aclose(self) -> None:
        self._pool.close()

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

    async def _send(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None
    ) -> SapiResponse:
        request = _request_bytes(method, self._prefix + path, self._host, headers, body)
        try:
            async with asyncio.timeout(self.timeout):
                return await self._pool.exchange(request)
        except (OSError, TimeoutError, httptools.HttpParserError, _ProtocolError) as exc:
            raise SapiUnavailable(f"sapi unreachable: {type(exc).__name__}") from None

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
        json: Any = None,
    ) -> SapiResponse:
        hdrs = dict(headers or {})
        body = orjson.dumps(json) if json is not None else content
        if body is None and method in ("POST", "PUT", "PATCH"):
            body = b""
        for attempt in (0, 1):
            token = await self._service_token(refresh=attempt == 1)
            hdrs["Authorization"] = f"Bearer {token}"
            resp = await self._send(method, path, hdrs, body)
            if resp.status_code != 401:
                return resp
        return resp

    async def health(self) -> bool:
        try:
            resp = await self._send("GET", "/api/internal-health", {}, None)
        except SapiUnavailable:
            return False
        return resp.status_code == 200
