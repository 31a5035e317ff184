"""`payapi plan check` says which drills are overdue against the plan's test calendar
(``drills_overdue``, a warning line), and its exit code does not change for them."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from payapi.cli.main import app
from tests.unit.drill_records import record, tabletop, write_journal

NOW = "2026-12-09T12:00:00Z"
BREACHED = record(rto_objective=20.0, lost=[3, 4])


def test_plan_check_reports_overdue_drills_without_changing_its_exit_code(tmp_path: Path) -> None:
    from payapi.backup.crypto import write_key_file
    from payapi.backup.repository import Repository

    key_file = tmp_path / "repository.key"
    key = write_key_file(key_file)
    url = f"file://{tmp_path / 'repo'}"
    with Repository.open(url, key) as repo:
        repo.init()
    cfg = tmp_path / "payapi.toml"
    cfg.write_text(f'[backup]\nrepository = "{url}"\nkey_file = "{key_file}"\n')

    def check(*args: str, now: str = NOW) -> tuple[int, str, str]:
        res = CliRunner().invoke(
            app, ["--config", str(cfg), "plan", "check", "--no-database", "--now", now, *args]
        )
        return res.exit_code, res.stdout, res.stderr

    before, out, _ = check("--json")
    late = {e["test_type"]: e for e in json.loads(out)["drills_overdue"]}
    assert set(late) == {"component", "functional", "full", "tabletop"}
    assert all(e["never"] for e in late.values())

    write_journal(tmp_path / "drills", BREACHED)  # a completed component drill (2026-12-07)
    write_journal(tmp_path / "drills", tabletop())
    code, out, _ = check("--json")
    assert code == before  # overdue drills are shown, never paged on
    late = {e["test_type"]: e for e in json.loads(out)["drills_overdue"]}
    assert set(late) == {"functional", "full"}

    code, _, err = check(now="2027-02-01T00:00:00Z")
    assert code == before
    assert (
        "drills overdue against the test calendar: component (monthly: due 2027-01-06)"
        in " ".join(err.split())
    )
