"""The public status page: Statuspage's component states from health + open incidents,
drills left out unless asked, no internal detail (hosts, DSNs, people, emails, the
channels' secrets) anywhere in it, and served on loopback."""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from payapi.incident.status_page import (
    PublicIncident,
    PublicUpdate,
    build,
    component_state,
    page_data,
    scrub,
    serve,
)

T0 = datetime(2025, 3, 1, 3, 0, tzinfo=UTC)


@dataclass(frozen=True)
class H:
    healthy: bool
    detail: str = "leader pg-a 10.0.0.5:5432 postgresql://app:pw@db.internal:5432/payment_db"


@pytest.mark.parametrize(
    "healthy, named, state",
    [
        (True, False, "operational"),
        (True, True, "degraded_performance"),
        (False, False, "partial_outage"),
        (False, True, "major_outage"),
    ],
)
def test_the_state_rule(healthy: bool, named: bool, state: str) -> None:
    assert component_state(healthy, named) == state


def incident(**kw: object) -> PublicIncident:
    base: dict[str, object] = {
        "incident_id": "INC-20250301-001",
        "title": "Payments unavailable",
        "state": "recovering",
        "started_at": T0,
        "components": ("database", "payment-eapi"),
        "updates": (
            PublicUpdate(T0, "declared", "We are restoring the payment database."),
            PublicUpdate(
                T0 + timedelta(minutes=30),
                "restore",
                "Ada Lovelace (ada@corp.example, +1 555 0100) restored db.internal:5432 "
                "from https://hooks.slack.com/services/T0/B0/SECRET; 10.0.0.5 next.",
            ),
        ),
    }
    base.update(kw)
    return PublicIncident(**base)  # type: ignore[arg-type]


COMPONENTS = {"database": H(False), "payment-eapi": H(True), "vault": H(True), "redis": H(False)}


def test_components_from_health_and_open_incidents() -> None:
    data = page_data(COMPONENTS, [incident()], now=T0, labels={"payment-eapi": "Payment API"})
    states = {c["id"]: (c["name"], c["status"]) for c in data["components"]}
    assert states == {
        "database": ("database", "major_outage"),
        "payment-eapi": ("Payment API", "degraded_performance"),
        "vault": ("vault", "operational"),
        "redis": ("redis", "partial_outage"),
    }
    assert data["status"]["indicator"] == "critical"
    (inc,) = data["incidents"]
    assert inc["status"] == "identified"
    assert [u["status"] for u in inc["incident_updates"]] == ["restore", "declared"]


def test_a_closed_incident_no_longer_marks_components() -> None:
    data = page_data({"database": H(True)}, [incident(state="closed")], now=T0)
    assert data["components"][0]["status"] == "operational"
    assert data["incidents"][0]["status"] == "resolved"
    assert data["status"] == {"indicator": "none", "description": "All Systems Operational"}


def test_drills_are_left_out_unless_asked() -> None:
    drill = incident(drill=True, title="[DRILL] Database drill")
    quiet = page_data({"database": H(True)}, [drill], now=T0)
    assert quiet["incidents"] == [] and quiet["components"][0]["status"] == "operational"
    shown = page_data({"database": H(True)}, [drill], now=T0, include_drills=True)
    assert shown["incidents"][0]["drill"] is True


def test_no_internal_detail_reaches_the_page(tmp_path: Path) -> None:
    internal = ["Ada Lovelace", "+1 555 0100", "db.internal"]
    build(tmp_path, COMPONENTS, [incident()], now=T0, internal=internal)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["index.html", "status.json"]
    for name in files:
        text = (tmp_path / name).read_text()
        for leak in [
            *internal,
            "ada@corp.example",
            "hooks.slack.com",
            "SECRET",
            "10.0.0.5",
            "5432",
            "postgresql://",
            "pw@",
            "pg-a",
        ]:
            assert leak not in text, (name, leak)
    html = (tmp_path / "index.html").read_text()
    assert "<style>" in html and "http" not in html.split("<body>", 1)[1]  # no CDN, no links
    assert "Major Outage" in html and "We are restoring the payment database." in html
    json.loads((tmp_path / "status.json").read_text())


def test_scrub_keeps_ordinary_words() -> None:
    assert (
        scrub("Restore done at 03:30 UTC, 2 of 3 steps")
        == "Restore done at 03:30 UTC, 2 of 3 steps"
    )
    assert scrub("see https://x.example/a and a@b.example") == "see [internal] and [internal]"


def test_serve_on_loopback(tmp_path: Path) -> None:
    build(tmp_path, {"vault": H(True)}, [], now=T0)
    server = serve(tmp_path, 0)
    try:
        with urllib.request.urlopen(server.url + "status.json", timeout=5) as resp:
            assert json.loads(resp.read())["components"][0]["status"] == "operational"
        with urllib.request.urlopen(server.url, timeout=5) as resp:
            assert b"All Systems Operational" in resp.read()
    finally:
        server.close()
    assert server.server.server_address[0] == "127.0.0.1"
