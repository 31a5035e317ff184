"""The lab's database is backed up, archived, verified and restored with payapi's commands.

The shared lab: its PostgreSQL archives WAL through ``payapi wal push`` (as the
unprivileged lab user), payments made through the API survive a backup, a restore test
and a restore into a new data directory. A PostgreSQL-only lab: point-in-time recovery
in place, after which production archives on its new timeline."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from payapi.backup.crypto import load_repository_key
from payapi.backup.repository import Repository
from payapi.lab.platform import Lab
from payapi.servers.postgres import pg_bin
from tests.scenarios.conftest import LabHandle, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


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


def _repo(lab: Lab) -> Repository:
    return Repository.open(lab.repository_url, load_repository_key(lab.repository_key_file))


def _wait_wal(lab: Lab, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    with _repo(lab) as repo:
        while name not in repo.list_wal():
            assert time.monotonic() < deadline, f"{name} was not archived in {timeout}s"
            time.sleep(0.2)


def test_lab_archives_wal_through_payapi_as_the_lab_user(lab: LabHandle) -> None:
    dsn = lab.lab.pg.dsn("payment_db")
    assert "wal push %p" in _psql(dsn, "SHOW archive_command")
    assert _psql(dsn, "SHOW archive_mode") == "on"
    assert _psql(dsn, "SHOW archive_timeout") == "1min"
    assert _psql(dsn, "SHOW summarize_wal") == "on"
    _psql(dsn, "SELECT pg_current_xact_id()")
    segment = _psql(dsn, "SELECT pg_walfile_name(pg_switch_wal())")
    _wait_wal(lab.lab, segment)
    assert _psql(dsn, "SELECT failed_count FROM pg_stat_archiver") == "0"
    config = lab.config.read_text()
    assert "[backup]" in config and lab.lab.repository_url in config
    key = lab.lab.repository_key_file
    assert key.stat().st_mode & 0o777 == 0o600
    assert key.read_text().strip() not in config


def test_payments_survive_backup_restore_test_and_restore(
    lab: LabHandle, outside_tmp: Path
) -> None:
    client = lab.create_client("backup-lab")
    refs = [f"lab-backup-{i}" for i in range(5)]
    with lab.http() as http:
        for ref in refs:
            res = http.post(
                "/api/v1/payments",
                headers=client.headers,
                json={"amount": "12.50", "currency": "EUR", "reference": ref},
            )
            assert res.status_code in (200, 201), res.text
    cfg = lab.config
    full = json.loads(run_cli("backup", "run", "--component", "db", "--full", "--json",
                              config=cfg).stdout)  # fmt: skip
    incr = json.loads(run_cli("backup", "run", "--component", "db", "--incremental", "--json",
                              config=cfg).stdout)  # fmt: skip
    assert incr["parent"] == full["backup_id"]

    report = json.loads(run_cli("backup", "verify", "--restore-test", "--json", config=cfg).stdout)
    assert report["ok"] and report["restore_test"]["backup_id"] == incr["backup_id"]
    tables = report["restore_test"]["tables"]
    assert tables["public.payments"] >= len(refs)
    listed = json.loads(run_cli("backup", "list", "--component", "db", "--json",
                                config=cfg).stdout)  # fmt: skip
    assert next(b for b in listed if b["backup_id"] == incr["backup_id"])["verified_at"]

    to = outside_tmp / "restored"
    out = json.loads(
        run_cli(
            "restore",
            "--component",
            "db",
            "--to",
            str(to),
            "--port",
            "0",
            "--start",
            "--json",
            config=cfg,
        ).stdout
    )
    try:
        found = _psql(out["dsn"], "SELECT reference FROM payments").splitlines()
        assert set(refs) <= set(found)
        assert _psql(out["dsn"], "SHOW archive_mode") == "off"
    finally:
        run_cli("restore", "--component", "db", "--stop", "--to", str(to), config=cfg)


@pytest.fixture
def pg_lab(outside_tmp: Path) -> Iterator[Lab]:
    """A lab with only its PostgreSQL (and backup repository): fast, and ours to break."""
    lab = Lab(outside_tmp / "pglab")
    lab.dir.mkdir(parents=True)
    lab.secrets_dir.mkdir(mode=0o700)
    lab.write_config()
    lab.ensure_backup_repository()
    lab.pg.init()
    lab.pg.start()
    lab.pg.create_database("payment_db")
    try:
        yield lab
    finally:
        lab.pg.stop(mode="immediate")


def test_pitr_in_place_then_production_archives_its_new_timeline(pg_lab: Lab) -> None:
    dsn = pg_lab.pg.dsn("payment_db")
    _psql(dsn, "CREATE TABLE payments (id serial PRIMARY KEY, reference text NOT NULL)")
    run_cli("backup", "run", "--component", "db", "--full", config=pg_lab.config_path)
    for i in range(10):
        _psql(dsn, f"INSERT INTO payments (reference) VALUES ('good-{i}')")
    target = _psql(dsn, "SELECT clock_timestamp()")
    time.sleep(0.2)
    _psql(dsn, "DELETE FROM payments")  # the "data corruption"
    _psql(dsn, "INSERT INTO payments (reference) VALUES ('after-corruption')")

    out = json.loads(
        run_cli(
            "restore",
            "--component",
            "db",
            "--target-time",
            target,
            "--in-place",
            "--yes",
            "--json",
            config=pg_lab.config_path,
        ).stdout
    )
    refs = _psql(dsn, "SELECT reference FROM payments ORDER BY id").splitlines()
    assert refs == [f"good-{i}" for i in range(10)]
    assert Path(out["previous_data_dir"]).is_dir()
    assert pg_lab.pg.is_running()
    # Production again: archiving on, on timeline 2, whose history is archived.
    assert _psql(dsn, "SHOW archive_mode") == "on"
    assert not (pg_lab.pg.datadir / "recovery.signal").exists()
    _psql(dsn, "INSERT INTO payments (reference) VALUES ('after-restore')")
    _psql(dsn, "SELECT pg_current_xact_id()")
    segment = _psql(dsn, "SELECT pg_walfile_name(pg_switch_wal())")
    assert segment.startswith("00000002")
    _wait_wal(pg_lab, segment)
    _wait_wal(pg_lab, "00000002.history")
    after = json.loads(run_cli("backup", "run", "--component", "db", "--full", "--json",
                               config=pg_lab.config_path).stdout)  # fmt: skip
    assert after["wal_start"].startswith("00000002")


def test_logical_dump_restores_in_place(pg_lab: Lab) -> None:
    dsn = pg_lab.pg.dsn("payment_db")
    _psql(dsn, "CREATE TABLE payments (id serial PRIMARY KEY, reference text NOT NULL)")
    _psql(
        dsn, "INSERT INTO payments (reference) SELECT 'dumped-' || g FROM generate_series(1, 7) g"
    )
    dump = json.loads(
        run_cli(
            "backup", "run", "--component", "db", "--logical", "--json", config=pg_lab.config_path
        ).stdout
    )
    _psql(dsn, "DELETE FROM payments WHERE id > 2")
    _psql(dsn, "INSERT INTO payments (reference) VALUES ('not-in-the-dump')")
    refused = run_cli(
        "restore", "--component", "db", "--backup", dump["backup_id"], "--in-place",
        config=pg_lab.config_path, check=False,
    )  # fmt: skip
    assert refused.returncode == 2 and "--yes" in refused.stderr  # no terminal to ask on
    run_cli(
        "restore", "--component", "db", "--backup", dump["backup_id"], "--in-place", "--yes",
        config=pg_lab.config_path,
    )  # fmt: skip
    refs = _psql(dsn, "SELECT reference FROM payments ORDER BY id").splitlines()
    assert refs == [f"dumped-{g}" for g in range(1, 8)]
