"""`payapi drill history|report|action` through the real commands (typer's runner; one
run through `python -m payapi`), with a config in tmp_path and no server anywhere."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from payapi.cli.main import app
from tests.unit.drill_records import record, tabletop, write_journal

NOW = "2026-12-09T12:00:00Z"
BREACHED = record(rto_objective=20.0, lost=[3, 4])


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "payapi.toml"
    path.write_text("")  # everything by default: drills/ beside this file
    return path


def drills(cfg: Path) -> Path:
    return cfg.parent / "drills"


def run(cfg: Path, *args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(app, ["--config", str(cfg), "drill", *args])
    return res.exit_code, res.stdout, res.stderr


def test_report_writes_four_reports_and_the_result(cfg: Path, tmp_path: Path) -> None:
    write_journal(drills(cfg), BREACHED)
    code, out, err = run(cfg, "action", "add", "--title", "Tune Sentinel", "--owner", "ada",
                         "--drill", BREACHED.drill_id, "--due", "2027-01-15", "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["id"] == "ACT-001"

    result_file = tmp_path / "test-results.json"
    code, out, err = run(cfg, "report", BREACHED.drill_id, "--output", str(result_file), "--json")
    assert code == 0, err  # the report was written; its verdicts say BREACHED
    result = json.loads(out)
    assert json.loads(result_file.read_text()) == result
    assert result["status"] == "completed" and result["overall_verdict"] == "BREACHED"
    assert result["measurements"]["rpo"]["missing"] == 2
    assert [v["verdict"] for v in result["verdicts"]] == ["BREACHED", "BREACHED"]
    assert result["open_actions"] == ["ACT-001"]
    reports = {k: Path(v) for k, v in result["reports"].items()}
    assert set(reports) == {"json", "markdown", "html", "junit"}
    assert all(p.is_file() for p in reports.values())
    assert reports["html"].parent == drills(cfg) / BREACHED.drill_id
    assert "Tune Sentinel" in reports["markdown"].read_text()
    assert ET.parse(reports["junit"]).getroot().find("testsuite/testcase/failure") is not None
    # The samples came from the samples file: the chart has them.
    assert len(json.loads(reports["json"].read_text())["samples"]) == len(BREACHED.samples)

    code, out, err = run(cfg, "report", BREACHED.drill_id, "--report-dir", str(tmp_path / "ci"))
    assert code == 0, err
    assert "BREACHED" in out and str(tmp_path / "ci") in out
    assert (tmp_path / "ci" / f"{BREACHED.drill_id}.junit.xml").is_file()


def test_history_lists_drills_trends_and_the_calendar(cfg: Path) -> None:
    write_journal(drills(cfg), BREACHED)
    write_journal(drills(cfg), tabletop())
    (drills(cfg) / "20261210T000000Z-broken-abcdef.jsonl").write_text("not json\n")
    code, out, err = run(cfg, "history", "--json", "--now", NOW)
    assert code == 0, err
    data = json.loads(out)
    assert [d["drill_id"] for d in data["drills"]] == [BREACHED.drill_id, tabletop().drill_id]
    first = data["drills"][0]
    assert first["test_type"] == "component" and first["overall_verdict"] == "BREACHED"
    assert first["rto_seconds"] == pytest.approx(25.04) and first["rpo"]["missing"] == 2
    assert data["trends"][0]["drill"] == "redis-failure"
    assert data["trends"][0]["direction"] == "unknown"  # one measured RTO
    calendar = {c["test_type"]: c for c in data["calendar"]}
    assert not calendar["component"]["overdue"] and not calendar["tabletop"]["overdue"]
    assert calendar["full"]["overdue"] and calendar["full"]["never"]
    assert data["unreadable"] == 1 and "1 unreadable drill journal(s)" in err

    code, out, err = run(cfg, "history", "--now", NOW)
    assert code == 0, err
    assert "redis-failure" in out and "OVERDUE" in out and "test calendar" in out


def test_history_of_an_empty_folder(cfg: Path) -> None:
    code, out, err = run(cfg, "history", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["drills"] == [] and all(c["overdue"] for c in data["calendar"])


def test_actions_add_list_close(cfg: Path) -> None:
    assert run(cfg, "action", "add", "--title", "One", "--owner", "ada", "--json")[0] == 0
    assert run(cfg, "action", "add", "--title", "Two", "--owner", "bob")[0] == 0
    code, out, _ = run(cfg, "action", "close", "ACT-001", "--note", "done", "--json")
    assert code == 0 and json.loads(out)["status"] == "closed"
    code, out, _ = run(cfg, "action", "list", "--json")
    assert [a["id"] for a in json.loads(out)] == ["ACT-002"]
    code, out, _ = run(cfg, "action", "list", "--all", "--json")
    assert [(a["id"], a["status"]) for a in json.loads(out)] == [
        ("ACT-001", "closed"),
        ("ACT-002", "open"),
    ]
    code, out, _ = run(cfg, "action", "list")
    assert code == 0 and "Two" in out and "One" not in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("report", "20261207T100000Z-nothing-000000"), "no run"),
        (("report", "../etc"), "not a drill id"),
        (("action", "add", "--title", "t", "--owner", "o", "--due", "soon"), "--due"),
        (("action", "add", "--title", "t", "--owner", "o", "--drill", "x"), "not a drill id"),
        (("action", "add", "--title", "", "--owner", "o"), "--title"),
        (("action", "close", "ACT-042"), "no action ACT-042"),
        (("action", "close", "42"), "not an action id"),
        (("history", "--now", "yesterday"), "--now"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cfg: Path, args: tuple[str, ...], needle: str) -> None:
    code, out, err = run(cfg, *args)
    assert code == 2, (out, err)
    assert needle in err and len(err.strip().splitlines()) == 1


def test_a_damaged_journal_is_one_line_and_exit_1(cfg: Path) -> None:
    folder = drills(cfg)
    folder.mkdir()
    (folder / "20261210T000000Z-broken-abcdef.jsonl").write_text('{"type": "start"}\n')
    code, _, err = run(cfg, "report", "20261210T000000Z-broken-abcdef")
    assert code == 1 and "its journal cannot be read" in err
    assert len(err.strip().splitlines()) == 1


def test_a_broken_config_is_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "payapi.toml"
    cfg.write_text("[drills]\nnope = 1\n")
    code, _, err = run(cfg, "action", "list")
    assert code == 2 and "invalid config" in err


def test_report_through_python_m_payapi(cfg: Path, tmp_path: Path) -> None:
    write_journal(drills(cfg), tabletop())
    res = subprocess.run(
        [sys.executable, "-m", "payapi", "--config", str(cfg), "drill", "report",
         tabletop().drill_id, "--report-dir", str(tmp_path / "out"), "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["tabletop"] is True and out["overall_verdict"] == "NOT MEASURED"
    assert "TABLETOP" in Path(out["reports"]["markdown"]).read_text()
    res = subprocess.run(
        [sys.executable, "-m", "payapi", "--config", str(cfg), "drill", "report", "nope"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert res.returncode == 2 and "not a drill id" in res.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--scenario", "failure", "--component", "redis", "--yes"), "two-region lab"),
        (
            ("--scenario", "failure", "--component", "redis", "--environment", "prod"),
            "this config is for environment",
        ),
        (("--scenario", "meteor", "--yes"), "no drill for --scenario meteor"),
        (
            ("--scenario", "failure", "--component", "redis", "--checklist", "/nope"),
            "--checklist",
        ),
    ],
)
def test_drill_run_refusals_are_one_line_and_exit_2(
    cfg: Path, args: tuple[str, ...], needle: str
) -> None:
    """Outside the lab, or with a request that names nothing, nothing is injected."""
    res = subprocess.run(
        [sys.executable, "-m", "payapi", "--config", str(cfg), "drill", "run", *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert needle in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
