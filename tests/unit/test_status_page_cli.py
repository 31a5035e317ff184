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
