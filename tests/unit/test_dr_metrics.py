"""The DR metrics: one renderer for the textfile and /metrics; +Inf for "nothing"."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from payapi.core.plan import load_plan
from payapi.ops.metrics import RpoCollector, render, write_textfile
from payapi.ops.rpo import report
from tests.unit.test_rpo import NOW, backup, healthy

PLAN = load_plan()


def samples(text: str) -> dict[tuple[str, str | None], float]:
    return {
        (s.name, s.labels.get("component")): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if "status" not in s.labels
    }


def test_no_backup_is_plus_infinity_not_a_missing_series() -> None:
    obs = healthy(backups=(backup("database", timedelta(hours=1)),))
    got = samples(render(report(PLAN, obs, NOW)).decode())
    assert got[("payapi_backup_age_seconds", "vault")] == float("inf")
    assert got[("payapi_rpo_exposure_seconds", "vault")] == float("inf")
    assert got[("payapi_backup_verified_age_seconds", "redis")] == float("inf")
    # Nothing is expected of kubernetes (no engine, no RPO): no series at all.
    assert ("payapi_backup_age_seconds", "kubernetes") not in got


def test_wal_figures_of_the_database() -> None:
    got = samples(render(report(PLAN, healthy(), NOW)).decode())
    assert got[("payapi_wal_archive_lag_seconds", "database")] == 40
    assert got[("payapi_wal_archiving_failing", "database")] == 0
    assert got[("payapi_database_reachable", "database")] == 1
    assert ("payapi_wal_archive_lag_seconds", "vault") not in got


def test_a_check_that_could_not_run_says_only_that() -> None:
    got = samples(render(None).decode())
    assert got == {("payapi_rpo_check_up", None): 0.0}


def test_collector_rejudges_the_latest_observation_at_every_scrape() -> None:
    now = [NOW]
    collector = RpoCollector(PLAN, clock=lambda: now[0])
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    assert samples(generate_latest(registry).decode()) == {("payapi_rpo_check_up", None): 0.0}
    collector.update(healthy())
    first = samples(generate_latest(registry).decode())[("payapi_rpo_exposure_seconds", "vault")]
    now[0] = NOW + timedelta(minutes=10)
    later = samples(generate_latest(registry).decode())[("payapi_rpo_exposure_seconds", "vault")]
    assert later - first == 600
    collector.update(None, "repository unreachable")
    assert collector.error == "repository unreachable"
    assert samples(generate_latest(registry).decode())[("payapi_rpo_check_up", None)] == 0


def test_textfile_is_replaced_atomically(tmp_path: Path) -> None:
    target = tmp_path / "payapi.prom"
    target.write_text("old")
    write_textfile(target, b"payapi_rpo_check_up 1.0\n")
    assert target.read_text() == "payapi_rpo_check_up 1.0\n"
    assert [p.name for p in tmp_path.iterdir()] == ["payapi.prom"]
    assert oct(target.stat().st_mode & 0o777) == "0o644"
