"""`--dry-run` of every shipped runbook changes nothing: the state document taken after
all of them compares equal to the one taken before (issue 10's done-means)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.scenarios.conftest import LabHandle, run_cli

# The parameters a shipped runbook requires (the others have defaults).
REQUIRED = {
    "security-breach": ["reason=dry run", "all_clients=true", "rules_dir={tmp}/rules"],
    "corruption-db": [
        "since=2026-01-01T00:00:00+00:00",
        "apply=true",
        "verify=true",
        "plan_file={tmp}/plan.json",
        "work_dir={tmp}/work",
    ],
    "corruption-vault": [
        "since=2026-01-01T00:00:00+00:00",
        "apply=true",
        "plan_file={tmp}/plan.json",
        "work_dir={tmp}/work",
    ],
}


def test_every_shipped_runbook_dry_run_changes_nothing(lab: LabHandle, tmp_path: Path) -> None:
    shipped = [
        r["name"]
        for r in json.loads(run_cli("runbook", "list", "--json", config=lab.config).stdout)
        if r["source"] == "shipped"
    ]
    assert {"component-db", "component-vault", "engine-selftest", *REQUIRED} <= set(shipped)
    before, after = tmp_path / "before.json", tmp_path / "after.json"
    run_cli("state", "document", "--output", str(before), config=lab.config)
    journals = set((lab.config.parent / "runbooks").glob("*.jsonl"))
    for name in shipped:
        params = [a for p in REQUIRED.get(name, []) for a in ("-p", p.format(tmp=tmp_path))]
        res = run_cli(
            "runbook", "run", name, *params, "--dry-run", "--json", config=lab.config, check=False
        )
        assert res.returncode in (0, 1), res.stderr  # 1: a step would not resolve here
        assert json.loads(res.stdout)["dry_run"] is True, name
    assert set((lab.config.parent / "runbooks").glob("*.jsonl")) == journals  # no run written
    assert not (tmp_path / "rules").exists()  # nor a file
    assert not (tmp_path / "plan.json").exists() and not (tmp_path / "work").exists()
    run_cli("state", "document", "--output", str(after), config=lab.config)
    res = run_cli("state", "compare", str(before), str(after), "--json", config=lab.config)
    assert json.loads(res.stdout)["same"] is True, res.stdout
