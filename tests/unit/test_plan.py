"""The DR plan as data: the default matches the seed; bad plans fail with one clear line."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from payapi.cli.main import app
from payapi.core.plan import (
    Duration,
    PlanError,
    UnknownComponentError,
    default_plan_text,
    load_plan,
    parse_duration,
    parse_plan,
)

REPO = Path(__file__).resolve().parents[2]

# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4h", timedelta(hours=4)),
        ("15m", timedelta(minutes=15)),
        ("5m", timedelta(minutes=5)),
        ("90s", timedelta(seconds=90)),
        ("30d", timedelta(days=30)),
        ("2w", timedelta(weeks=2)),
        ("1y", timedelta(days=365.25)),
        ("7y", timedelta(days=7 * 365.25)),
        ("hourly", timedelta(hours=1)),
        ("daily", timedelta(days=1)),
        ("weekly", timedelta(weeks=1)),
        ("continuous", timedelta(0)),
        ("on change", timedelta(0)),
        ("On  Build", timedelta(0)),
        ("indefinite", timedelta.max),
        (" 4H ", timedelta(hours=4)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["5 minutes", "4", "h", "-1h", "1.5h", "4hours", "", "on"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="unparseable duration"):
        parse_duration(text)


def test_duration_kinds_and_json() -> None:
    assert Duration.parse("indefinite").forever
    assert Duration.parse("indefinite").to_json() == {"text": "indefinite", "seconds": None}
    assert Duration.parse("continuous").kind == "continuous"
    assert Duration.parse("on change").kind == "event"
    assert Duration.parse("4h").to_json() == {"text": "4h", "seconds": 14400}
    # An indefinite retention never expires anything.
    assert not timedelta(days=365 * 100) > parse_duration("indefinite")


# --------------------------------------------------------------------------- default plan


def test_default_plan_matches_seed_objectives() -> None:
    plan = load_plan()
    expected = {
        "payment-eapi": ("4h", "15m", "critical"),
        "payment-sapi": ("4h", "15m", "critical"),
        "vault": ("2h", "5m", "critical"),
        "redis": ("1h", "15m", "high"),
        "monitoring": ("8h", "1h", "medium"),
        # Not in the seed's objectives table: inherits Payment-SAPI's.
        "database": ("4h", "15m", "critical"),
    }
    for name, (rto, rpo, priority) in expected.items():
        c = plan.component(name)
        assert c.rto is not None and c.rpo is not None
        assert (c.rto.delta, c.rpo.delta, c.priority) == (
            parse_duration(rto),
            parse_duration(rpo),
            priority,
        ), name
    sapi = plan.component("payment-sapi")
    assert plan.component("database").rto == sapi.rto
    assert plan.component("database").rpo == sapi.rpo


def test_default_plan_documents_database_inheritance() -> None:
    text = default_plan_text()
    db_block = text.split("\n  database:\n", 1)[1].split("\n  monitoring:\n", 1)[0]
    assert "inherits Payment-SAPI" in db_block


def test_default_plan_recovery_approaches() -> None:
    plan = load_plan()
    approaches = {
        "payment-eapi": ("Redeployment from images", "Restore from backup"),
        "vault": ("Failover to standby", "Restore from backup"),
        "redis": ("Failover to replica", "Rebuild from scratch"),
        "database": ("Failover to standby", "Restore from backup"),
        "kubernetes": ("Redeployment of resources", "Restore from backup"),
    }
    for name, (primary, alternative) in approaches.items():
        rec = plan.component(name).recovery
        assert rec is not None
        assert (rec.primary, rec.alternative) == (primary, alternative)
    assert plan.component("redis").recovery.data_protection == "Asynchronous replication"  # type: ignore[union-attr]


def test_default_plan_backups_match_seed() -> None:
    plan = load_plan()
    rows = {(b.component, b.type): (b.frequency.text, b.retention.text) for b in plan.backups}
    assert rows == {
        ("vault", "full"): ("daily", "30d"),
        ("vault", "incremental"): ("hourly", "7d"),
        ("database", "full"): ("daily", "30d"),
        ("database", "wal"): ("continuous", "7d"),
        ("redis", "snapshot"): ("hourly", "7d"),
        ("kubernetes", "export"): ("daily", "30d"),
        ("configuration", "git"): ("on change", "indefinite"),
        ("container-images", "registry"): ("on build", "90d"),
    }
    assert [b.type for b in plan.backups_for("db")] == ["full", "wal"]
    assert plan.backups_for("monitoring") == ()
    assert all(b.location.startswith("Encrypted S3") for b in plan.backups_for("vault"))


def test_default_plan_retention_tests_team_channels() -> None:
    plan = load_plan()
    assert [(t.name, t.keep.text) for t in plan.retention_tiers] == [
        ("daily", "30d"),
        ("weekly", "90d"),
        ("monthly", "1y"),
        ("annual", "7y"),
    ]
    assert plan.tier("weekly").period.delta == timedelta(weeks=1)
    assert {k: t.frequency.text for k, t in plan.tests.items()} == {
        "component": "monthly",
        "functional": "quarterly",
        "full": "annually",
        "tabletop": "quarterly",
    }
    assert set(plan.team) == {
        "dr-coordinator",
        "infrastructure-lead",
        "application-lead",
        "security-lead",
        "communications-lead",
    }
    assert len(plan.communication.roles) == 5
    assert all(c.primary.is_placeholder for c in plan.team.values())
    assert "team.dr-coordinator.primary" in plan.placeholder_contacts()
    channels = plan.communication.channels
    assert any(c.address == "#disaster-recovery" for c in channels.primary)
    assert len(channels.backup) == 4
    assert any(c.address == "status.example.com" for c in channels.external)
    assert len(plan.scenarios) == 6


def test_component_lookup_by_alias_and_unknown() -> None:
    plan = load_plan()
    assert plan.component("DB").name == "database"
    assert plan.resolve("conjur") == "vault"
    with pytest.raises(UnknownComponentError, match="unknown component 'mainframe'"):
        plan.component("mainframe")
    with pytest.raises(UnknownComponentError):
        plan.backups_for("mainframe")


def test_plan_is_frozen() -> None:
    plan = load_plan()
    with pytest.raises(ValueError):
        plan.title = "x"  # type: ignore[misc]
    with pytest.raises(ValueError):
        plan.component("vault").rpo = None  # type: ignore[misc]


def test_repo_root_symlink_is_the_packaged_plan() -> None:
    link = REPO / "dr-plan.yaml"
    assert link.is_symlink()
    assert link.read_text() == default_plan_text()
    assert load_plan(link) == load_plan()


# --------------------------------------------------------------------------- bad plans


def _bad(replace: str, by: str) -> str:
    text = default_plan_text()
    assert replace in text, replace
    return text.replace(replace, by, 1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            _bad("rpo: 5m", "rpo: 5 minutes"),
            "dr-plan.yaml: components.vault.rpo: unparseable duration '5 minutes'",
        ),
        (
            _bad("    rpo: 5m\n", ""),
            "dr-plan.yaml: components.vault.rpo: required key missing",
        ),
        (
            _bad("    rpo: 5m\n", "    rpo: 5m\n    rpoo: 1m\n"),
            "dr-plan.yaml: components.vault.rpoo: unknown key",
        ),
        (
            _bad("  - component: redis\n", "  - component: rediss\n"),
            "dr-plan.yaml: backups[4].component: unknown component 'rediss'",
        ),
        (
            _bad("  - component: redis\n", "  - component: cache\n"),
            "dr-plan.yaml: backups[4].component: use the component's name 'redis'",
        ),
        (
            _bad("    retention: 7d\n", "    retention: a week\n"),
            "dr-plan.yaml: backups[1].retention: unparseable duration 'a week'",
        ),
        (
            _bad("keep: 7y", "keep: 7"),
            "dr-plan.yaml: retention_tiers[3].keep: expected a duration string",
        ),
        (
            _bad("priority: high", "priority: urgent"),
            "dr-plan.yaml: components.redis.priority: Input should be",
        ),
        (
            _bad("  redis:\n", "  vault:\n"),
            "dr-plan.yaml: line 64: duplicate key 'vault'",
        ),
        (
            _bad("  - name: weekly", "  - name: daily"),
            "dr-plan.yaml: retention_tiers[1].name: tier 'daily' appears twice",
        ),
        (
            _bad("aliases: [cache]", "aliases: [db]"),
            "dr-plan.yaml: components.database.aliases[0]: 'db' is already used",
        ),
        (
            _bad("\nscenarios:\n", "\nsenarios:\n"),
            "dr-plan.yaml: scenarios: required key missing (and 1 more problems)",
        ),
        ("- just\n- a list\n", "dr-plan.yaml: the plan must be a YAML mapping of sections"),
        ("components: [\n", "dr-plan.yaml: line 2:"),
    ],
)
def test_bad_plan_is_one_line_naming_the_field(text: str, expected: str) -> None:
    with pytest.raises(PlanError) as info:
        parse_plan(text, "dr-plan.yaml")
    message = str(info.value)
    assert message.startswith(expected), message
    assert "\n" not in message


def test_bad_plan_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "my-plan.yaml"
    path.write_text(_bad("rpo: 5m", "rpo: 5 minutes"))
    with pytest.raises(PlanError, match=r"my-plan\.yaml: components\.vault\.rpo: unparseable"):
        load_plan(path)
    with pytest.raises(PlanError, match="cannot read the plan"):
        load_plan(tmp_path / "missing.yaml")


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.delenv("PAYAPI_CONFIG", raising=False)
    monkeypatch.delenv("PAYAPI_PLAN_FILE", raising=False)
    return CliRunner()


def test_cli_plan_show_json_without_any_config(runner: CliRunner) -> None:
    result = runner.invoke(app, ["plan", "show", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    vault = data["components"]["vault"]
    assert vault["rto"] == {"text": "2h", "seconds": 7200}
    assert vault["rpo"] == {"text": "5m", "seconds": 300}
    assert data["components"]["database"]["rpo"]["seconds"] == 900
    conf = next(b for b in data["backups"] if b["component"] == "configuration")
    assert conf["retention"] == {"text": "indefinite", "seconds": None}
    assert [t["name"] for t in data["retention_tiers"]] == ["daily", "weekly", "monthly", "annual"]


def test_cli_plan_show_table(runner: CliRunner) -> None:
    result = runner.invoke(app, ["plan", "show"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for word in ("payment-eapi", "Failover to standby", "Encrypted S3 bucket", "7y"):
        assert word in result.stdout


def test_cli_plan_show_from_option_and_config(runner: CliRunner, tmp_path: Path) -> None:
    mine = tmp_path / "plan.yaml"
    mine.write_text(_bad("rto: 2h", "rto: 90m"))
    result = runner.invoke(app, ["plan", "show", "--json", "--plan", str(mine)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["components"]["vault"]["rto"]["seconds"] == 5400

    cfg = tmp_path / "payapi.toml"
    cfg.write_text('plan_file = "plan.yaml"\n')  # relative to the config's folder
    result = runner.invoke(app, ["--config", str(cfg), "plan", "show", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["components"]["vault"]["rto"]["text"] == "90m"


def test_cli_bad_plan_is_one_line_exit_1(runner: CliRunner, tmp_path: Path) -> None:
    bad = tmp_path / "dr-plan.yaml"
    bad.write_text(_bad("rpo: 5m", "rpo: 5 minutes"))
    result = runner.invoke(app, ["plan", "show", "--plan", str(bad)])
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "components.vault.rpo: unparseable duration '5 minutes'" in lines[0]
