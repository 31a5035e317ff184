"""DR drills on the two-region lab, through the CLI as an operator runs them: each drill
injects a real failure while the probes write, measures RTO and RPO, and restores normal
operation; the tests check the figures, the verdicts, the reports, and that the lab is
healthy afterwards with nothing acknowledged lost.

The lab is the session's (tests/scenarios/conftest.py); every test leaves it normal.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from payapi.core.plan import default_plan_text
from payapi.drills.journal import read_samples
from payapi.lab.regions import TwoRegionLab
from payapi.servers.postgres import psql
from payapi.servers.procs import wait_for
from tests.scenarios.conftest import run_cli

pytestmark = pytest.mark.timeout(600)

SEED_CHECKLIST = (
    "Test plan reviewed and approved",
    "All participants briefed on their roles",
    "Test environment prepared",
    "Monitoring systems in place",
    "Rollback procedures ready",
    "Stakeholders notified",
    "Go/No-Go decision made",
)


@dataclass
class Drills:
    lab: TwoRegionLab
    checklist: Path
    dir: Path

    @property
    def config(self) -> Path:
        return self.lab.config_path

    def run(self, *args: str, config: Path | None = None) -> tuple[int, dict[str, Any]]:
        res = run_cli(
            "drill", "run", *args, "--yes", "--checklist", str(self.checklist), "--json",
            config=config or self.config, check=False,
        )  # fmt: skip
        assert res.stdout.strip(), res.stderr
        return res.returncode, json.loads(res.stdout)

    def healthy(self) -> bool:
        res = run_cli("health", "check", "--json", config=self.config, check=False)
        return res.returncode == 0 and json.loads(res.stdout)["healthy"] is True


@pytest.fixture(scope="module")
def drills(
    two_region_lab: TwoRegionLab, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Drills]:
    folder = tmp_path_factory.mktemp("drills")
    checklist = folder / "checklist.yaml"
    checklist.write_text(
        yaml.safe_dump(
            {
                "items": [{"item": i, "done": True, "by": "Ada Lovelace"} for i in SEED_CHECKLIST],
                "go": True,
            }
        )
    )
    yield Drills(two_region_lab, checklist, folder)


def assert_reports(out: dict[str, Any]) -> None:
    reports = out["reports"]
    assert set(reports) >= {"json", "markdown", "html", "junit"}, reports
    for path in reports.values():
        assert Path(path).is_file(), path
    html = Path(reports["html"]).read_text()
    assert "<svg" in html and "https://" not in html and "http://cdn" not in html
    suite = ET.parse(reports["junit"]).getroot()
    cases = suite.iter("testcase")
    assert len(list(cases)) >= len(out["verdicts"])


def assert_contract(out: dict[str, Any]) -> None:
    assert set(out) >= {"drill_id", "scenario", "component", "status", "measurements",
                        "verdicts", "reports"}  # fmt: skip
    m = out["measurements"]
    assert set(m) >= {"injected_at", "detected_at", "service_restored_at", "normal_at",
                      "rto_seconds", "rpo"}  # fmt: skip
    assert set(m["rpo"]) >= {"acknowledged", "missing", "window_seconds"}
    for v in out["verdicts"]:
        assert set(v) >= {
            "component",
            "rto_objective_seconds",
            "rpo_objective_seconds",
            "rto_seconds",
            "rpo_window_seconds",
            "verdict",
            "margin_seconds",
        }


def test_redis_failure_drill_meets_the_plan_and_writes_four_reports(drills: Drills) -> None:
    rc, out = drills.run("--component", "redis", "--scenario", "failure",
                         "--report-dir", str(drills.dir / "redis"))  # fmt: skip
    assert rc == 0, out
    assert_contract(out)
    assert out["status"] == "completed" and out["component"] == "redis"
    redis = next(v for v in out["verdicts"] if v["component"] == "redis")
    assert redis["verdict"] == "MET" and redis["margin_seconds"] > 0
    tokens = out["measurements"]["probes"]["tokens"]
    assert tokens["attempts"] > 0
    assert out["measurements"]["rpo"]["missing"] == 0
    assert_reports(out)
    # The drill's [DRILL] incident was declared and completed with the measured figures.
    assert out["incident_id"], out
    channel = drills.lab.channel_dir("primary")  # the lab's primary incident channel
    sent = "".join(p.read_text() for p in channel.glob("*.txt"))
    assert "[DRILL]" in sent and out["drill_id"] in sent and "RTO" in sent
    assert drills.healthy()


def test_db_failure_drill_loses_no_acknowledged_payment(drills: Drills) -> None:
    rc, out = drills.run("--component", "db", "--scenario", "failure")
    assert rc == 0, out
    m = out["measurements"]
    assert m["rpo"]["acknowledged"] > 0 and m["rpo"]["missing"] == 0  # synchronous standby
    assert m["rto_seconds"] is not None and m["rto_seconds"] > 0  # the leader's loss was felt
    res = run_cli("plan", "check", "--feasibility", "--json", config=drills.config, check=False)
    bound = next(
        e["rto_worst_case_seconds"]
        for e in json.loads(res.stdout)
        if (e["component"], e["scenario"]) == ("database", "leader-failure")
    )
    assert m["rto_seconds"] <= bound + 10, (m["rto_seconds"], bound)
    assert_reports(out)
    assert drills.healthy()


def test_vault_failure_drill_keeps_every_secret_version(drills: Drills) -> None:
    rc, out = drills.run("--component", "vault", "--scenario", "failure")
    assert rc == 0, out
    vault = next(v for v in out["verdicts"] if v["component"] == "vault")
    assert vault["verdict"] == "MET" and vault["rto_seconds"] is not None
    assert out["measurements"]["probes"]["vault"]["first_failure_at"] is not None
    assert_reports(out)
    assert drills.healthy()


def test_corruption_drill_measures_the_correction(drills: Drills) -> None:
    run_cli("backup", "run", "--component", "database", "--json", config=drills.config)
    rc, out = drills.run("--component", "db", "--scenario", "corruption")
    assert rc == 0, out
    m = out["measurements"]
    assert m["rpo"]["missing"] == 0  # the 15 corrupted payments are back as acknowledged
    assert m["service_restored_at"] is not None and m["rto_seconds"] > 0
    assert not list(Path.cwd().glob("correction-plan-*"))  # the plan is in the lab's folder
    assert_reports(out)
    assert drills.healthy()


def test_a_slow_recovery_is_breached_with_a_negative_margin(drills: Drills) -> None:
    """An operator's drill whose recovery waits 4 s, judged against a plan that allows
    Payment-EAPI 2 s: the verdict can fail, and then the exit code is 1."""
    specs = drills.dir / "specs"
    specs.mkdir()
    (specs / "slow.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "slow-eapi",
                "title": "EAPI failure with a slow recovery",
                "scenario": "slow-failure",
                "component": "eapi",
                "injection": {"kind": "kill", "component": "eapi"},
                "recovery": {"kind": "runbook", "runbook": "component-eapi", "delay_seconds": 4},
                "abort": {"rto_factor": 100},
                "steady_state": {"seconds": 1, "health": False},
                "judge": [{"component": "payment-eapi", "probe": "payments"}],
            }
        )
    )
    plan = yaml.safe_load(default_plan_text())
    plan["components"]["payment-eapi"]["rto"] = "2s"
    (drills.dir / "tight-plan.yaml").write_text(yaml.safe_dump(plan))
    tight = drills.lab.dir / "tight" / "payapi.toml"  # beside the lab: still the lab's
    tight.parent.mkdir(exist_ok=True)
    tight.write_text(
        f'plan_file = "{drills.dir / "tight-plan.yaml"}"\n'
        + drills.config.read_text()
        + f'\n[drills]\nspec_dirs = ["{specs}"]\njournal_dir = "{drills.dir / "journal"}"\n'
    )
    rc, out = drills.run("--component", "eapi", "--scenario", "slow-failure", config=tight)
    assert rc == 1, out
    assert out["status"] == "completed"
    [v] = out["verdicts"]
    assert v["verdict"] == "BREACHED" and v["rto_objective_seconds"] == 2
    assert v["margin_seconds"] < 0 and v["rto_seconds"] >= 4
    assert drills.healthy()


def _injected(journal: Path, timeout: float = 60) -> None:
    def seen() -> bool:
        files = list(journal.glob("*-held-redis-failure-*.jsonl"))
        files = [f for f in files if not f.name.endswith(".samples.jsonl")]
        return any('"injected_at"' in f.read_text() for f in files)

    wait_for(seen, timeout=timeout, what="the drill's injection", interval=0.2)


def _start_redis_drill(drills: Drills, journal: Path) -> subprocess.Popen[str]:
    """A Redis failure drill whose recovery step holds for 60 s before it watches the
    probes: a signal sent after the injection lands in the drill, not in restore-normal
    (which ignores signals while it runs)."""
    specs = drills.dir / "held-specs"
    specs.mkdir(exist_ok=True)
    (specs / "held.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "held-redis-failure",
                "title": "Redis failure, recovery held",
                "scenario": "held-failure",
                "component": "redis",
                "probes": ["payments", "tokens"],
                "steady_state": {"seconds": 1},
                "injection": {"kind": "kill", "component": "redis"},
                "recovery": {"kind": "automatic", "delay_seconds": 60},
                "judge": [{"component": "redis", "probe": "tokens"}],
            }
        )
    )
    config = drills.lab.dir / "own-journal" / "payapi.toml"
    config.parent.mkdir(exist_ok=True)
    config.write_text(
        drills.config.read_text()
        + f'\n[drills]\njournal_dir = "{journal}"\nspec_dirs = ["{specs}"]\n'
    )
    argv = [sys.executable, "-m", "payapi", "--config", str(config), "drill", "run",
            "--component", "redis", "--scenario", "held-failure", "--yes", "--checklist",
            str(drills.checklist), "--json"]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_ctrl_c_aborts_the_drill_and_restores_normal(drills: Drills) -> None:
    journal = drills.dir / "sigint"
    proc = _start_redis_drill(drills, journal)
    try:
        _injected(journal)
        proc.send_signal(signal.SIGINT)
        stdout, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    out = json.loads(stdout)
    assert out["status"] == "aborted" and "Ctrl-C" in out["reason"]
    assert out["measurements"]["normal_at"] is not None  # restore-normal ran
    assert out["measurements"]["rpo"]["missing"] == 0
    assert drills.healthy()


def test_a_killed_runner_is_finished_by_restore_normal(drills: Drills) -> None:
    journal = drills.dir / "sigkill"
    proc = _start_redis_drill(drills, journal)
    try:
        _injected(journal)
        time.sleep(0.5)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    config = drills.lab.dir / "own-journal" / "payapi.toml"
    res = run_cli("drill", "restore-normal", "--json", config=config, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    done = json.loads(res.stdout)
    assert [d["ok"] for d in done["drills"]] == [True]
    assert drills.healthy()
    # Nothing acknowledged was lost: the samples the killed runner wrote are the ground truth.
    [samples] = journal.glob("*.samples.jsonl")
    acked = [x.ref for x in read_samples(samples) if x.probe == "payments" and x.ok]
    assert acked
    dsn = drills.lab.region("primary").dsn("payment_db")
    ids = ",".join(f"'{a}'" for a in acked)
    found = psql(dsn, f"SELECT count(*) FROM payments WHERE id IN ({ids})")
    assert found == [[str(len(set(acked)))]]
    again = run_cli("drill", "restore-normal", "--json", config=config)  # idempotent
    assert json.loads(again.stdout)["drills"] == []


def test_tabletop_changes_nothing(drills: Drills) -> None:
    before, after = drills.dir / "before.json", drills.dir / "after.json"
    run_cli("state", "document", "--output", str(before), config=drills.config)
    answers = drills.dir / "answers.yaml"
    answers.write_text(yaml.safe_dump({"inject": "the DBA kills the leader", "recover": "wait"}))
    res = run_cli(
        "drill", "run", "--component", "db", "--scenario", "failure", "--tabletop",
        "--checklist", str(drills.checklist), "--answers", str(answers), "--json",
        config=drills.config, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    out = json.loads(res.stdout)
    assert out["tabletop"] is True and out["measurements"]["injected_at"] is None
    assert all(v["verdict"] == "NOT MEASURED" for v in out["verdicts"])
    run_cli("state", "document", "--output", str(after), config=drills.config)
    res = run_cli("state", "compare", str(before), str(after), "--json", config=drills.config)
    assert json.loads(res.stdout)["same"] is True, res.stdout


def test_a_drill_without_a_checklist_is_refused(drills: Drills) -> None:
    res = run_cli("drill", "run", "--component", "redis", "--scenario", "failure", "--yes",
                  config=drills.config, check=False)  # fmt: skip
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "Pre-Test Checklist" in res.stderr


def test_the_annual_exercise_fails_over_survives_a_second_failure_and_the_channel_down(
    drills: Drills,
) -> None:
    """The full exercise contains the region-outage drill (primary region killed, regional
    failover through the global endpoint, failback), so that drill is tested here, with
    the exercise's extra failures: DR's EAPI killed during the recovery, and the primary
    communication channel down (the status update must go through the backup one)."""
    backup_channel = drills.lab.channel_dir("backup")
    before = len(list(backup_channel.glob("*.txt"))) if backup_channel.is_dir() else 0
    rc, out = drills.run("--scenario", "full-exercise")
    assert rc == 0, out
    assert_contract(out)
    m = out["measurements"]
    assert m["rto_seconds"] is not None and m["rto_seconds"] > 0
    assert m["rpo"]["acknowledged"] > 0 and m["rpo"]["missing"] is not None
    assert {v["component"] for v in out["verdicts"]} == {"database", "payment-eapi", "redis"}
    assert drills.lab.active_region == "primary"  # restore-normal failed back
    redis = next(v for v in out["verdicts"] if v["component"] == "redis")
    assert redis["rpo_window_seconds"] is not None  # tokens lost to the snapshot, counted
    dns = run_cli("dns", "show", "--json", config=drills.config)
    assert json.loads(dns.stdout)["region"] == "primary"
    report = json.loads(Path(out["reports"]["json"]).read_text())
    [recover] = [s for s in report["steps"] if s["name"] == "recover"]
    assert "region failover to dr" in recover["output"], recover
    assert "recover component eapi --region dr" in recover["output"], recover
    assert "sent through secondary-chat" in recover["output"], recover
    assert "dr-channel" in recover["output"]  # named as the channel that was down
    sent = sorted(backup_channel.glob("*.txt"))
    assert len(sent) > before and "[DRILL]" in sent[-1].read_text()
    assert drills.lab.channel_dir("primary").is_dir()  # the channel is back
    assert_reports(out)
    assert drills.healthy()


def test_an_object_store_outage_keeps_the_wal_and_drains_it(drills: Drills) -> None:
    rc, out = drills.run("--component", "object-store", "--scenario", "vendor-outage")
    assert rc == 0, out
    payments = out["measurements"]["probes"]["payments"]
    assert payments["first_failure_at"] is None, payments  # payments never noticed
    assert out["measurements"]["rpo"]["missing"] == 0
    report = json.loads(Path(out["reports"]["json"]).read_text())
    [recover] = [s for s in report["steps"] if s["name"] == "recover"]
    assert "a backup during the outage failed cleanly" in recover["output"], recover
    assert "the WAL drained" in recover["output"] and "was accepted" in recover["output"]
    assert drills.lab.backups_dir.is_dir()
    assert not drills.lab.backups_dir.with_name("backups.drill-unreachable").exists()
    assert drills.healthy()


def test_security_breach_drill_contains_the_leak(drills: Drills) -> None:
    rc, out = drills.run("--scenario", "security-breach")
    assert rc == 0, out
    m = out["measurements"]
    assert m["rto_seconds"] is not None and m["rpo"]["missing"] == 0
    assert out["measurements"]["probes"]["payments"]["successes"] > 0
    assert_reports(out)
    assert drills.healthy()


def test_a_vault_vendor_outage_is_served_in_degraded_mode(drills: Drills) -> None:
    rc, out = drills.run("--component", "vault", "--scenario", "vendor-outage")
    assert rc == 0, out
    payments = out["measurements"]["probes"]["payments"]
    assert payments["first_failure_at"] is None, payments  # the cache carried them
    assert out["measurements"]["rto_seconds"] == 0
    assert drills.healthy()
