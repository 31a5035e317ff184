"""deploy/prometheus/alerts.yml: valid for promtool, tested by promtool, and reading only
metrics that payapi actually exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from payapi.core.plan import load_plan
from payapi.ops.metrics import JobCollector, render
from payapi.ops.rpo import report
from payapi.ops.schedule import jobs_from_plan
from payapi.ops.scheduler import Scheduler
from tests.unit.test_rpo import NOW, healthy
from tests.unit.test_rpo_replication import regions

PROM = Path(__file__).parents[2] / "deploy" / "prometheus"
RULES = PROM / "alerts.yml"
RULE_TESTS = PROM / "alerts.test.yml"

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (Debian package 'prometheus'; .ci/run installs it as root)",
)


@needs_promtool
def test_promtool_check_rules() -> None:
    assert PROMTOOL is not None
    res = subprocess.run(
        [PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


@needs_promtool
def test_promtool_checks_the_security_rules_of_a_breach_recovery() -> None:
    assert PROMTOOL is not None
    rules = Path(__file__).parents[2] / "src" / "payapi" / "data" / "alerts-security.yml"
    res = subprocess.run(
        [PROMTOOL, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stdout + res.stderr


@needs_promtool
def test_promtool_rule_unit_tests() -> None:
    assert PROMTOOL is not None
    res = subprocess.run(
        [PROMTOOL, "test", "rules", str(RULE_TESTS)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PROM,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def _rules() -> list[dict[str, object]]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def test_the_issues_alerts_exist() -> None:
    names = {r["alert"] for r in _rules()}
    assert {
        "PayapiBackupStale",
        "PayapiBackupVerificationFailed",
        "PayapiRpoExposureAboveObjective",
        "PayapiWalArchivingFailing",
        "PayapiDrRegionLaggingBeyondRpo",
        "PayapiNoSynchronousStandby",
    } <= names
    for rule in _rules():
        assert rule["labels"]["severity"] in ("warning", "critical")  # type: ignore[index]
        assert rule["annotations"]["summary"]  # type: ignore[index]


def test_every_metric_the_rules_read_is_exported() -> None:
    plan = load_plan()
    # With [regions] observed, so that the replication figures are exported too.
    exported = render(report(plan, healthy(replication=regions()), NOW)).decode()
    scheduler = Scheduler(jobs_from_plan(plan), ["payapi"], emit=lambda _e: None)
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobCollector(scheduler))
    exported += generate_latest(registry).decode()
    names = set(re.findall(r"^# TYPE (\w+) ", exported, re.MULTILINE))
    used: set[str] = set()
    for rule in _rules():
        used |= set(re.findall(r"\bpayapi_\w+", str(rule["expr"])))
    assert used, "no payapi metric in the rules?"
    assert used <= names, f"rules read metrics nobody exports: {sorted(used - names)}"


def test_the_security_rules_read_only_metrics_eapi_exports() -> None:
    import re

    from payapi.eapi.app import Metrics

    rules = Path(__file__).parents[2] / "src" / "payapi" / "data" / "alerts-security.yml"
    read = set(re.findall(r"\b(payapi_[a-z_]+)", rules.read_text()))
    families = {m.name for m in Metrics.create().registry.collect()}
    assert read and {name.removesuffix("_total") for name in read} <= families
