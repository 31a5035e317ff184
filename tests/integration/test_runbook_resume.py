"""A runbook killed with SIGKILL in the middle of a step resumes at that step, and the
side effects of the steps that had completed happen exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

RUNBOOK = """\
name: kill-me
title: A runbook killed in its second step
parameters:
  dir: {type: str}
steps:
  - id: append
    title: A side effect that must happen once
    action: shell
    params: {argv: [sh, -c, "echo once >> {{ dir }}/appended"]}
  - id: slow
    title: Waits until released (killed here the first time)
    action: shell
    params:
      argv: [sh, -c, "echo started >> {{ dir }}/slow.log; test -e {{ dir }}/release || sleep 120"]
    timeout: 5m
  - id: after
    action: shell
    params: {argv: [sh, -c, "echo after >> {{ dir }}/after"]}
"""


def payapi(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "payapi", "--config", str(config), "runbook", *args]


def wait_for(path: Path, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear within {seconds}s"
        time.sleep(0.05)


def test_sigkill_mid_step_then_resume_completes_without_repeating_done_steps(
    tmp_path: Path,
) -> None:
    ops = tmp_path / "ops"
    ops.mkdir()
    (ops / "kill-me.yaml").write_text(RUNBOOK)
    work = tmp_path / "work"
    work.mkdir()
    config = tmp_path / "payapi.toml"
    config.write_text('[recovery]\nrunbook_dirs = ["ops"]\n')

    # Its own session, so the kill takes the step's child processes too (as a killed
    # host would).
    proc = subprocess.Popen(
        payapi(config, "run", "kill-me", "-p", f"dir={work}", "--yes"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(work / "slow.log")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    runs = json.loads(
        subprocess.run(
            payapi(config, "runs", "--json"), capture_output=True, text=True, check=True
        ).stdout
    )
    (run,) = runs
    assert run["status"] == "interrupted"
    journal = tmp_path / "runbooks" / f"{run['run_id']}.jsonl"
    # Also as if the kill had come in the middle of writing a record.
    with journal.open("ab") as f:
        f.write(b'{"type":"note","te')

    (work / "release").touch()
    res = subprocess.run(
        payapi(config, "resume", run["run_id"], "--json"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["status"] == "succeeded"
    assert [(s["step"], s["status"]) for s in data["steps"]] == [
        ("append", "ok"),
        ("slow", "ok"),
        ("after", "ok"),
    ]
    assert (work / "appended").read_text() == "once\n"  # completed before the kill: once
    assert (work / "slow.log").read_text() == "started\nstarted\n"  # re-run from its start
    assert (work / "after").read_text() == "after\n"

    records = [json.loads(x) for x in journal.read_text().splitlines()]  # every line whole
    (interrupted,) = [r for r in records if r["type"] == "interrupted"]
    assert interrupted["step"] == "slow" and interrupted["attempt"] == 1
    assert "never ended" in interrupted["note"]
    assert [r["attempt"] for r in records if r["type"] == "start" and r["step"] == "append"] == [1]
