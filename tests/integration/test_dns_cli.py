"""`payapi dns show|set` against moto's Route53: the JSON contract, the human line, and
one-line refusals (an unknown region exits 2 and changes nothing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from payapi.cli.main import app
from payapi.core.errors import PayapiError
from tests.integration.dns_lab import unique_zone, write_config, zone

runner = CliRunner()


@pytest.fixture
def lab(s3_endpoint: str, tmp_path: Path) -> tuple[Path, str]:
    name = unique_zone()
    zone(s3_endpoint, name)
    config = write_config(
        tmp_path / "payapi.toml",
        api=s3_endpoint,
        zone=name,
        ttl=7,
        eapi={
            "primary": "http://127.0.0.1:18001",
            "dr": "http://127.0.0.1:18002",
            "far": None,
        },
    )
    return config, name


def _run(config: Path, *args: str) -> tuple[int, str, str]:
    """In process (fast). A known failure is what ``main`` makes of it: its exit code and
    ``error: <the one line>`` (the subprocess test below checks ``main`` itself)."""
    result = runner.invoke(app, ["--config", str(config), *args])
    if isinstance(result.exception, PayapiError):
        return result.exception.exit_code, result.stdout, f"error: {result.exception}"
    return result.exit_code, result.stdout, result.stderr


def _payapi(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "payapi", "--config", str(config), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_set_then_show(lab: tuple[Path, str]) -> None:
    config, name = lab
    code, out, err = _run(config, "dns", "set", "--region", "dr", "--json")
    assert code == 0, err
    change = json.loads(out)
    assert change["record"] == f"api.{name}"
    assert change["region"] == "dr"
    assert change["target"] == f"dr.{name}"
    assert change["ttl"] == 7
    assert change["change_id"] and change["seconds"] >= 0

    code, out, err = _run(config, "dns", "show", "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["record"] == f"api.{name}"
    assert shown["target"] == f"dr.{name}"
    assert shown["region"] == "dr"
    assert shown["ttl"] == 7
    assert shown["eapi_url"] == "http://127.0.0.1:18002"
    assert shown["zone"] == name and shown["zone_id"]
    assert shown["problem"] is None

    code, out, _ = _run(config, "dns", "show")
    assert code == 0
    assert f"api.{name} CNAME dr.{name} (ttl 7s) -> region dr" in out


def test_unknown_region_is_refused_with_exit_2(lab: tuple[Path, str]) -> None:
    config, _ = lab
    assert _run(config, "dns", "set", "--region", "primary")[0] == 0
    res = _payapi(config, "dns", "set", "--region", "mars", "--json")
    assert res.returncode == 2
    assert res.stdout == ""
    assert res.stderr.strip().splitlines() == [
        "error: no region named 'mars' (configured: primary, dr, far)"
    ]
    # Nothing changed.
    assert json.loads(_run(config, "dns", "show", "--json")[1])["region"] == "primary"


def test_a_region_without_eapi_is_refused(lab: tuple[Path, str]) -> None:
    config, _ = lab
    code, _, err = _run(config, "dns", "set", "--region", "far")
    assert code == 1
    assert "region 'far' has no EAPI url" in err


def test_show_without_a_record_is_one_line(lab: tuple[Path, str]) -> None:
    config, name = lab
    code, out, err = _run(config, "dns", "show", "--json")
    assert code == 1 and out == ""
    assert " ".join(err.split()) == f"error: no CNAME record api.{name} in zone {name}"


def test_show_names_no_region_for_a_foreign_target(s3_endpoint: str, lab: tuple[Path, str]) -> None:
    config, name = lab
    zone(s3_endpoint, name).upsert_cname(f"api.{name}", "lb.elsewhere.example.", 5)
    shown = json.loads(_run(config, "dns", "show", "--json")[1])
    assert shown["region"] is None and shown["eapi_url"] is None
    assert "not <region>." in shown["problem"]


def test_unknown_zone_is_one_line(s3_endpoint: str, tmp_path: Path) -> None:
    name = unique_zone()  # never created
    config = write_config(
        tmp_path / "payapi.toml", api=s3_endpoint, zone=name, eapi={"primary": "http://x:1"}
    )
    code, _, err = _run(config, "dns", "set", "--region", "primary")
    assert code == 1
    assert " ".join(err.split()) == f"error: no hosted zone named {name} in {s3_endpoint}"


def test_missing_config_keys_are_named(tmp_path: Path) -> None:
    config = tmp_path / "payapi.toml"
    config.write_text("[topology]\n")
    code, _, err = _run(config, "dns", "show")
    assert code == 1
    assert "[topology] dns_record is not set" in err
