"""`payapi runbook`: JSON shapes, exit codes, one-line errors, a dry run that writes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def payapi(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "payapi", "--config", str(config), "runbook", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    ops = tmp_path / "ops"
    ops.mkdir()
    (ops / "touch.yaml").write_text(
        "name: touch\ntitle: Touch a file\n"
        "parameters:\n  file: {type: str}\n  fail_at_end: {type: bool, default: false}\n"
        "steps:\n"
        "  - id: touch\n    action: shell\n    params: {argv: [touch, '{{ file }}']}\n"
        "  - id: gate\n    action: shell\n"
        "    params: {argv: [sh, -c, 'test {{ fail_at_end }} = false']}\n"
    )
    cfg = tmp_path / "payapi.toml"
    cfg.write_text('[recovery]\nrunbook_dirs = ["ops"]\n')
    return cfg


def test_list_shows_shipped_and_operator_runbooks(config: Path) -> None:
    res = payapi(config, "list", "--json")
    assert res.returncode == 0, res.stderr
    by_name = {e["name"]: e for e in json.loads(res.stdout)}
    assert by_name["engine-selftest"]["source"] == "shipped"
    assert by_name["touch"]["source"] == str(config.parent / "ops")
    assert by_name["touch"]["parameters"]["file"]["required"] is True


def test_a_dry_run_resolves_every_step_and_changes_nothing(config: Path, tmp_path: Path) -> None:
    target = tmp_path / "touched"
    res = payapi(config, "run", "touch", "--param", f"file={target}", "--dry-run", "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["dry_run"] is True and data["ok"] is True
    assert data["steps"][0]["params"]["argv"] == ["touch", str(target)]
    assert "found at" in data["steps"][0]["would"]
    assert not target.exists()
    assert not (tmp_path / "runbooks").exists()  # no journal for a dry run


def test_a_run_succeeds_then_shows_and_lists(config: Path, tmp_path: Path) -> None:
    target = tmp_path / "touched"
    res = payapi(config, "run", "touch", "-p", f"file={target}", "--yes", "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["status"] == "succeeded" and target.exists()
    assert [s["status"] for s in data["steps"]] == ["ok", "ok"]
    shown = json.loads(payapi(config, "show", data["run_id"], "--json").stdout)
    assert shown["run_id"] == data["run_id"]
    assert shown["events"][0]["type"] == "run"
    runs = json.loads(payapi(config, "runs", "--json").stdout)
    assert [(r["run_id"], r["status"]) for r in runs] == [(data["run_id"], "succeeded")]
    human = payapi(config, "show", data["run_id"])
    assert human.returncode == 0 and "succeeded" in human.stdout


def test_a_failed_run_exits_1_and_resume_continues_it(config: Path, tmp_path: Path) -> None:
    target = tmp_path / "touched"
    res = payapi(config, "run", "touch", "-p", f"file={target}", "-p", "fail_at_end=true", "--yes")
    assert res.returncode == 1
    assert "gate: attempt 1 failed" in res.stderr
    assert "failed" in res.stdout  # the summary table
    run_id = json.loads(payapi(config, "runs", "--json").stdout)[0]["run_id"]
    # The run remembers its parameters: a resume fails the same way until the world changes.
    again = payapi(config, "resume", run_id, "--json")
    assert again.returncode == 1
    assert json.loads(again.stdout)["resumes"] == 1


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["run", "nope", "--yes"], "error: no runbook 'nope'"),
        (["run", "touch", "--yes"], "error: runbook touch: parameter file is required"),
        (["run", "touch", "-p", "oops", "--yes"], "error: --param 'oops': expected NAME=VALUE"),
        (["run", "touch", "-p", "file=x"], "confirm with --yes"),
        (["show", "../x"], "error: not a run id"),
        (
            ["resume", "20260101T000000Z-touch-000000"],
            "error: no run 20260101T000000Z-touch-000000",
        ),
    ],
)
def test_bad_requests_exit_2_with_one_line(config: Path, args: list[str], line: str) -> None:
    res = payapi(config, *args)
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and line in res.stderr


def test_an_invalid_operator_runbook_is_one_line_naming_it(config: Path) -> None:
    bad = config.parent / "ops" / "bad.yaml"
    bad.write_text("name: bad\ntitle: Bad\nsteps:\n  - id: a\n    action: noop\n    retries: -1\n")
    res = payapi(config, "list")
    assert res.returncode == 1
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith(f"error: runbook {bad}: steps[0] (a).retries:")
