"""`payapi schedule show` and `payapi schedule run`, with the jobs pointed at a fake
`payapi` (``--job-command``) so that the scheduler, not the backup engines, is tested."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from payapi.cli.main import app
from tests.integration.test_plan_check_cli import Repo, fresh

FAKE_PAYAPI = """
import json, os, sys, time
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps(args) + "\\n")
if "--restore-test" in args and os.environ.get("FAKE_SLOW_RESTORE"):
    time.sleep(120)
if "vault" in args and "--full" in args:
    print("error: the vault is sealed", file=sys.stderr)
    sys.exit(3)
print(json.dumps({"ok": True}))
"""


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path / "platform")


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    script = tmp_path / "fake_payapi.py"
    script.write_text(FAKE_PAYAPI)
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_LOG", str(log))
    return f"{sys.executable} {script}", log


def events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_show_json_lists_jobs_with_next_runs_and_what_is_not_scheduled() -> None:
    res = CliRunner().invoke(
        app, ["schedule", "show", "--json", "--now", "2026-06-15T10:30:00Z", "--count", "2"]
    )
    assert res.exit_code == 0, res.stderr
    data = json.loads(res.stdout)
    jobs = {j["name"]: j for j in data["jobs"]}
    assert jobs["vault-incremental"]["next_runs"] == [
        "2026-06-15T11:05:00+00:00",
        "2026-06-15T12:05:00+00:00",
    ]
    assert jobs["database-full"]["next_runs"][0] == "2026-06-16T01:00:00+00:00"
    assert jobs["vault-full"]["cron"] == "20 1 * * *"
    assert jobs["purge"]["args"][:2] == ["retention", "purge"]
    # Sorted by the next run: the minutely incident sweep, then the vault incremental (11:05).
    assert [j["name"] for j in data["jobs"][:2]] == ["incident-sweep", "vault-incremental"]
    skipped = {(n["component"], n["backup_type"]) for n in data["not_scheduled"]}
    assert ("database", "wal") in skipped


def test_show_human() -> None:
    res = CliRunner().invoke(app, ["schedule", "show", "--now", "2026-06-15T10:30:00Z"])
    assert res.exit_code == 0
    assert "vault-incremental" in res.stdout and "2026-06-15 11:05" in res.stdout
    assert "vault-incremental: payapi backup run --component vault --incremental" in res.stdout
    assert "not scheduled: database wal" in " ".join(res.stderr.split())


def test_run_once_runs_everything_due_and_a_failure_does_not_stop_the_rest(
    repo: Repo, fake: tuple[str, Path], tmp_path: Path
) -> None:
    fresh(repo, datetime.now(UTC))
    command, log = fake
    state = tmp_path / "state.json"
    args = ["--config", str(repo.config), "schedule", "run", "--once"]
    args += ["--state-file", str(state), "--job-command", command]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1  # one job failed
    evs = events(res.stdout)
    finished = {e["job"]: e for e in evs if e["event"] in ("job_finished", "job_failed")}
    assert len(finished) == 9  # the eight backup-plan jobs and the incident sweep
    assert finished["vault-full"]["event"] == "job_failed"
    assert finished["vault-full"]["exit_code"] == 3
    assert finished["vault-full"]["output_tail"] == ["error: the vault is sealed"]
    assert all(e["ok"] for name, e in finished.items() if name != "vault-full")
    assert all(e["duration_seconds"] >= 0 for e in finished.values())
    done = next(e for e in evs if e["event"] == "once_done")
    assert done["failed"] == ["vault-full"]
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert ["backup", "run", "--component", "database", "--full", "--json"] in calls
    assert ["retention", "purge", "--lock-wait", "600", "--json"] in calls
    # The RPO check ran too (its status changes are logged).
    statuses = {e["component"]: e["status"] for e in evs if e["event"] == "rpo_status"}
    assert statuses["vault"] == "OK"
    # Run again: the state file says everything ran in this slot, so nothing is due.
    res2 = CliRunner().invoke(app, args)
    assert res2.exit_code == 0
    assert not [e for e in events(res2.stdout) if e["event"] == "job_started"]


def _read_lines(stream: Any, out: queue.Queue[dict[str, Any]]) -> None:
    for line in stream:
        if line.startswith("{"):
            out.put(json.loads(line))


def _wait_for(q: queue.Queue[dict[str, Any]], pred: Any, timeout: float = 60) -> dict[str, Any]:
    deadline = datetime.now(UTC) + timedelta(seconds=timeout)
    seen: list[dict[str, Any]] = []
    while datetime.now(UTC) < deadline:
        try:
            ev = q.get(timeout=0.5)
        except queue.Empty:
            continue
        seen.append(ev)
        if pred(ev):
            return ev
    raise AssertionError(f"event not seen within {timeout}s; saw {[e['event'] for e in seen]}")


def test_run_serves_metrics_and_stops_cleanly_on_sigterm(
    repo: Repo, fake: tuple[str, Path], tmp_path: Path
) -> None:
    fresh(repo, datetime.now(UTC))
    command, _log = fake
    env = {**os.environ, "FAKE_SLOW_RESTORE": "1", "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "payapi", "--config", str(repo.config), "schedule", "run"]
    argv += ["--metrics-port", "0", "--job-command", command]
    argv += ["--state-file", str(tmp_path / "state.json")]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    q: queue.Queue[dict[str, Any]] = queue.Queue()
    reader = threading.Thread(target=_read_lines, args=(proc.stdout, q), daemon=True)
    reader.start()
    try:
        listening = _wait_for(q, lambda e: e["event"] == "metrics_listening")
        url = listening["url"]
        assert url.startswith("http://127.0.0.1:")
        # The slow restore test is running: every backup job before it has finished.
        _wait_for(q, lambda e: e["event"] == "job_started" and e["job"] == "restore-test")
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = resp.read().decode()
        assert "payapi_rpo_check_up 1.0" in body
        assert 'payapi_rpo_exposure_seconds{component="vault"}' in body
        assert 'payapi_rpo_objective_seconds{component="vault"} 300.0' in body
        assert 'payapi_schedule_job_last_exit_code{component="vault",job="vault-full"' in body
        assert "payapi_schedule_job_next_run_timestamp_seconds" in body
        proc.send_signal(signal.SIGTERM)
        stopped = _wait_for(q, lambda e: e["event"] == "job_failed" and e["job"] == "restore-test")
        assert stopped.get("stopped") is True
        _wait_for(q, lambda e: e["event"] == "scheduler_stopped")
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
