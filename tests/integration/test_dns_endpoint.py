"""The DNS record in Route53 (moto's server) and the global endpoint that follows it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from payapi.servers.procs import free_port
from payapi.systems.global_endpoint import Answer, Forwarder, answer_expired, serve
from payapi.systems.route53 import DnsError, Route53Dns, region_of, target_for
from tests.scenarios.conftest import run_cli


def test_region_names() -> None:
    assert target_for("dr", "payments.lab") == "dr.payments.lab."
    assert region_of("dr.payments.lab.", "payments.lab") == "dr"
    assert region_of("dr.payments.lab", "payments.lab.") == "dr"
    assert region_of("a.b.payments.lab.", "payments.lab") is None
    assert region_of("elsewhere.example.", "payments.lab") is None


def test_answers_expire_after_the_ttl_and_the_refresh() -> None:
    a = Answer("dr", ttl=5, fetched_at=100.0)
    assert answer_expired(None, 0, 1)
    assert not answer_expired(a, 104.0, 1.0)
    assert answer_expired(a, 105.0, 1.0)
    assert not answer_expired(a, 109.0, 10.0)  # refreshing less often than the TTL


@pytest.fixture
def zone(s3_endpoint: str) -> Route53Dns:
    dns = Route53Dns(f"z{uuid.uuid4().hex[:8]}.lab", endpoint_url=s3_endpoint)
    dns.ensure_zone()
    return dns


def test_upsert_and_lookup(zone: Route53Dns) -> None:
    record = f"api.{zone.zone}"
    with pytest.raises(DnsError, match="no CNAME record"):
        zone.lookup(record)
    zone.upsert_cname(record, target_for("primary", zone.zone), 5)
    assert zone.lookup(record).target == target_for("primary", zone.zone)
    zone.upsert_cname(record, target_for("dr", zone.zone), 7)
    answer = zone.lookup(record)
    assert region_of(answer.target, zone.zone) == "dr" and answer.ttl == 7
    assert zone.ensure_zone() == zone.zone_id  # idempotent


def test_an_unknown_zone_is_one_line(s3_endpoint: str) -> None:
    with pytest.raises(DnsError, match="no hosted zone"):
        _ = Route53Dns("nowhere.lab", endpoint_url=s3_endpoint).zone_id


class _Upstream:
    """A tiny HTTP server answering its own name, on a thread."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = free_port()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if not head:
                break
            body = self.name.encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()


@pytest.fixture
def forwarder(zone: Route53Dns) -> Iterator[tuple[Route53Dns, str]]:
    ups = {"primary": _Upstream("primary"), "dr": _Upstream("dr")}
    record = f"api.{zone.zone}"
    zone.upsert_cname(record, target_for("primary", zone.zone), 1)

    def lookup() -> tuple[str | None, int]:
        a = zone.lookup(record)
        return region_of(a.target, zone.zone), a.ttl

    port = free_port()
    fwd = Forwarder(lookup, {k: ("127.0.0.1", u.port) for k, u in ups.items()}, refresh=0.2)
    loop = asyncio.new_event_loop()

    async def main() -> None:
        servers = [await asyncio.start_server(u._handle, "127.0.0.1", u.port) for u in ups.values()]
        try:
            await serve(fwd, "127.0.0.1", port)
        finally:
            for s in servers:
                s.close()

    task = loop.create_task(main())

    def run() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(task)
        pending = asyncio.all_tasks(loop)  # connections still being forwarded
        for t in pending:
            t.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    yield zone, f"http://127.0.0.1:{port}"
    loop.call_soon_threadsafe(task.cancel)
    thread.join(timeout=10)


def test_the_endpoint_follows_the_record_and_drops_old_connections(forwarder) -> None:
    zone, url = forwarder
    with httpx.Client(base_url=url, timeout=5) as keepalive:
        assert keepalive.get("/").text == "primary"
        zone.upsert_cname(f"api.{zone.zone}", target_for("dr", zone.zone), 1)
        deadline = time.monotonic() + 10
        seen = "primary"
        while seen != "dr" and time.monotonic() < deadline:
            time.sleep(0.2)
            try:
                seen = keepalive.get("/").text  # the old connection is closed: a new one
            except httpx.HTTPError:
                continue
        assert seen == "dr"


def test_dns_cli_show_and_set(tmp_path, s3_endpoint: str) -> None:
    zone = f"c{uuid.uuid4().hex[:8]}.lab"
    Route53Dns(zone, endpoint_url=s3_endpoint).ensure_zone()
    config = tmp_path / "payapi.toml"
    config.write_text(
        f'[topology]\ndns_zone = "{zone}"\ndns_record = "api.{zone}"\n'
        f'dns_ttl_seconds = 5\ndns_endpoint_url = "{s3_endpoint}"\n'
        '[regions.primary]\nrole = "primary"\n[regions.dr]\nrole = "standby"\n'
    )
    out = json.loads(run_cli("dns", "set", "--region", "dr", "--json", config=config).stdout)
    assert out["region"] == "dr" and out["ttl"] == 5
    out = json.loads(run_cli("dns", "show", "--json", config=config).stdout)
    assert out["region"] == "dr" and out["record"] == f"api.{zone}."
    bad = run_cli("dns", "set", "--region", "mars", config=config, check=False)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
