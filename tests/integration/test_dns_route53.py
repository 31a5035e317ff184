"""The Route53 adapter against moto's server (the session's, which speaks Route53 on the
same port as S3): zones, UPSERT, exact-match lookups, and one-line errors."""

from __future__ import annotations

import time
from typing import Any

import boto3
import botocore.session
import pytest

from payapi.servers.procs import free_port
from payapi.systems.route53 import (
    DnsAnswer,
    DnsError,
    DnsRecordMissing,
    DnsZoneMissing,
    Route53Dns,
)
from tests.integration import s3_server
from tests.integration.dns_lab import unique_zone, zone


@pytest.fixture
def api(s3_endpoint: str) -> str:
    """moto's server (its dummy credentials in the environment)."""
    return s3_endpoint


def test_ensure_zone_creates_once_and_zone_id_finds_it(api: str) -> None:
    name = unique_zone()
    dns = Route53Dns(name, endpoint_url=api)
    zone_id = dns.ensure_zone()
    assert zone_id and "/" not in zone_id
    assert dns.ensure_zone() == zone_id
    # Another client, by name only: the same zone, not a second one.
    assert Route53Dns(name.upper().rstrip("."), endpoint_url=api).zone_id == zone_id
    assert Route53Dns(name, endpoint_url=api).ensure_zone() == zone_id


def test_upsert_then_lookup_exact_match(api: str) -> None:
    name = unique_zone()
    dns = zone(api, name)
    change = dns.upsert_cname(f"api.{name}", f"primary.{name}", 30)
    assert change
    assert dns.lookup(f"API.{name}") == DnsAnswer(f"primary.{name}", 30)
    # The same record again (UPSERT): a new target and TTL, still one record.
    dns.upsert_cname(f"api.{name}", f"dr.{name}", 5)
    assert dns.lookup(f"api.{name}") == DnsAnswer(f"dr.{name}", 5)
    # A name the listing would start *after* is not ours: exact match only.
    dns.upsert_cname(f"apia.{name}", f"dr.{name}", 5)
    with pytest.raises(DnsRecordMissing, match=f"no CNAME record ap.{name}"):
        dns.lookup(f"ap.{name}")


def test_record_outside_the_zone_is_refused_before_any_call(api: str) -> None:
    dns = zone(api, unique_zone())
    with pytest.raises(DnsError, match="is not in zone"):
        dns.upsert_cname("api.elsewhere.lab.", "dr.elsewhere.lab.", 5)
    with pytest.raises(DnsError, match="is not in zone"):
        dns.lookup("api.elsewhere.lab")


def test_unknown_zone_is_one_line(api: str) -> None:
    name = unique_zone()
    dns = Route53Dns(name, endpoint_url=api)
    with pytest.raises(DnsZoneMissing) as err:
        dns.lookup(f"api.{name}")
    assert str(err.value) == f"no hosted zone named {name} in {api}"
    with pytest.raises(DnsZoneMissing):
        dns.upsert_cname(f"api.{name}", f"dr.{name}", 5)


def test_unreachable_api_is_one_line_and_fast() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    dns = Route53Dns(unique_zone(), endpoint_url=url, max_attempts=1, connect_timeout=0.5)
    with pytest.raises(DnsError) as err:
        _ = dns.zone_id
    assert str(err.value).endswith(f"{url} is unreachable")


def test_no_credentials_says_where_they_come_from(api: str) -> None:
    # A credential chain with no provider at all: whatever this machine has is not read.
    session = botocore.session.Session()
    session.get_component("credential_provider").providers = []
    client = session.create_client("route53", endpoint_url=api, region_name=s3_server.REGION)
    with pytest.raises(DnsError, match="no AWS credentials") as err:
        _ = Route53Dns(unique_zone(), client=client).zone_id
    assert "\n" not in str(err.value)


class _Reporting:
    """The real boto3 client, except that a change is first reported PENDING (as real
    Route53 does for up to a minute; moto reports INSYNC at once) for ``pending`` polls."""

    def __init__(self, client: Any, pending: int) -> None:
        self._client, self.pending, self.polls = client, pending, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def change_resource_record_sets(self, **kw: Any) -> Any:
        out = self._client.change_resource_record_sets(**kw)
        out["ChangeInfo"]["Status"] = "PENDING"
        return out

    def get_change(self, **kw: Any) -> Any:
        out = self._client.get_change(**kw)
        self.polls += 1
        if self.polls <= self.pending:
            out["ChangeInfo"]["Status"] = "PENDING"
        return out


def test_upsert_waits_for_insync(api: str) -> None:
    name = unique_zone()
    zone(api, name)
    real = boto3.client("route53", endpoint_url=api, region_name=s3_server.REGION)
    client = _Reporting(real, pending=2)
    slept: list[float] = []
    dns = Route53Dns(name, client=client, sleep=slept.append)  # type: ignore[arg-type]
    dns.upsert_cname(f"api.{name}", f"dr.{name}", 5)
    assert client.polls == 3  # PENDING, PENDING, INSYNC
    assert slept == [0.5, 1.0, 2.0]

    stuck = _Reporting(real, pending=10**6)
    dns = Route53Dns(name, client=stuck, sleep=lambda _: time.sleep(0.05))  # type: ignore[arg-type]
    with pytest.raises(DnsError, match=r"still PENDING after 0\.2s"):
        dns.upsert_cname(f"api.{name}", f"dr.{name}", 5, sync_timeout=0.2)
