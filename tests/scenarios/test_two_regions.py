"""The two-region lab under failure, with payments flowing through the global endpoint.

One lab for the session (tests/scenarios/conftest.py); the tests run in file order and
each leaves the platform serving. kill -9 of the database leader and of the Redis primary
are drills now (tests/scenarios/test_drills.py), measured as operators measure them, and
so is the regional outage with its failover to DR and failback (the region-outage drill). A
writer thread pays through the endpoint all along and records every payment it saw
acknowledged; after each failure the test checks that every one of them is in the
serving region's database (or, for a regional failover, that the missing ones were all
acknowledged inside the reported data window).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from payapi.lab.regions import TwoRegionLab
from payapi.servers.postgres import psql
from payapi.servers.procs import wait_for
from tests.scenarios.conftest import Client, run_cli

pytestmark = pytest.mark.timeout(600)


@dataclass
class Ack:
    payment_id: str
    key: str
    at: datetime


@dataclass
class Writer:
    """Pays through the endpoint in a loop; records what was acknowledged."""

    base_url: str
    client: Client
    acks: list[Ack] = field(default_factory=list)
    errors: dict[int | str, int] = field(default_factory=dict)
    server_errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            key = uuid.uuid4().hex
            try:
                with httpx.Client(base_url=self.base_url, timeout=5, trust_env=False) as http:
                    r = http.post(
                        "/api/v1/payments",
                        headers={**self.client.headers, "Idempotency-Key": key},
                        json={"amount": "1.00", "currency": "USD", "reference": key[:20]},
                    )
            except httpx.HTTPError as exc:
                self.errors[type(exc).__name__] = self.errors.get(type(exc).__name__, 0) + 1
                time.sleep(0.1)
                continue
            if r.status_code in (200, 201):
                self.acks.append(Ack(r.json()["id"], key, datetime.now(UTC)))
            else:
                self.errors[r.status_code] = self.errors.get(r.status_code, 0) + 1
                if r.status_code >= 500 and r.status_code != 503 and r.status_code != 502:
                    self.server_errors.append(f"{r.status_code} {r.text[:200]}")
                time.sleep(0.1)
            time.sleep(0.02)

    def acks_since(self, t: float) -> int:
        return sum(1 for a in self.acks if a.at.timestamp() >= t)


@dataclass
class TwoRegions:
    lab: TwoRegionLab
    status: dict[str, Any]
    client: Client
    writer: Writer
    lost_in_failover: set[str] = field(default_factory=set)  # payment ids
    token: str | None = None  # issued before the regional outage, in the seeded snapshot

    @property
    def config(self) -> Path:
        return self.lab.config_path

    def refresh(self) -> dict[str, Any]:
        self.status = self.lab.status()
        return self.status

    def missing(self, acks: list[Ack]) -> list[Ack]:
        """The acknowledged payments that the serving region's database lacks."""
        acks = list(acks)  # the writer appends while we look: judge one snapshot
        dsn = self.lab.region(self.lab.active_region).dsn("payment_db")
        ids = {a.payment_id for a in acks}
        found: set[str] = set()
        chunk = list(ids)
        for i in range(0, len(chunk), 500):
            part = ",".join(f"'{x}'" for x in chunk[i : i + 500])
            rows = psql(dsn, f"SELECT id FROM payments WHERE id IN ({part})")
            found |= {r[0] for r in rows}
        return [a for a in acks if a.payment_id not in found]

    def wait_payments(self, timeout: float) -> float:
        """Seconds until the writer's next acknowledged payment."""
        start = time.monotonic()
        n = len(self.writer.acks)
        wait_for(lambda: len(self.writer.acks) > n, timeout=timeout, what="payments again")
        return time.monotonic() - start


@pytest.fixture(scope="module")
def regions(two_region_lab: TwoRegionLab) -> Iterator[TwoRegions]:
    lab = two_region_lab
    res = run_cli("clients", "create", "failover-writer", "--json", config=lab.config_path)
    data = json.loads(res.stdout)
    client = Client("failover-writer", data["client_id"], data["client_secret"])
    writer = Writer(lab.endpoint_url, client)
    writer.start()
    try:
        handle = TwoRegions(lab, lab.status(), client, writer)
        handle.wait_payments(60)
        yield handle
    finally:
        writer.stop()


def test_status_has_the_contract_keys(regions: TwoRegions) -> None:
    s = regions.refresh()
    for key in (
        "config",
        "eapi",
        "sapi",
        "vault",
        "postgres",
        "redis",
        "endpoint",
        "regions",
        "dns",
    ):
        assert key in s
    assert set(s["regions"]) == {"primary", "dr"}
    primary, dr = s["regions"]["primary"], s["regions"]["dr"]
    roles = sorted(m["role"] for m in primary["postgres"]["members"])
    assert roles == ["leader", "sync_standby"]
    assert [m["role"] for m in dr["postgres"]["members"]] == ["standby_leader"]
    for m in primary["postgres"]["members"] + dr["postgres"]["members"]:
        assert set(m) >= {"name", "role", "pid", "port", "lag_bytes"}
        assert m["pid"] is not None
    assert len(primary["redis"]["members"]) == 2 and len(primary["redis"]["sentinels"]) == 3
    assert primary["eapi"] and primary["sapi"]
    assert dr["eapi"] is None and dr["sapi"] is None
    assert set(dr["etcd"]) == {"pid", "url"}
    assert set(s["dns"]) == {"endpoint_url", "zone_id", "record"}


def test_plan_check_passes_on_a_fresh_lab(regions: TwoRegions) -> None:
    res = run_cli("plan", "check", "--json", config=regions.config, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_failover_refusals_are_one_line(regions: TwoRegions) -> None:
    res = run_cli(
        "failover", "--component", "db", "--to", "nobody", config=regions.config, check=False
    )
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    res = run_cli("region", "failover", "--to", "dr", "--yes", config=regions.config, check=False)
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "reachable" in res.stderr


def test_dr_redis_is_seeded_from_the_newest_snapshot(regions: TwoRegions) -> None:
    with httpx.Client(base_url=regions.status["endpoint"], timeout=10, trust_env=False) as http:
        r = http.post("/api/v1/authenticate", headers=regions.client.headers)
        assert r.status_code == 200, r.text
        regions.token = r.json()["access_token"]
    run_cli("backup", "run", "--component", "redis", "--json", config=regions.config)
    res = run_cli("region", "seed-redis", "--region", "dr", "--json", config=regions.config)
    assert json.loads(res.stdout)["detail"].startswith("restored snapshot"), res.stdout
    refused = run_cli(
        "region", "seed-redis", "--region", "primary", config=regions.config, check=False
    )
    assert refused.returncode == 2 and "serves" in refused.stderr, refused.stderr
