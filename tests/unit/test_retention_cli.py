"""`payapi retention`: simulate (no repository), plan and purge on a local file repository."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from payapi.backup.crypto import write_key_file
from payapi.backup.lock import LocalFileLockStore, Lock, lock_name
from payapi.backup.repository import Repository
from payapi.cli.retention_cmd import app

runner = CliRunner()


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args))


def seg(n: int) -> str:
    return f"00000001{n >> 8:08X}{n & 0xFF:08X}"


# --------------------------------------------------------------------------- simulate


def test_simulate_ten_years_json_contract() -> None:
    res = invoke("simulate", "--daily-for", "3650", "--json", "--now", "2036-06-15T12:00:00Z")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert isinstance(out["kept"], int) and isinstance(out["removed"], int)
    assert out["kept"] + out["removed"] == 3650
    tiers = out["tiers"]
    assert list(tiers) == ["daily", "weekly", "monthly", "annual"]
    assert tiers["daily"]["kept"] == 30
    # Roughly 30 daily + ~9 weekly + ~11 monthly + ~6-7 annual, overlaps counted once.
    assert 7 <= tiers["weekly"]["adds"] <= 10
    assert 9 <= tiers["monthly"]["adds"] <= 12
    assert 6 <= tiers["annual"]["adds"] <= 7
    assert out["kept"] == sum(t["adds"] for t in tiers.values())
    assert 50 <= out["kept"] <= 60
    assert out["series"] == "database/full"


@pytest.mark.parametrize("now", ["2026-12-31T12:00:00Z", "2027-01-01", "2028-02-29T23:00:00+00:00"])
def test_simulate_counts_are_stable_across_boundaries(now: str) -> None:
    res = invoke("simulate", "--daily-for", "3650", "--json", "--now", now)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["tiers"]["daily"]["kept"] == 30
    assert 13 <= out["tiers"]["weekly"]["kept"] <= 14
    assert 12 <= out["tiers"]["monthly"]["kept"] <= 13
    assert 7 <= out["tiers"]["annual"]["kept"] <= 8


def test_simulate_human_output_and_other_policies() -> None:
    res = invoke("simulate", "--daily-for", "100", "--now", "2026-06-15")
    assert res.exit_code == 0, res.output
    assert "daily" in res.output and "keep" in res.output
    res = invoke("simulate", "--daily-for", "60", "--json", "--policy", "GFS(daily=7d)")
    assert json.loads(res.stdout)["kept"] == 7
    res = invoke("simulate", "--daily-for", "30", "--json", "-c", "redis", "--type", "snapshot")
    out = json.loads(res.stdout)
    assert out["tiers"] == {} and out["kept"] == 7


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--daily-for", "0"], "--daily-for"),
        (["--daily-for", "3", "-c", "nope"], "unknown component 'nope'"),
        (["--daily-for", "3", "--type", "wal"], "keeps WAL, not backups"),
        (["--daily-for", "3", "--type", "tape"], "no retention for database/tape"),
        (["--daily-for", "3", "--now", "yesterday"], "not an ISO 8601 time"),
        (["--daily-for", "3", "--policy", "KEEP(3)"], "unknown retention rule"),
    ],
)
def test_simulate_bad_usage_exits_2(args: list[str], message: str) -> None:
    res = invoke("simulate", *args)
    assert res.exit_code == 2
    assert message in res.stderr
    assert res.stdout == ""


def test_simulate_uses_the_plan_given(tmp_path: Path) -> None:
    from payapi.core.plan import default_plan_text

    text = default_plan_text().replace("  - name: annual\n    keep: 7y\n", "")
    plan = tmp_path / "plan.yaml"
    plan.write_text(text)
    res = invoke("simulate", "--daily-for", "3650", "--json", "--plan", str(plan))
    assert res.exit_code == 0, res.output
    assert "annual" not in json.loads(res.stdout)["tiers"]


# --------------------------------------------------------------------------- plan / purge


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


START = datetime(2026, 1, 1, 1, 0, tzinfo=UTC)
DAYS = 45


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A file repository with 45 daily verified database fulls (each needing 2 WAL
    segments), 10 WAL segments a day, and a vault full with hourly incrementals."""
    key_file = tmp_path / "repo.key"
    key = write_key_file(key_file)
    url = f"file://{tmp_path / 'repo'}"
    clock = Clock(START)
    r = Repository.open(url, key, clock=clock)
    r.init()
    segment = tmp_path / "segment"
    segment.write_bytes(b"wal" * 100)
    for day in range(DAYS):
        clock.now = START + timedelta(days=day)
        for n in range(10 * day, 10 * day + 10):
            r.put_wal(seg(n), segment)
        with r.begin_backup("database", "full") as w:
            w.add_bytes("base.tar", f"day {day}".encode())
            w.set_wal_range(seg(10 * day), seg(10 * day + 1))
            info = w.commit()
        r.mark_verified(info.backup_id, clock.now + timedelta(minutes=5))
    clock.now = START + timedelta(days=DAYS - 1, hours=2)
    with r.begin_backup("vault", "full") as w:
        w.add_bytes("dump", b"vault")
        parent = w.commit().backup_id
    for _ in range(3):
        clock.now += timedelta(hours=1)
        with r.begin_backup("vault", "incremental", parent=parent) as w:
            w.add_bytes("dump", b"incr")
            parent = w.commit().backup_id
    r.close()
    yield url, key_file


def repo_args(repo: tuple[str, Path]) -> list[str]:
    url, key_file = repo
    return ["--repository", url, "--key-file", str(key_file)]


NOW = (START + timedelta(days=DAYS)).isoformat()


def test_plan_lists_every_backup_with_keep_or_remove_and_why(repo: tuple[str, Path]) -> None:
    res = invoke("plan", "--json", "--now", NOW, *repo_args(repo))
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    db = [b for b in out["backups"] if b["component"] == "database"]
    vault = [b for b in out["backups"] if b["component"] == "vault"]
    assert len(db) == DAYS and len(vault) == 4
    kept_db = [b for b in db if b["action"] == "keep"]
    # 30 days of window/daily, plus the month end of January (monthly/weekly tiers).
    assert 30 <= len(kept_db) <= 33
    assert all(b["action"] == "keep" for b in vault)
    assert all(b["reasons"] for b in out["backups"])
    newest = db[-1]
    assert any(r.startswith("newest:") for r in newest["reasons"])
    assert out["policy"]["database/wal"] == "PITR(7d)"
    # WAL of removed backups outside the PITR window goes; the window's WAL stays.
    removed = set(out["wal"]["remove"])
    assert seg(0) in removed and seg(10 * (DAYS - 1)) not in removed
    assert out["kept"] + out["removed"] == DAYS + 4

    human = invoke("plan", "--now", NOW, "-c", "db", *repo_args(repo))
    assert human.exit_code == 0, human.output
    assert "remove" in human.output and "keep" in human.output


def test_purge_dry_run_touches_nothing_then_purge_applies_the_plan(
    repo: tuple[str, Path],
) -> None:
    url, _ = repo
    before = json.loads(invoke("plan", "--json", *repo_args(repo)).stdout)
    dry = invoke("purge", "--dry-run", "--json", *repo_args(repo))
    assert dry.exit_code == 0, dry.output
    dry_out = json.loads(dry.stdout)
    assert dry_out["dry_run"] is True
    assert dry_out["removed"] == before["removed"] > 0
    assert len(json.loads(invoke("plan", "--json", *repo_args(repo)).stdout)["backups"]) == len(
        before["backups"]
    )

    res = invoke("purge", "--json", *repo_args(repo))
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["removed"] == before["removed"]
    assert out["wal_removed"] == before["wal"]["removed"]
    assert out["failed"] is None
    after = json.loads(invoke("plan", "--json", *repo_args(repo)).stdout)
    assert after["removed"] == 0 and after["wal"]["removed"] == 0
    assert {b["backup_id"] for b in after["backups"]} == {
        b["backup_id"] for b in before["backups"] if b["action"] == "keep"
    }
    # The lock was released.
    store = LocalFileLockStore(Path(url.removeprefix("file://")) / "locks")
    assert store.read(lock_name("database")) is None


def test_purge_never_runs_while_a_backup_holds_the_lock(repo: tuple[str, Path]) -> None:
    url, _ = repo
    lock = Lock(LocalFileLockStore(Path(url.removeprefix("file://")) / "locks"))
    held = lock.acquire(lock_name("database"), "backup database full")
    try:
        res = invoke("purge", "--json", "-c", "database", *repo_args(repo))
    finally:
        lock.release(lock_name("database"), held)
    assert res.exit_code == 1
    last = res.stderr.strip().splitlines()[-1]
    assert "purge stopped" in last and "backup database full" in last
    plan = json.loads(invoke("plan", "--json", *repo_args(repo)).stdout)
    assert len(plan["backups"]) == DAYS + 4  # nothing removed


def test_plan_reads_the_repository_from_the_config(
    repo: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, key_file = repo
    config = tmp_path / "payapi.toml"
    config.write_text(f'[backup]\nrepository = "{url}"\nkey_file = "{key_file.name}"\n')
    monkeypatch.setenv("PAYAPI_CONFIG", str(config))
    res = invoke("plan", "--json", "-c", "vault")
    assert res.exit_code == 0, res.output
    assert {b["component"] for b in json.loads(res.stdout)["backups"]} == {"vault"}


def test_plan_and_purge_need_a_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PAYAPI_CONFIG", raising=False)
    monkeypatch.delenv("PAYAPI_BACKUP__REPOSITORY", raising=False)
    res = invoke("plan")
    assert res.exit_code == 1
    assert "no backup repository" in res.stderr.strip().splitlines()[-1]
    res = invoke("purge", "--dry-run", "-c", "nope", "--repository", "file:///nonexistent")
    assert res.exit_code == 2
