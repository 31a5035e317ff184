"""The global endpoint with real sockets: two tiny HTTP upstreams stand in for the regions'
EAPIs, the record lives in moto's Route53, and the endpoint follows it (TTL honoured,
old connections closed on a switch, last answer kept when the record cannot be read)."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import boto3
import pytest

from payapi.core.settings import Settings
from payapi.servers.endpoint import GlobalEndpoint
from payapi.servers.endpoint_route import Resolved, Upstream
from payapi.servers.procs import free_port, port_open
from payapi.systems.dns import endpoint_lookup, point_at
from tests.integration import s3_server
from tests.integration.dns_lab import (
    HttpClient,
    HttpUpstream,
    get_once,
    settings_for,
    unique_zone,
    write_config,
    zone,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def upstreams() -> AsyncIterator[tuple[HttpUpstream, HttpUpstream]]:
    primary = await HttpUpstream("primary").start()
    dr = await HttpUpstream("dr").start()
    yield primary, dr
    await primary.stop()
    await dr.stop()


def _lab(
    tmp_path: Path,
    api: str,
    primary: HttpUpstream,
    dr: HttpUpstream,
    *,
    ttl: int,
    refresh: float,
    endpoint: str = "http://127.0.0.1:0",
) -> tuple[Settings, str]:
    name = unique_zone()
    zone(api, name)
    config = write_config(
        tmp_path / "payapi.toml",
        api=api,
        zone=name,
        ttl=ttl,
        refresh=refresh,
        endpoint=endpoint,
        eapi={"primary": primary.url, "dr": dr.url},
    )
    return settings_for(config), name


async def _until(predicate: Callable[[], Awaitable[bool]], timeout: float) -> float:
    """Poll an async predicate until true; the seconds it took (fails on timeout)."""
    started = time.monotonic()
    while True:
        if await predicate():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout}s")
        await asyncio.sleep(0.05)


async def test_forwards_and_switches_closing_old_connections(
    s3_endpoint: str, tmp_path: Path, upstreams: tuple[HttpUpstream, HttpUpstream]
) -> None:
    primary, dr = upstreams
    settings, _ = _lab(tmp_path, s3_endpoint, primary, dr, ttl=0, refresh=0.2)
    point_at(settings, "primary")
    async with GlobalEndpoint(endpoint_lookup(settings), refresh_seconds=0.2) as ep:
        assert ep.upstream is not None and ep.upstream.name == "primary"
        keep_alive = await HttpClient.connect(ep.port)
        assert [await keep_alive.get() for _ in range(3)] == ["primary"] * 3
        assert primary.open_connections == 1 and ep.open_connections == 1

        await asyncio.to_thread(point_at, settings, "dr")
        # The keep-alive connection is closed by the endpoint within one refresh…
        assert await keep_alive.closed_by_peer(timeout=3.0)
        keep_alive.close()
        # …the old region sees it go, and a new connection reaches the new region.
        await _until(lambda: _eq(primary.open_connections, 0), 2.0)
        assert await get_once(ep.port) == "dr"
        assert ep.upstream is not None and ep.upstream.name == "dr"


async def _eq(a: int, b: int) -> bool:
    return a == b


async def test_the_ttl_is_honoured(
    s3_endpoint: str, tmp_path: Path, upstreams: tuple[HttpUpstream, HttpUpstream]
) -> None:
    primary, dr = upstreams
    settings, _ = _lab(tmp_path, s3_endpoint, primary, dr, ttl=2, refresh=0.1)
    point_at(settings, "primary")
    async with GlobalEndpoint(endpoint_lookup(settings), refresh_seconds=0.1) as ep:
        await ep.refresh()  # a fresh read now: cached for the TTL (2 s), not the refresh
        read_at = time.monotonic()
        await asyncio.to_thread(point_at, settings, "dr")
        assert await get_once(ep.port) == "primary"  # still within the TTL

        async def on_dr() -> bool:
            return await get_once(ep.port) == "dr"

        await _until(on_dr, 4.0)
        waited = time.monotonic() - read_at
        assert 1.8 <= waited <= 3.5, waited  # max(ttl 2, refresh 0.1) after the read


async def test_keeps_the_last_answer_when_the_record_cannot_be_read(
    s3_endpoint: str, tmp_path: Path, upstreams: tuple[HttpUpstream, HttpUpstream]
) -> None:
    primary, dr = upstreams
    settings, name = _lab(tmp_path, s3_endpoint, primary, dr, ttl=0, refresh=0.1)
    point_at(settings, "primary")
    async with GlobalEndpoint(endpoint_lookup(settings), refresh_seconds=0.1) as ep:
        assert await get_once(ep.port) == "primary"
        # The record disappears (an operator's mistake, an API outage): keep forwarding.
        r53 = boto3.client("route53", endpoint_url=s3_endpoint, region_name=s3_server.REGION)
        r53.change_resource_record_sets(
            HostedZoneId=zone(s3_endpoint, name).zone_id,
            ChangeBatch={
                "Changes": [
                    {
                        "Action": "DELETE",
                        "ResourceRecordSet": {
                            "Name": f"api.{name}",
                            "Type": "CNAME",
                            "TTL": 0,
                            "ResourceRecords": [{"Value": f"primary.{name}"}],
                        },
                    }
                ]
            },
        )
        step = await ep.refresh()
        assert step.state.last_error == f"no CNAME record api.{name} in zone {name}"
        assert await get_once(ep.port) == "primary"
        # It names a region this config does not know: keep forwarding too.
        zone(s3_endpoint, name).upsert_cname(f"api.{name}", f"mars.{name}", 0)
        step = await ep.refresh()
        assert step.state.last_error is not None and "'mars'" in step.state.last_error
        assert await get_once(ep.port) == "primary"
        # Readable again: followed.
        await asyncio.to_thread(point_at, settings, "dr")
        await ep.refresh()
        assert await get_once(ep.port) == "dr"


async def test_refuses_without_any_answer(
    s3_endpoint: str, tmp_path: Path, upstreams: tuple[HttpUpstream, HttpUpstream]
) -> None:
    primary, dr = upstreams
    settings, _ = _lab(tmp_path, s3_endpoint, primary, dr, ttl=0, refresh=0.1)
    async with GlobalEndpoint(endpoint_lookup(settings), refresh_seconds=0.1) as ep:
        assert ep.upstream is None
        client = await HttpClient.connect(ep.port)
        assert await client.closed_by_peer(timeout=2.0)
        client.close()
        assert primary.open_connections == 0 and dr.open_connections == 0
        # Once the record exists, the next read forwards.
        await asyncio.to_thread(point_at, settings, "dr")
        await ep.refresh()
        assert await get_once(ep.port) == "dr"


async def test_a_dead_upstream_closes_the_client_promptly(
    s3_endpoint: str, tmp_path: Path, upstreams: tuple[HttpUpstream, HttpUpstream]
) -> None:
    primary, _ = upstreams
    dead = HttpUpstream("dead", port=free_port())  # nothing listens there
    settings, _ = _lab(tmp_path, s3_endpoint, primary, dead, ttl=0, refresh=0.1)
    point_at(settings, "dr")
    async with GlobalEndpoint(endpoint_lookup(settings), refresh_seconds=0.1) as ep:
        client = await HttpClient.connect(ep.port)
        started = time.monotonic()
        assert await client.closed_by_peer(timeout=3.0)
        assert time.monotonic() - started < 2.0
        client.close()


async def test_bytes_both_ways_and_half_close(s3_endpoint: str, tmp_path: Path) -> None:
    """An echo upstream: a megabyte goes through whole, and the client's half-close
    reaches the upstream (which answers, then closes)."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # until the client's EOF
        writer.write(data[::-1])
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    upstream = HttpUpstream("echo", port=port)
    settings, _ = _lab(tmp_path, s3_endpoint, upstream, upstream, ttl=0, refresh=0.5)
    point_at(settings, "primary")
    try:
        async with GlobalEndpoint(endpoint_lookup(settings), refresh_seconds=0.5) as ep:
            payload = bytes(range(256)) * 4096
            reader, writer = await asyncio.open_connection("127.0.0.1", ep.port)
            writer.write(payload)
            writer.write_eof()
            got = await asyncio.wait_for(reader.read(), 5.0)
            writer.close()
            assert got == payload[::-1]
            await _until(lambda: _eq(ep.open_connections, 0), 2.0)
    finally:
        server.close()
        await server.wait_closed()


async def test_payapi_serve_endpoint(
    s3_endpoint: str, tmp_path: Path, upstreams: tuple[HttpUpstream, HttpUpstream]
) -> None:
    """The process the lab runs: listens on [topology] endpoint, stops on SIGTERM."""
    primary, dr = upstreams
    port = free_port()
    settings, _ = _lab(
        tmp_path,
        s3_endpoint,
        primary,
        dr,
        ttl=0,
        refresh=0.1,
        endpoint=f"http://127.0.0.1:{port}",
    )
    point_at(settings, "primary")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "payapi",
        "--config",
        str(settings.config_path),
        "serve",
        "endpoint",
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await _until(lambda: asyncio.to_thread(port_open, port), 20.0)
        assert await get_once(port) == "primary"
        await asyncio.to_thread(point_at, settings, "dr")

        async def on_dr() -> bool:
            return await get_once(port) == "dr"

        await _until(on_dr, 3.0)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 10.0)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert "Traceback" not in err.decode(), err.decode()[-3000:]


async def test_a_lookup_bug_is_reported_by_type_only(
    upstreams: tuple[HttpUpstream, HttpUpstream],
) -> None:
    """Whatever a lookup raises, the endpoint keeps forwarding and quotes no message (a
    foreign exception's text might hold anything)."""
    primary, _ = upstreams
    answers: list[Resolved | Exception] = [
        Resolved(Upstream("primary", "127.0.0.1", primary.port), 0),
        RuntimeError("password=hunter2"),
    ]

    def lookup() -> Resolved:
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    async with GlobalEndpoint(lookup, refresh_seconds=0.1) as ep:
        step = await ep.refresh()
        assert step.state.last_error == "lookup failed (RuntimeError)"
        assert step.note is not None and "hunter2" not in step.note
        assert await get_once(ep.port) == "primary"
