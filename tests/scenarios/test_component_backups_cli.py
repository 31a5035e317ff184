"""`payapi backup run` / `payapi restore` for the vault, Redis and the configuration, on
the lab, through the CLI an operator (or the scheduler) calls."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.scenarios.conftest import LabHandle, run_cli

FIELDS = {"backup_id", "component", "type", "started_at", "finished_at", "bytes",
          "stored_bytes", "objects"}  # fmt: skip


def _backup(lab: LabHandle, *args: str) -> dict[str, object]:
    out = json.loads(run_cli("backup", "run", *args, "--json", config=lab.config).stdout)
    assert set(out) >= FIELDS
    return out


def test_vault_full_incremental_restore_in_place(lab: LabHandle) -> None:
    before = lab.create_client("vault-bk-1")
    full = _backup(lab, "--component", "vault", "--full")
    after = lab.create_client("vault-bk-2")
    incr = _backup(lab, "--component", "vault", "--incremental")
    assert full["type"] == "full" and incr["type"] == "incremental"
    assert incr["parent"] == full["backup_id"]
    lab.create_client("vault-bk-3")  # after the last backup: gone after the restore
    refused = run_cli("restore", "--component", "vault", config=lab.config, check=False)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    out = json.loads(run_cli("restore", "--component", "vault", "--yes", "--json",
                             config=lab.config).stdout)  # fmt: skip
    assert out["healthy"] and out["chain"] == [full["backup_id"], incr["backup_id"]]
    names = json.loads(run_cli("clients", "list", "--json", config=lab.config).stdout)
    assert {"vault-bk-1", "vault-bk-2"} <= set(names) and "vault-bk-3" not in names
    with lab.http() as http:
        for c in (before, after):
            assert http.post("/api/v1/authenticate", headers=c.headers).status_code == 200


def test_redis_snapshot_restore_and_rebuild(lab: LabHandle) -> None:
    c = lab.create_client("redis-bk")
    with lab.http() as http:
        assert http.post("/api/v1/authenticate", headers=c.headers).status_code == 200
    snap = _backup(lab, "--component", "redis")
    assert snap["component"] == "redis"
    out = json.loads(run_cli("restore", "--component", "redis", "--yes", "--json",
                             config=lab.config).stdout)  # fmt: skip
    assert out["backup_id"] == snap["backup_id"]
    out = json.loads(run_cli("restore", "--component", "redis", "--rebuild", "--yes", "--json",
                             config=lab.config).stdout)  # fmt: skip
    assert out["mode"] == "rebuild"
    lab.ensure_running()
    with lab.http() as http:  # a cache: clients simply authenticate again
        codes = []
        for _ in range(50):  # EAPI skips Redis for a moment after seeing it down (503)
            codes.append(http.post("/api/v1/authenticate", headers=c.headers).status_code)
            if codes[-1] != 503:
                break
            time.sleep(0.2)
        assert codes[-1] == 200, codes


def test_config_export_commits_only_changes_and_restores(lab: LabHandle, tmp_path: Path) -> None:
    first = _backup(lab, "--component", "config")
    again = _backup(lab, "--component", "config")
    assert again["changed"] is False and again["backup_id"] == first["backup_id"]
    run_cli("restore", "--component", "config", "--to", str(tmp_path / "out"), config=lab.config)
    restored = {p.name for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert "payapi.toml" in restored and "dr-plan.yaml" in restored
