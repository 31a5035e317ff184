"""The global endpoint: a TCP forwarder that stands in for DNS in the lab.

Clients connect to one address; each new connection is forwarded to the EAPI of the
region the DNS record names (``[topology] dns_record`` in a Route53 zone, read through
:mod:`payapi.systems.route53`). Like a resolver, it keeps an answer for the record's TTL
and asks again at most every ``endpoint_refresh_seconds``: a change of the record reaches
new connections within max(TTL, refresh). When the record moves to another region, the
connections still open to the old one are closed, so keep-alive clients do not stay on a
dead or fenced region. When the record cannot be read, the last answer stands (logged);
with no answer at all, connections are refused.

:func:`answer_expired` and :func:`upstream_for` decide; :class:`Forwarder` acts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

BUFFER = 65536


@dataclass(frozen=True)
class Answer:
    region: str
    ttl: int
    fetched_at: float  # monotonic


def answer_expired(answer: Answer | None, now: float, refresh: float) -> bool:
    """Whether to read the record again: no answer yet, or the answer is older than both
    its TTL and the refresh interval allow."""
    if answer is None:
        return True
    return now - answer.fetched_at >= max(float(answer.ttl), refresh)


def upstream_for(
    region: str | None, upstreams: dict[str, tuple[str, int]]
) -> tuple[str, int] | None:
    return upstreams.get(region) if region is not None else None


def upstreams_from(urls: dict[str, str | None]) -> dict[str, tuple[str, int]]:
    """Region → (host, port) of its EAPI, from the configured URLs."""
    out = {}
    for region, url in urls.items():
        if not url:
            continue
        parts = urlsplit(url)
        if parts.hostname and parts.port:
            out[region] = (parts.hostname, parts.port)
    return out


class Forwarder:
    def __init__(
        self,
        lookup: Callable[[], tuple[str | None, int]],
        upstreams: dict[str, tuple[str, int]],
        *,
        refresh: float,
    ) -> None:
        self._lookup = lookup  # blocking: region named by the record, its TTL
        self.upstreams = upstreams
        self.refresh = refresh
        self.answer: Answer | None = None
        self._open: dict[str, set[asyncio.StreamWriter]] = {}

    async def refresh_now(self) -> None:
        try:
            region, ttl = await asyncio.to_thread(self._lookup)
        except Exception as exc:  # the record is unreadable: keep the last answer
            log.warning(
                "endpoint: cannot read the DNS record (%s); keeping the last answer",
                type(exc).__name__,
            )
            if self.answer is not None:
                self.answer = Answer(self.answer.region, self.answer.ttl, time.monotonic())
            return
        if region is None:
            log.warning("endpoint: the DNS record names no known region")
            return
        old = self.answer.region if self.answer else None
        self.answer = Answer(region, ttl, time.monotonic())
        if old is not None and old != region:
            log.warning("endpoint: the record moved from %s to %s", old, region)
            for writer in list(self._open.get(old, ())):
                writer.close()

    async def keep_fresh(self) -> None:
        while True:
            if answer_expired(self.answer, time.monotonic(), self.refresh):
                await self.refresh_now()
            await asyncio.sleep(min(self.refresh, 1.0) or 0.5)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        region = self.answer.region if self.answer else None
        target = upstream_for(region, self.upstreams)
        if target is None or region is None:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*target)
        except OSError:
            writer.close()
            return
        tracked = self._open.setdefault(region, set())
        tracked.update((writer, up_writer))
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            tracked.discard(writer)
            tracked.discard(up_writer)
            for w in (writer, up_writer):
                w.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError, ConnectionError):
        while True:
            data = await reader.read(BUFFER)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError, RuntimeError):
        if writer.can_write_eof():
            writer.write_eof()


async def serve(forwarder: Forwarder, host: str, port: int) -> None:
    await forwarder.refresh_now()
    server = await asyncio.start_server(forwarder.handle, host, port, reuse_address=True)
    refresher = asyncio.create_task(forwarder.keep_fresh())
    try:
        async with server:
            await server.serve_forever()
    finally:
        refresher.cancel()
