"""`payapi recover system --from-backups --into DIR` (seed "Complete System Recovery"):
a platform rebuilt in an empty folder from the shared lab's backup repository serves the
seed's curls and holds every payment acknowledged before the last archived WAL segment.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from payapi.backup.crypto import load_repository_key, write_key_file
from payapi.backup.repository import Repository
from payapi.lab.platform import Lab
from payapi.servers.postgres import pg_bin
from tests.scenarios.conftest import Client, LabHandle, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _psql(dsn: str, sql: str) -> str:
    res = subprocess.run(
        [pg_bin("psql"), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-c", sql],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def _switch_and_archive(lab: Lab, timeout: float = 60) -> None:
    dsn = lab.pg.dsn("payment_db")
    _psql(dsn, "SELECT pg_current_xact_id()")
    segment = _psql(dsn, "SELECT pg_walfile_name(pg_switch_wal())")
    deadline = time.monotonic() + timeout
    with Repository.open(lab.repository_url, load_repository_key(lab.repository_key_file)) as r:
        while segment not in r.list_wal():
            assert time.monotonic() < deadline, f"{segment} was not archived in {timeout}s"
            time.sleep(0.2)


def _pay(http: httpx.Client, client: Client, refs: list[str]) -> list[str]:
    ids = []
    for ref in refs:
        res = http.post(
            "/api/v1/payments",
            headers=client.headers,
            json={"amount": "25.00", "currency": "EUR", "reference": ref},
        )
        assert res.status_code == 201, res.text
        ids.append(res.json()["id"])
    return ids


def _kill_in_database_step(lab: LabHandle, into: Path, head: Path) -> str:
    """Start ``recover system --into``, SIGKILL it once its database step has started;
    the run's id."""
    journals = lab.config.parent / "runbooks"
    before = set(journals.glob("*.jsonl"))
    argv = [sys.executable, "-m", "payapi", "--config", str(lab.config), "recover", "system"]
    argv += ["--from-backups", "--into", str(into), "--audit-head-file", str(head), "--yes"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            for path in set(journals.glob("*.jsonl")) - before:
                records = [json.loads(line) for line in path.read_text().splitlines() if line]
                if any(r["type"] == "start" and r.get("step") == "database" for r in records):
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
                    return path.stem
            assert proc.poll() is None, "recover system ended before its database step"
            time.sleep(0.05)
        raise AssertionError("the database step did not start in 60 s")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def _recover(lab: LabHandle, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("recover", "system", "--from-backups", *args, config=lab.config, check=False)


def test_refusals_change_nothing(lab: LabHandle, outside_tmp: Path) -> None:
    busy = outside_tmp / "busy"
    busy.mkdir()
    (busy / "something").write_text("x")
    res = _recover(lab, "--into", str(busy), "--yes")
    assert res.returncode == 2 and "not an empty folder" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    new = outside_tmp / "new"
    res = _recover(lab, "--into", str(new), "--key-file", str(outside_tmp / "no.key"), "--yes")
    assert res.returncode == 2 and "--key-file" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not new.exists()
    other = outside_tmp / "other.key"
    write_key_file(other)
    res = _recover(lab, "--into", str(new), "--key-file", str(other), "--yes")
    assert res.returncode == 2 and "not the key of" in res.stderr, res.stderr
    assert not new.exists()


def test_dry_run_and_access_control_change_nothing(lab: LabHandle, outside_tmp: Path) -> None:
    into = outside_tmp / "planned"
    journals = set((lab.config.parent / "runbooks").glob("*.jsonl"))
    res = _recover(lab, "--into", str(into), "--dry-run", "--json")
    assert res.returncode == 0, res.stderr
    plan = json.loads(res.stdout)
    assert plan["dry_run"] is True and plan["runbook"] == "system-recovery" and plan["ok"]
    steps = [s["step"] for s in plan["steps"]]
    assert steps == ["configuration", "database", "vault", "redis", "services", "verify"]
    assert "restore backup" in plan["steps"][1]["would"], plan["steps"][1]
    assert not into.exists()  # nothing made, no run journaled
    assert set((lab.config.parent / "runbooks").glob("*.jsonl")) == journals
    # An operator without execute on webservice:runbooks/system-recovery: exit 3.
    key = lab.lab.secrets_dir / "app-lead.api_key"
    res = run_cli(
        *("--as", "app-lead", "--api-key-file", str(key)),
        *("recover", "system", "--from-backups", "--into", str(into), "--yes"),
        config=lab.config,
        check=False,
    )
    assert res.returncode == 3, res.stderr
    assert "system-recovery" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not into.exists()


def test_rebuilt_from_backups_serves_the_seeds_curls(lab: LabHandle, outside_tmp: Path) -> None:
    cfg = lab.config
    client = lab.create_client("sysrec-before")
    with lab.http() as http:
        acked = _pay(http, client, [f"SYSREC-B-{i}" for i in range(5)])
    for component in (["db", "--full"], ["redis"], ["config"]):
        run_cli("backup", "run", "--component", *component, "--json", config=cfg)
    late = lab.create_client("sysrec-after")  # after the database backup
    with lab.http() as http:
        acked += _pay(http, client, [f"SYSREC-A-{i}" for i in range(5)])
    _switch_and_archive(lab.lab)  # the payments since the database backup: in the WAL
    # Newer than the archived WAL, so the rebuild restores the vault from it.
    run_cli("backup", "run", "--component", "vault", "--full", "--json", config=cfg)

    into = outside_tmp / "rebuilt"
    wrong = outside_tmp / "wrong-vault.key"
    wrong.write_text("A" * 43 + "=\n")  # a well-formed key, not the vault's
    res = _recover(lab, "--into", str(into), "--vault-key-file", str(wrong), "--yes")
    assert res.returncode == 2 and "--vault-key-file" in res.stderr, res.stderr
    assert not into.exists()

    head = outside_tmp / "worm-head.json"  # the old site's audit head, as its WORM copy
    head.write_bytes((lab.lab.dir / "audit" / "head.json").read_bytes())
    try:
        # Killed (SIGKILL) in the database step, then resumed: the runbook re-runs that
        # step from its start (the half-restored folder goes) and no completed one.
        run_id = _kill_in_database_step(lab, into, head)
        res = run_cli("runbook", "resume", run_id, "--json", config=cfg, check=False)
        assert res.returncode == 0, res.stderr
        resumed = json.loads(res.stdout)
        assert resumed["status"] == "succeeded" and resumed["resumes"] == 1, resumed
        attempts = {s["step"]: s["attempts"] for s in resumed["steps"]}
        assert attempts["configuration"] == 1 and attempts["database"] == 2, attempts
        out = {**json.loads((into / "system-recovery.json").read_text()), "run_id": run_id}
        print(
            "recover system:", {s["name"]: s["seconds"] for s in out["steps"]}, out["total_seconds"]
        )
        assert out["verified"] is True, out["checks"]
        run = json.loads(run_cli("runbook", "show", out["run_id"], "--json", config=cfg).stdout)
        assert run["runbook"] == "system-recovery" and run["status"] == "succeeded", run
        names = [s["name"] for s in out["steps"]]
        assert names[:5] == ["configuration", "backup repository", "database", "audit", "vault"]
        assert {"redis", "sapi", "eapi", "verify"} <= set(names)
        assert all(s["status"] == "ok" for s in out["steps"]), out["steps"]
        assert out["total_seconds"] >= sum(s["seconds"] for s in out["steps"]) - 0.5
        assert out["payments"] >= len(acked)
        assert out["vault"]["source"] == "backup", out["vault"]
        assert "newer than the end of the WAL" in out["vault"]["why"]
        assert out["redis"]["mode"] == "restore"
        eapi = out["services"]["eapi"]
        assert eapi != lab.status["eapi"]
        with httpx.Client(base_url=eapi, timeout=15, trust_env=False) as http:
            auth = http.post("/api/v1/authenticate", headers=client.headers)  # the seed's curls
            assert auth.status_code == 200, auth.text
            token = auth.json()["access_token"]
            paid = http.post(
                "/api/v1/payments",
                headers=client.headers,
                json={"amount": "100.00", "currency": "USD", "reference": "TEST-12345"},
            )
            assert paid.status_code == 201, paid.text
            bearer = {"Authorization": f"Bearer {token}"}
            missing = [
                pid
                for pid in acked
                if http.get(f"/api/v1/payments/{pid}", headers=bearer).status_code != 200
            ]
            assert missing == []
            assert http.post("/api/v1/authenticate", headers=late.headers).status_code == 200
        assert out["audit"]["head_matches"] is True and out["audit"]["restored_events"] > 0
        rebuilt_cfg = into / "payapi.toml"
        chain = json.loads(run_cli("audit", "verify", "--json", config=rebuilt_cfg).stdout)
        assert chain["ok"] and chain["last_seq"] > out["audit"]["seq"]  # appends work again
        status = json.loads(run_cli("lab", "status", "--dir", str(into), "--json").stdout)
        assert set(status["components"].values()) == {"running"}
    finally:
        run_cli("lab", "down", "--dir", str(into), check=False)
    assert not any(Lab(into).running(c) for c in ("postgres", "redis", "vault", "sapi", "eapi"))
