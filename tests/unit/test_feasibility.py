"""plan check --feasibility: the worst case the HA configuration allows, per component
and scenario, against the plan's objectives (payapi.ops.feasibility, pure)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from payapi.cli.main import app
from payapi.core.plan import Plan, load_plan
from payapi.core.settings import Settings
from payapi.ops.feasibility import Feasibility, assess, exit_code

KEYS = {
    "component",
    "scenario",
    "rto_objective_seconds",
    "rto_worst_case_seconds",
    "rpo_objective_seconds",
    "rpo_worst_case_seconds",
    "feasible",
    "why",
}


@pytest.fixture(scope="module")
def plan() -> Plan:
    return load_plan()


def _settings(**sections: dict[str, Any]) -> Settings:
    return Settings.model_validate(sections)


def _find(results: list[Feasibility], component: str, scenario: str) -> Feasibility:
    return next(r for r in results if r.component == component and r.scenario == scenario)


def test_defaults_are_the_engines_own() -> None:
    s = Settings()
    assert (s.patroni.ttl, s.patroni.loop_wait, s.patroni.retry_timeout) == (30, 10, 10)
    assert s.patroni.maximum_lag_on_failover == 1048576
    assert s.patroni.synchronous_mode is False
    assert s.sentinel.down_after_milliseconds == 30000
    assert s.sentinel.failover_timeout == 180000


def test_leader_failure_rto_is_ttl_loop_wait_retry_timeout_and_promote(plan: Plan) -> None:
    s = _settings(patroni={"ttl": 30, "loop_wait": 10, "retry_timeout": 10, "promote_seconds": 5})
    r = _find(assess(plan, s), "database", "leader-failure")
    assert r.rto_worst_case_seconds == 55
    assert r.rto_objective_seconds == 4 * 3600
    assert "ttl 30s + loop_wait 10s + retry_timeout 10s + promote 5s = 55s" in r.why


def test_synchronous_mode_means_rpo_zero(plan: Plan) -> None:
    r = _find(
        assess(plan, _settings(patroni={"synchronous_mode": True})), "database", "leader-failure"
    )
    assert r.rpo_worst_case_seconds == 0
    assert r.feasible


def test_async_lag_is_bytes_not_time_without_a_write_rate(plan: Plan) -> None:
    r = _find(assess(plan, Settings()), "database", "leader-failure")
    assert r.rpo_worst_case_seconds is None
    assert not r.feasible
    assert "1048576 bytes" in r.why and "not time" in r.why


def test_async_lag_at_a_stated_write_rate(plan: Plan) -> None:
    s = _settings(patroni={"maximum_lag_on_failover": 1048576, "write_rate_bytes_per_second": 1024})
    r = _find(assess(plan, s), "database", "leader-failure")
    assert r.rpo_worst_case_seconds == 1024
    assert not r.feasible  # 1024 s > the database's 15 min
    s = _settings(patroni={"maximum_lag_on_failover": 1048576, "write_rate_bytes_per_second": 4096})
    r = _find(assess(plan, s), "database", "leader-failure")
    assert r.rpo_worst_case_seconds == 256
    assert r.feasible


def test_a_huge_ttl_makes_a_five_minute_rto_infeasible(tmp_path: Path) -> None:
    text = load_plan_text().replace("rto: 2h\n    rpo: 5m", "rto: 5m\n    rpo: 5m")
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    tight = load_plan(path)
    s = _settings(patroni={"ttl": 600, "synchronous_mode": True})
    r = _find(assess(tight, s), "vault", "database-leader-failure")
    assert r.rto_objective_seconds == 300
    assert r.rto_worst_case_seconds == 600 + 10 + 10 + 10
    assert not r.feasible
    assert "NOT achievable" in r.why and "630s > 300s" in r.why
    # the same objective holds with Patroni's defaults
    r = _find(
        assess(tight, _settings(patroni={"synchronous_mode": True})),
        "vault",
        "database-leader-failure",
    )
    assert r.feasible


def load_plan_text() -> str:
    from payapi.core.plan import default_plan_text

    return default_plan_text()


def test_patroni_rule_broken_is_noted(plan: Plan) -> None:
    s = _settings(patroni={"ttl": 20, "loop_wait": 10, "retry_timeout": 10})
    r = _find(assess(plan, s), "database", "leader-failure")
    assert "loop_wait + 2 x retry_timeout <= ttl" in r.why


def test_regional_failover_sums_the_steps_and_takes_the_smaller_rpo_bound(plan: Plan) -> None:
    s = _settings(
        topology={"dns_ttl_seconds": 60, "endpoint_refresh_seconds": 5},
        patroni={"loop_wait": 10, "promote_seconds": 10, "archive_timeout": 60},
        failover={"detection_seconds": 120, "service_startup_seconds": 30, "dr_lag_seconds": 20},
    )
    r = _find(assess(plan, s), "database", "regional-failover")
    # The endpoint follows the record within max(TTL, refresh): 60, not 60 + 5.
    assert r.rto_worst_case_seconds == 120 + 60 + 10 + 10 + 30
    assert "DNS max(TTL 60s, refresh 5s) 60s" in r.why
    assert r.rpo_worst_case_seconds == 20
    assert "the smaller of" in r.why
    assert r.feasible
    v = _find(
        assess(plan, _settings(patroni={"archive_timeout": 600})), "vault", "regional-failover"
    )
    assert v.rpo_worst_case_seconds == 600
    assert not v.feasible  # 10 min of WAL > the vault's 5 min


def test_regional_dns_term_is_the_longer_of_ttl_and_refresh(plan: Plan) -> None:
    s = _settings(
        topology={"dns_ttl_seconds": 1, "endpoint_refresh_seconds": 7},
        failover={"detection_seconds": 0, "service_startup_seconds": 0},
    )
    r = _find(assess(plan, s), "payment-eapi", "regional-failover")
    assert r.rto_worst_case_seconds == 7
    assert "DNS max(TTL 1s, refresh 7s) 7s" in r.why


def test_regional_rpo_is_unbounded_without_lag_bound_or_archive_timeout(plan: Plan) -> None:
    r = _find(assess(plan, Settings()), "vault", "regional-failover")
    assert r.rpo_worst_case_seconds is None
    assert not r.feasible


def test_redis_primary_failure(plan: Plan) -> None:
    s = _settings(
        sentinel={"down_after_milliseconds": 5000, "failover_timeout": 60000},
    )
    r = _find(assess(plan, s), "redis", "primary-failure")
    assert r.rto_worst_case_seconds == 65
    # async replication: the hourly snapshot bounds it, over the 15 min RPO
    assert r.rpo_worst_case_seconds == 3600
    assert not r.feasible
    s = _settings(sentinel={"min_replicas_to_write": 1, "min_replicas_max_lag": 10})
    r = _find(assess(plan, s), "redis", "primary-failure")
    assert r.rpo_worst_case_seconds == 10
    assert r.feasible


def test_every_entry_has_the_contract_keys_and_exit_code(plan: Plan) -> None:
    good = _settings(
        patroni={"synchronous_mode": True, "archive_timeout": 60},
        sentinel={"min_replicas_to_write": 1},
    )
    results = assess(plan, good)
    for r in results:
        assert set(r.to_json()) == KEYS
    # Redis in DR is seeded hourly: over its 15 min RPO whatever the HA settings
    assert exit_code(results) == 1
    assert exit_code([r for r in results if r.component != "redis"]) == 0


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for var in ("PAYAPI_CONFIG", "PAYAPI_PLAN_FILE"):
        monkeypatch.delenv(var, raising=False)
    return CliRunner()


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_cli_json_keys_and_exit_1_when_infeasible(runner: CliRunner, tmp_path: Path) -> None:
    config = _write(tmp_path, "payapi.toml", "[patroni]\nttl = 600\n")
    res = runner.invoke(app, ["--config", str(config), "plan", "check", "--feasibility", "--json"])
    assert res.exit_code == 1, res.output
    data = json.loads(res.stdout)
    assert isinstance(data, list) and data
    for entry in data:
        assert set(entry) == KEYS
        assert isinstance(entry["feasible"], bool)
    db = next(e for e in data if (e["component"], e["scenario"]) == ("database", "leader-failure"))
    assert db["rto_worst_case_seconds"] == 630


def test_cli_exit_0_when_all_feasible(runner: CliRunner, tmp_path: Path) -> None:
    # A plan whose Redis objectives the hourly snapshots can meet.
    plan = _write(
        tmp_path,
        "plan.yaml",
        load_plan_text().replace("rto: 1h\n    rpo: 15m", "rto: 1h\n    rpo: 1h"),
    )
    config = _write(
        tmp_path,
        "payapi.toml",
        f'plan_file = "{plan}"\n[patroni]\nsynchronous_mode = true\narchive_timeout = 60\n'
        "[sentinel]\nmin_replicas_to_write = 1\n",
    )
    res = runner.invoke(app, ["--config", str(config), "plan", "check", "--feasibility", "--json"])
    assert res.exit_code == 0, res.output
    assert all(e["feasible"] for e in json.loads(res.stdout))
    human = runner.invoke(
        app, ["--config", str(config), "plan", "check", "--feasibility"], env={"COLUMNS": "200"}
    )
    assert human.exit_code == 0, human.output
    assert "leader-failure" in human.stdout and "ttl 30s" in human.stdout


@pytest.mark.parametrize(
    ("config_text", "extra"),
    [
        ("[patroni]\nttl = 'soon'\n", []),
        ("[patroni]\nno_such_key = 1\n", []),
        ("", ["--repository", "x"]),
        ("", ["--plan", "/nonexistent/dr-plan.yaml"]),
    ],
)
def test_cli_bad_input_exit_2_one_line(
    runner: CliRunner, tmp_path: Path, config_text: str, extra: list[str]
) -> None:
    config = _write(tmp_path, "payapi.toml", config_text)
    res = runner.invoke(
        app, ["--config", str(config), "plan", "check", "--feasibility", "--json", *extra]
    )
    assert res.exit_code == 2, res.output
    assert res.stdout == ""
    assert "Traceback" not in res.output
    assert len(res.stderr.strip().splitlines()) == 1
