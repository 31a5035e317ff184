"""Helpers for the DNS tests: a hosted zone of their own on the session's moto server, a
config naming it, and tiny HTTP upstreams standing in for each region's EAPI."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from payapi.core.settings import Settings, load_settings
from payapi.systems.route53 import Route53Dns


def unique_zone() -> str:
    """A zone no other test uses (moto keeps every zone in memory for the session)."""
    return f"t{uuid.uuid4().hex[:10]}.lab."


def write_config(
    path: Path,
    *,
    api: str,
    zone: str,
    eapi: dict[str, str | None],
    ttl: int = 1,
    refresh: float = 0.1,
    endpoint: str = "http://127.0.0.1:0",
) -> Path:
    """A payapi.toml with ``[topology]`` and one ``[regions.NAME]`` per entry of ``eapi``
    (the first is the primary); an entry of None has no EAPI url."""
    lines = [
        "[topology]",
        f'endpoint = "{endpoint}"',
        f'dns_record = "api.{zone}"',
        f'dns_zone = "{zone}"',
        f"dns_ttl_seconds = {ttl}",
        f"endpoint_refresh_seconds = {refresh}",
        f'dns_endpoint_url = "{api}"',
        "dns_sync_timeout_seconds = 5",
        "endpoint_connect_timeout_seconds = 1",
    ]
    for i, (name, url) in enumerate(eapi.items()):
        lines += ["", f"[regions.{name}]", f'role = "{"primary" if i == 0 else "standby"}"']
        if url is not None:
            lines += [f"[regions.{name}.eapi]", f'url = "{url}"']
    path.write_text("\n".join(lines) + "\n")
    return path


def settings_for(path: Path) -> Settings:
    return load_settings(path)


def zone(api: str, name: str) -> Route53Dns:
    dns = Route53Dns(name, endpoint_url=api)
    dns.ensure_zone()
    return dns


@dataclass
class HttpUpstream:
    """A keep-alive HTTP/1.1 server answering every request with its ``body``; it counts
    the connections it has open, so a test can see the endpoint close them."""

    body: str
    port: int = 0
    server: asyncio.Server | None = None
    open_connections: int = 0
    writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self) -> HttpUpstream:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open_connections += 1
        self.writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    break
                payload = self.body.encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                    + f"Content-Length: {len(payload)}\r\n\r\n".encode()
                    + payload
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open_connections -= 1
            self.writers.discard(writer)
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for w in list(self.writers):
                w.transport.abort()
            await self.server.wait_closed()


class HttpClient:
    """One keep-alive connection that sends GETs and reads each answer's body."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> HttpClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def get(self, timeout: float = 2.0) -> str:
        self.writer.write(b"GET /health HTTP/1.1\r\nHost: api\r\n\r\n")
        await self.writer.drain()
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        return (await asyncio.wait_for(self.reader.readexactly(length), timeout)).decode()

    async def closed_by_peer(self, timeout: float) -> bool:
        """True when the other end closes this connection within ``timeout``."""
        try:
            data = await asyncio.wait_for(self.reader.read(1), timeout)
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        return data == b""

    def close(self) -> None:
        self.writer.close()


async def get_once(port: int, timeout: float = 2.0) -> str:
    """One GET on a new connection; the body."""
    client = await HttpClient.connect(port)
    try:
        return await client.get(timeout)
    finally:
        client.close()
