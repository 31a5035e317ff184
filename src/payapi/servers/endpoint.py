"""The global endpoint: a TCP forwarder on loopback that stands in for DNS.

Each new client connection is forwarded, bytes as they are (HTTP, TLS, anything), to the
upstream the record names now; which one that is, and when to ask again, is decided by
:mod:`payapi.servers.endpoint_route`. This module only does: it runs the reads (a
blocking ``lookup`` callable, in a thread, so boto3 never blocks the loop), keeps the
state, accepts and forwards connections, and when the record names another upstream it
closes every connection still open to the old one, so that a keep-alive client does not
stay on a dead or fenced region. The client reconnects, and reaches the new one.

It knows nothing of regions or Route53: ``lookup`` returns a
:class:`~payapi.servers.endpoint_route.Resolved` or raises (a
:class:`~payapi.core.errors.PayapiError` with its one line, or anything else, logged by
type only). It exposes nothing but the forwarded bytes: no status page, no secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from payapi.core import logs
from payapi.core.errors import PayapiError
from payapi.servers.endpoint_route import (
    LookupFailed,
    Resolved,
    RouteState,
    Step,
    Upstream,
    after_lookup,
)

__all__ = ["GlobalEndpoint", "Lookup", "serve_until_signalled"]

Lookup = Callable[[], Resolved]
CHUNK = 64 * 1024

log = logs.get_logger("payapi.endpoint")


@dataclass(eq=False)
class _Connection:
    upstream: Upstream
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self) -> None:
        # abort, not close: close() would wait to flush into a region that may be dead.
        for writer in (self.client, self.server):
            writer.transport.abort()


class GlobalEndpoint:
    """Listen on ``host:port`` (0: a free port, see :attr:`port`) and forward.

    ``refresh_seconds`` is the most often the record is read; each good answer is also
    kept for its TTL (:func:`~payapi.servers.endpoint_route.cache_seconds`).
    """

    def __init__(
        self,
        lookup: Lookup,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        refresh_seconds: float = 5.0,
        connect_timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self.host = host
        self._port = port
        self.refresh_seconds = refresh_seconds
        self.connect_timeout = connect_timeout
        self._clock = clock
        self._state = RouteState()
        self._server: asyncio.Server | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._connections: set[_Connection] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._read_lock = asyncio.Lock()

    # ------------------------------------------------------------------ state

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._port}"

    @property
    def upstream(self) -> Upstream | None:
        """Where a connection accepted now would go (None: it would be refused)."""
        return self._state.upstream

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    def _safe_lookup(self) -> Resolved | LookupFailed:
        try:
            return self._lookup()
        except PayapiError as exc:
            return LookupFailed(str(exc))
        except Exception as exc:  # the endpoint must outlive any lookup bug
            return LookupFailed(f"lookup failed ({type(exc).__name__})")

    async def refresh(self) -> Step:
        """Read the record now and act on the answer (the refresher calls this when due)."""
        async with self._read_lock:
            # The cache period counts from the start of the read: the answer is at most
            # that old, so a change is followed within one period of being made.
            started = self._clock()
            result = await asyncio.to_thread(self._safe_lookup)
            step = after_lookup(self._state, result, now=started, refresh=self.refresh_seconds)
            self._state = step.state
            if step.note is not None:
                emit = log.warning if isinstance(result, LookupFailed) else log.info
                emit("endpoint route", note=step.note)
            if step.retired is not None:
                self._retire_all_but(step.state.upstream)
            return step

    def _retire_all_but(self, current: Upstream | None) -> None:
        old = [c for c in self._connections if c.upstream != current]
        for conn in old:
            conn.abort()
        if old:
            log.info("endpoint closed connections to the old upstream", count=len(old))

    async def _refresh_loop(self) -> None:
        # Re-checked after every sleep: a read made meanwhile (refresh()) moves the due time.
        while True:
            delay = self._state.next_read_at - self._clock()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            await self.refresh()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Read the record once, then listen and keep reading it when due."""
        await self.refresh()
        self._server = await asyncio.start_server(self._handle, self.host, self._port)
        self._port = self._server.sockets[0].getsockname()[1]
        self._refresher = asyncio.create_task(self._refresh_loop(), name="endpoint-refresh")

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            conn.abort()
        # Let the handlers end on the aborted sockets rather than be cancelled by the
        # loop's shutdown (asyncio then reports a cancelled connection callback as an error).
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=2.0)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> GlobalEndpoint:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ forwarding

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        upstream = self._state.upstream
        if upstream is None:
            writer.transport.abort()  # no answer yet: refuse rather than guess a region
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(upstream.host, upstream.port), self.connect_timeout
            )
        except (OSError, TimeoutError) as exc:
            log.warning(
                "endpoint cannot reach upstream", upstream=str(upstream), error=type(exc).__name__
            )
            writer.transport.abort()
            return
        if self._state.upstream != upstream:
            # The record changed while this connection was being opened.
            up_writer.transport.abort()
            writer.transport.abort()
            return
        conn = _Connection(upstream, writer, up_writer)
        self._connections.add(conn)
        try:
            conn.tasks = [
                asyncio.create_task(_pipe(reader, up_writer, conn)),
                asyncio.create_task(_pipe(up_reader, writer, conn)),
            ]
            await asyncio.gather(*conn.tasks)
        finally:
            self._connections.discard(conn)
            for w in (writer, up_writer):
                w.close()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, conn: _Connection) -> None:
    """Copy until end of file, then pass the half-close on; an error ends both directions."""
    try:
        while data := await src.read(CHUNK):
            dst.write(data)
            await dst.drain()
        if dst.can_write_eof() and not dst.transport.is_closing():
            dst.write_eof()
    except (OSError, RuntimeError):
        conn.abort()


async def serve_until_signalled(endpoint: GlobalEndpoint) -> None:
    """Run ``endpoint`` until SIGTERM or SIGINT (``payapi serve endpoint``)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with endpoint:
        log.info("endpoint listening", url=endpoint.url)
        await stop.wait()
