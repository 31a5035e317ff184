"""`payapi status-page build`: health checks keyed by the plan's component names, the
plan's titles as labels, and nothing of the configuration (hosts, DSNs) on the page."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from payapi.cli import status_page_cmd
from payapi.cli.main import app
from payapi.ops.health import ComponentHealth

CONFIG = """
[postgres]
payment_dsn = "postgresql://app@db-primary.corp.internal:6543/payment_db"
[vault]
url = "http://vault-a.corp.internal:18200"
[[incident.channels]]
name = "email"
kind = "smtp"
host = "smtp.corp.internal"
from = "payapi@corp.example"
"""


def test_build_writes_the_page_from_health(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "payapi.toml"
    cfg.write_text(CONFIG)
    detail = "leader db-primary.corp.internal:6543 down"
    monkeypatch.setattr(
        status_page_cmd,
        "_health",
        lambda settings, plan, environment: {
            "postgres": ComponentHealth(False, detail),
            "eapi": ComponentHealth(True, "http://eapi.corp.internal:8000 ok"),
            "replication": ComponentHealth(True, "lag 0"),
        },
    )
    out = tmp_path / "page"
    res = CliRunner().invoke(
        app, ["--config", str(cfg), "status-page", "build", "--out", str(out), "--json"]
    )
    assert res.exit_code == 0, res.stderr
    data = json.loads(res.stdout)
    assert [(c["id"], c["name"], c["status"]) for c in data["components"]] == [
        ("database", "Database", "partial_outage"),
        ("payment-eapi", "Payment-EAPI", "operational"),
        ("replication", "Disaster-recovery replication", "operational"),
    ]
    for f in out.iterdir():
        text = f.read_text()
        for leak in ("corp.internal", "6543", "18200", "payment_db", "corp.example"):
            assert leak not in text, (f.name, leak)


def test_serve_needs_a_built_page(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["status-page", "serve", "--dir", str(tmp_path), "--port", "0"])
    assert res.exit_code == 2 and "run status-page build" in res.stderr


def test_an_open_incident_is_on_the_page_without_its_people(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = Path(__file__).resolve().parents[2] / "tests" / "data" / "dr-plan-contacts.yaml"
    cfg = tmp_path / "payapi.toml"
    cfg.write_text(f'plan_file = "{plan}"\n' + CONFIG)
    monkeypatch.setattr(
        status_page_cmd,
        "_health",
        lambda settings, plan, environment: {"eapi": ComponentHealth(True, "ok")},
    )
    runner = CliRunner()
    declared = runner.invoke(
        app,
        ["--config", str(cfg), "incident", "declare", "--description", "EAPI unreachable",
         "--impact", "Payments refused", "--services", "eapi", "--json"],
    )  # fmt: skip
    assert declared.exit_code in (0, 1), declared.stderr  # the smtp channel may be refused
    out = tmp_path / "page"
    res = runner.invoke(
        app, ["--config", str(cfg), "status-page", "build", "--out", str(out), "--json"]
    )
    assert res.exit_code == 0, res.stderr
    data = json.loads(res.stdout)
    assert [i["name"] for i in data["incidents"]] == ["EAPI unreachable"]
    eapi = next(c for c in data["components"] if c["id"] == "payment-eapi")
    assert eapi["status"] == "degraded_performance"  # healthy, but an open incident names it
    page = (out / "index.html").read_text() + (out / "status.json").read_text()
    assert "Ada Lovelace" not in page
