"""EAPI's HTTP/1.1 client for SAPI, against a scripted server on loopback.

The client replaced httpx on the payment path for speed (docs/benchmarks.md); these
tests hold it to what callers rely on: exact requests, keep-alive reuse, never a blind
retry, the 401 token refresh, and SapiUnavailable for every way the hop can fail.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from pydantic import SecretStr

from payapi.eapi.sapi_client import SapiClient, SapiUnavailable


@dataclass
class Seen:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    conn: int


Handler = Callable[[Seen], Awaitable[bytes | None]]


@dataclass
class Server:
    handler: Handler
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    port: int = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = self.connections
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ")
                headers = {}
                for line in lines[1:]:
                    if line:
                        k, _, v = line.partition(":")
                        headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                req = Seen(method, target, headers, body, conn)
                self.seen.append(req)
                answer = await self.handler(req)
                if answer is None:  # close without answering
                    return
                writer.write(answer)
                await writer.drain()
                if b"connection: close" in answer.lower():
                    return
        finally:
            writer.close()


def response(status: int, body: bytes = b"{}", extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


class Vault:
    def __init__(self, *tokens: str) -> None:
        self.tokens = list(tokens)
        self.calls = 0

    async def get_secret(self, _id: str) -> SecretStr:
        self.calls += 1
        return SecretStr(self.tokens[min(self.calls, len(self.tokens)) - 1])


@pytest.fixture
async def start() -> AsyncIterator[Callable[[Handler], Awaitable[Server]]]:
    servers: list[asyncio.Server] = []

    async def _start(handler: Handler) -> Server:
        s = Server(handler)
        srv = await asyncio.start_server(s.serve, "127.0.0.1", 0)
        s.port = srv.sockets[0].getsockname()[1]
        servers.append(srv)
        return s

    yield _start
    for srv in servers:
        srv.close()


def client(server: Server, vault: Vault | None = None, timeout: float = 5.0) -> SapiClient:
    return SapiClient(
        f"http://127.0.0.1:{server.port}",
        vault or Vault("tok-1"),  # type: ignore[arg-type]
        timeout=timeout,
    )


async def test_exact_request_and_keep_alive(start: Callable[[Handler], Awaitable[Server]]) -> None:
    async def ok(req: Seen) -> bytes:
        return response(201, b'{"id": "p1"}')

    server = await start(ok)
    c = client(server)
    try:
        for _ in range(3):
            resp = await c.request(
                "POST",
                "/api/internal/payments",
                headers={"X-Client-ID": "shop-1", "X-Request-ID": "rid-1"},
                content=b'{"amount":"1.00"}',
            )
            assert resp.status_code == 201 and resp.json() == {"id": "p1"}
            assert resp.headers["content-type"] == "application/json"
    finally:
        await c.aclose()
    assert server.connections == 1  # one keep-alive connection for all three
    req = server.seen[0]
    assert (req.method, req.target, req.body) == (
        "POST",
        "/api/internal/payments",
        b'{"amount":"1.00"}',
    )
    assert req.headers["authorization"] == "Bearer tok-1"
    assert req.headers["x-client-id"] == "shop-1"
    assert req.headers["host"] == f"127.0.0.1:{server.port}"


async def test_json_body_and_get_without_body(
    start: Callable[[Handler], Awaitable[Server]],
) -> None:
    async def ok(req: Seen) -> bytes:
        return response(200)

    server = await start(ok)
    c = client(server)
    try:
        await c.request("POST", "/api/internal/audit", json={"type": "auth.failure"})
        await c.request("GET", "/api/internal/payments/a b?c#d%")
    finally:
        await c.aclose()
    assert server.seen[0].body == b'{"type":"auth.failure"}'
    get = server.seen[1]
    assert get.target == "/api/internal/payments/a%20b%3Fc%23d%25"
    assert "content-length" not in get.headers and get.body == b""


async def test_connection_close_and_server_side_close(
    start: Callable[[Handler], Awaitable[Server]],
) -> None:
    async def closing(req: Seen) -> bytes:
        return response(200, extra="connection: close\r\n")

    server = await start(closing)
    c = client(server)
    try:
        for _ in range(3):
            assert (await c.request("GET", "/x")).status_code == 200
            await asyncio.sleep(0.01)  # the FIN arrives; the connection is not reused
    finally:
        await c.aclose()
    assert server.connections == 3


async def test_chunked_response(start: Callable[[Handler], Awaitable[Server]]) -> None:
    async def chunked(req: Seen) -> bytes:
        head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        return head + b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"

    server = await start(chunked)
    c = client(server)
    try:
        assert (await c.request("GET", "/x")).content == b"abcde"
        assert (await c.request("GET", "/x")).content == b"abcde"
    finally:
        await c.aclose()
    assert server.connections == 1


async def test_401_refreshes_the_token_once(start: Callable[[Handler], Awaitable[Server]]) -> None:
    async def rotated(req: Seen) -> bytes:
        ok = req.headers["authorization"] == "Bearer tok-2"
        return response(201 if ok else 401)

    server = await start(rotated)
    vault = Vault("tok-1", "tok-2")
    c = client(server, vault)
    try:
        assert (await c.request("POST", "/p", content=b"{}")).status_code == 201
        assert (await c.request("POST", "/p", content=b"{}")).status_code == 201
    finally:
        await c.aclose()
    assert vault.calls == 2
    assert [r.headers["authorization"] for r in server.seen] == [
        "Bearer tok-1",
        "Bearer tok-2",
        "Bearer tok-2",
    ]


async def test_no_answer_is_unavailable_and_never_retried(
    start: Callable[[Handler], Awaitable[Server]],
) -> None:
    async def hang_up(req: Seen) -> None:
        return None

    server = await start(hang_up)
    c = client(server)
    try:
        with pytest.raises(SapiUnavailable):
            await c.request("POST", "/p", content=b"{}")
    finally:
        await c.aclose()
    assert len(server.seen) == 1  # a POST is never sent twice


async def test_timeout_is_unavailable(start: Callable[[Handler], Awaitable[Server]]) -> None:
    async def slow(req: Seen) -> bytes:
        await asyncio.sleep(5)
        return response(200)

    server = await start(slow)
    c = client(server, timeout=0.2)
    try:
        with pytest.raises(SapiUnavailable):
            await c.request("GET", "/x")
        assert not await c.health()
    finally:
        await c.aclose()


async def test_refused_connection_and_bad_headers() -> None:
    from payapi.servers.procs import free_port

    c = SapiClient(f"http://127.0.0.1:{free_port()}", Vault("t"))  # type: ignore[arg-type]
    try:
        with pytest.raises(SapiUnavailable):
            await c.request("GET", "/x")
        assert not await c.health()
        with pytest.raises(SapiUnavailable):
            await c.request("GET", "/x", headers={"X-Client-ID": "a\r\nX-Evil: 1"})
    finally:
        await c.aclose()


async def test_concurrent_requests_get_their_own_answers(
    start: Callable[[Handler], Awaitable[Server]],
) -> None:
    async def echo(req: Seen) -> bytes:
        await asyncio.sleep(0.001 * (hash(req.headers["x-n"]) % 5))
        return response(200, req.headers["x-n"].encode())

    server = await start(echo)
    c = client(server)
    try:
        answers = await asyncio.gather(
            *(c.request("GET", "/x", headers={"X-N": str(i)}) for i in range(50))
        )
    finally:
        await c.aclose()
    assert [a.content for a in answers] == [str(i).encode() for i in range(50)]
    assert server.connections <= 50


async def test_oversized_response_is_unavailable(
    start: Callable[[Handler], Awaitable[Server]],
) -> None:
    async def huge(req: Seen) -> bytes:
        return response(200, b"x" * (2 * 1024 * 1024))

    server = await start(huge)
    c = client(server)
    try:
        with pytest.raises(SapiUnavailable):
            await c.request("GET", "/x")
    finally:
        await c.aclose()
