"""`payapi plan check` end to end over a file:// repository holding synthetic backups.

The contract: ``--json`` prints ``{"components": [...], "checked_at"}`` with one entry per
component of the plan; exit 0 when no component is in VIOLATION, 1 when one is, 2 when it
could not check.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from payapi.backup.crypto import write_key_file
from payapi.backup.repository import Repository
from payapi.cli.main import app
from payapi.core.plan import load_plan

PLAN = load_plan()


class Repo:
    """A file:// repository and a config pointing at it (no database configured)."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.key_file = root / "repository.key"
        self.key = write_key_file(self.key_file)
        self.url = f"file://{root / 'repo'}"
        with Repository.open(self.url, self.key) as repo:
            repo.init()
        self.config = root / "payapi.toml"
        self.config.write_text(
            f'[backup]\nrepository = "{self.url}"\nkey_file = "{self.key_file}"\n'
        )

    def backup(self, component: str, type_: str, at: datetime, *, verified: bool = True) -> str:
        with Repository.open(self.url, self.key, clock=lambda: at) as repo:
            w = repo.begin_backup(component, type_)
            w.add_bytes("data", f"{component} {type_} {at.isoformat()}".encode())
            info = w.commit()
            if verified:
                repo.mark_verified(info.backup_id, at + timedelta(minutes=1))
        return info.backup_id


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path)


NOW = datetime.now(UTC).replace(microsecond=0)


def fresh(repo: Repo, now: datetime = NOW) -> None:
    """Every managed component backed up within its RPO; names as the engines label them.

    ``now`` defaults to the time this module was imported (tests that pass ``--now``);
    a test whose command reads the real clock passes the real time, since a long suite
    can run minutes after import, beyond the vault's 5-minute RPO."""
    repo.backup("vault", "full", now - timedelta(hours=3))
    repo.backup("vault", "incremental", now - timedelta(minutes=1))
    repo.backup("redis", "snapshot", now - timedelta(minutes=2))
    repo.backup("db", "full", now - timedelta(minutes=3))  # an alias of database
    repo.backup("config", "git", now - timedelta(minutes=1))  # an alias of configuration


def check(repo: Repo, *args: str) -> tuple[int, str, str]:
    runner = CliRunner()
    res = runner.invoke(app, ["--config", str(repo.config), "plan", "check", *args])
    return res.exit_code, res.stdout, res.stderr


def test_json_contract_one_entry_per_component_and_exit_0(repo: Repo) -> None:
    fresh(repo)
    code, out, err = check(repo, "--json", "--now", NOW.isoformat())
    assert code == 0, err
    data = json.loads(out)
    assert set(data) >= {"components", "checked_at"}
    assert datetime.fromisoformat(data["checked_at"]) == NOW
    names = [c["name"] for c in data["components"]]
    assert names == list(PLAN.components)
    required = {"name", "status", "rpo_seconds", "exposure_seconds"}
    required |= {"last_backup_at", "last_verified_at"}
    for c in data["components"]:
        assert required <= set(c)
    by = {c["name"]: c for c in data["components"]}
    assert by["vault"]["status"] == "OK"
    assert by["vault"]["rpo_seconds"] == 300
    assert by["vault"]["exposure_seconds"] == 60
    assert by["vault"]["last_backup_type"] == "incremental"
    assert by["vault"]["last_verified_at"] is not None
    assert by["redis"]["status"] == "OK"
    assert [r["retention"] for r in by["redis"]["retention"]] == ["7d"]
    assert by["payment-eapi"]["status"] == "OK"
    assert by["payment-eapi"]["backups_of"] == "configuration"
    # No database configured: it cannot be asked about archiving, so AT RISK, not OK.
    assert by["database"]["status"] == "AT RISK"
    assert by["database"]["exposure_seconds"] == 180
    assert by["monitoring"]["status"] == "NOT MANAGED"
    assert by["monitoring"]["exposure_seconds"] is None
    assert by["kubernetes"]["status"] == "NOT MANAGED"


def test_vault_older_than_its_rpo_is_a_violation_and_exit_1(repo: Repo) -> None:
    fresh(repo)
    later = NOW + timedelta(minutes=6)  # the vault's newest backup is now 7 minutes old
    code, out, _ = check(repo, "--json", "--now", later.isoformat())
    assert code == 1
    vault = next(c for c in json.loads(out)["components"] if c["name"] == "vault")
    assert vault["status"] == "VIOLATION"
    assert vault["exposure_seconds"] == 7 * 60
    assert "exceeds the RPO" in vault["reasons"][0]


def test_empty_repository_is_a_violation_everywhere_it_matters(repo: Repo) -> None:
    code, out, _ = check(repo, "--json")
    assert code == 1
    by = {c["name"]: c["status"] for c in json.loads(out)["components"]}
    for name in ("vault", "redis", "database", "payment-eapi", "payment-sapi"):
        assert by[name] == "VIOLATION"


def test_human_output_names_statuses_and_reasons(repo: Repo) -> None:
    fresh(repo)
    code, out, _ = check(repo, "--now", (NOW + timedelta(minutes=6)).isoformat())
    assert code == 1
    assert "VIOLATION" in out and "NOT MANAGED" in out
    assert "vault: exposure 7m00s exceeds the RPO 5m00s" in " ".join(out.split())


def test_cannot_check_exits_2(tmp_path: Path, repo: Repo) -> None:
    # No repository configured at all.
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    res = CliRunner().invoke(
        app, ["--config", str(empty), "plan", "check", "--json"], env={"PAYAPI_BACKUP_KEY": ""}
    )
    assert res.exit_code == 2
    assert "no backup repository" in res.stderr
    assert res.stdout == ""
    # The wrong key.
    other = tmp_path / "other.key"
    write_key_file(other)
    code, _out, err = check(repo, "--json", "--key-file", str(other))
    assert code == 2 and "wrong repository key" in err
    # An uninitialised repository.
    code, _, err = check(repo, "--repository", f"file://{tmp_path / 'nothing'}")
    assert code == 2 and "no repository" in err
    # An invalid plan.
    bad = tmp_path / "bad-plan.yaml"
    bad.write_text("version: 2\n")
    code, _, err = check(repo, "--plan", str(bad))
    assert code == 2 and "bad-plan.yaml" in err


def test_metrics_file_is_prometheus_text_with_the_same_figures(repo: Repo, tmp_path: Path) -> None:
    fresh(repo)
    metrics = tmp_path / "textfile" / "payapi.prom"
    metrics.parent.mkdir()
    code, _out, _ = check(repo, "--json", "--now", NOW.isoformat(), "--metrics-file", str(metrics))
    assert code == 0
    samples = {
        (s.name, s.labels.get("component"), s.labels.get("status")): s.value
        for fam in text_string_to_metric_families(metrics.read_text())
        for s in fam.samples
    }
    assert samples[("payapi_rpo_check_up", None, None)] == 1
    assert samples[("payapi_rpo_objective_seconds", "vault", None)] == 300
    assert samples[("payapi_rpo_exposure_seconds", "vault", None)] == 60
    assert samples[("payapi_backup_age_seconds", "vault", None)] == 60
    assert samples[("payapi_backup_age_seconds", "payment-eapi", None)] == 60
    assert samples[("payapi_rpo_status", "vault", "ok")] == 1
    assert samples[("payapi_rpo_status", "database", "at_risk")] == 1
    assert samples[("payapi_rpo_status", "monitoring", "not_managed")] == 1
    assert ("payapi_rpo_exposure_seconds", "monitoring", None) not in samples
    assert samples[("payapi_backup_interval_seconds", "redis", None)] == 3600
    assert not list(metrics.parent.glob(".*"))  # no temp file left behind


def test_metrics_file_says_the_check_is_down_when_it_cannot_check(
    repo: Repo, tmp_path: Path
) -> None:
    metrics = tmp_path / "payapi.prom"
    other = tmp_path / "other.key"
    write_key_file(other)
    code, _, _ = check(repo, "--key-file", str(other), "--metrics-file", str(metrics))
    assert code == 2
    assert "payapi_rpo_check_up 0.0" in metrics.read_text()


def test_unreachable_database_is_at_risk_not_a_crash(repo: Repo) -> None:
    from payapi.servers.procs import free_port

    fresh(repo)
    repo.config.write_text(
        repo.config.read_text()
        + f'\n[postgres]\npayment_dsn = "postgresql://postgres@127.0.0.1:{free_port()}/x"\n'
    )
    code, out, _ = check(repo, "--json", "--now", NOW.isoformat())
    assert code == 0
    db = next(c for c in json.loads(out)["components"] if c["name"] == "database")
    assert db["status"] == "AT RISK"
    assert db["wal"]["database_reachable"] is False
    assert "database unreachable" in db["reasons"][0]
