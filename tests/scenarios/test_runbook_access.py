"""Access control on runbooks, on the shared lab: the DR team are vault users, each
runbook is a webservice they may (or may not) ``execute``, and an approval needs a
holder of the role other than the requester (the seed's "Access Control")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.scenarios.conftest import LabHandle, run_cli


def _as(lab: LabHandle, login: str, *args: str) -> Any:
    key = lab.lab.secrets_dir / f"{login}.api_key"
    return run_cli("--as", login, "--api-key-file", str(key), *args, config=lab.config, check=False)


def _events(lab: LabHandle, type_: str) -> list[dict[str, Any]]:
    res = run_cli("audit", "list", "--type", type_, "--limit", "50", "--json", config=lab.config)
    events: list[dict[str, Any]] = json.loads(res.stdout)
    return events


def test_team_key_files_are_private(lab: LabHandle) -> None:
    for login in ("dr-coordinator", "infra-lead", "app-lead", "security-lead"):
        path = lab.lab.secrets_dir / f"{login}.api_key"
        assert path.stat().st_mode & 0o777 == 0o600


def test_an_operator_without_execute_is_refused_and_audited(lab: LabHandle, tmp_path: Path) -> None:
    key = (lab.lab.secrets_dir / "security-lead.api_key").read_text().strip()
    res = _as(lab, "security-lead", "runbook", "run", "approval-selftest", "--yes")
    assert res.returncode == 3, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "no execute" in res.stderr
    assert key not in res.stderr + res.stdout
    denied = [e for e in _events(lab, "recovery.access_denied") if e["actor"] == "security-lead"]
    assert denied and denied[-1]["details"]["runbook"] == "approval-selftest"
    assert denied[-1]["details"]["privilege"] == "execute"
    assert key not in json.dumps(denied)
    # no key at all is a usage error; a wrong one is refused (exit 3), unechoed
    none = run_cli(
        "--as",
        "infra-lead",
        "runbook",
        "run",
        "engine-selftest",
        "--yes",
        config=lab.config,
        check=False,
    )
    assert none.returncode == 2 and "PAYAPI_API_KEY" in none.stderr
    wrong = tmp_path / "wrong.api_key"
    wrong.write_text("not-the-key-0123456789\n")
    bad = run_cli(
        "--as",
        "infra-lead",
        "--api-key-file",
        str(wrong),
        "runbook",
        "run",
        "engine-selftest",
        "--yes",
        config=lab.config,
        check=False,
    )
    assert bad.returncode == 3 and "rejected the credentials" in bad.stderr
    assert "not-the-key" not in bad.stderr + bad.stdout


def test_four_eyes_approval(lab: LabHandle) -> None:
    res = _as(lab, "infra-lead", "runbook", "run", "approval-selftest", "--yes", "--json")
    assert res.returncode == 1, res.stderr
    run = json.loads(res.stdout)
    assert run["status"] == "waiting_approval" and run["requested_by"] == "infra-lead"
    run_id = run["run_id"]
    assert run["pending_approval"]["step"] == "change"

    shown = run_cli("runbook", "show", run_id, config=lab.config)
    assert "waiting for approval" in shown.stdout and "dr-coordinator" in shown.stdout

    # the requester cannot approve, nor can someone without the role: exit 3, run unchanged
    before = json.loads(run_cli("runbook", "show", run_id, "--json", config=lab.config).stdout)
    for login in ("infra-lead", "app-lead"):
        refused = _as(lab, login, "runbook", "approve", run_id, "--step", "change")
        assert refused.returncode == 3, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
    after = json.loads(run_cli("runbook", "show", run_id, "--json", config=lab.config).stdout)
    assert after["status"] == "waiting_approval"
    assert after["events"] == before["events"]
    refusals = [
        e for e in _events(lab, "recovery.access_denied") if e["details"].get("run_id") == run_id
    ]
    assert {e["actor"] for e in refusals} == {"infra-lead", "app-lead"}

    ok = _as(lab, "dr-coordinator", "runbook", "approve", run_id, "--step", "change", "--json")
    assert ok.returncode == 0, ok.stderr
    done = json.loads(ok.stdout)
    assert done["status"] == "succeeded"
    change = next(s for s in done["steps"] if s["step"] == "change")
    assert change["approved_by"] == "dr-coordinator"
    again = _as(lab, "dr-coordinator", "runbook", "approve", run_id, "--step", "change")
    assert again.returncode == 2  # nothing waits any more


def test_a_refused_approval_aborts_the_run_for_good(lab: LabHandle) -> None:
    res = _as(lab, "infra-lead", "runbook", "run", "approval-selftest", "--yes", "--json")
    assert res.returncode == 1, res.stderr
    run_id = json.loads(res.stdout)["run_id"]
    before = json.loads(run_cli("runbook", "show", run_id, "--json", config=lab.config).stdout)

    # without the role, a refusal is itself refused: exit 3, audited, the run unchanged
    denied = _as(lab, "app-lead", "runbook", "approve", run_id, "--step", "change", "--refuse")
    assert denied.returncode == 3, denied.stderr
    assert len(denied.stderr.strip().splitlines()) == 1 and "does not hold" in denied.stderr
    after = json.loads(run_cli("runbook", "show", run_id, "--json", config=lab.config).stdout)
    assert after["status"] == "waiting_approval" and after["events"] == before["events"]
    assert any(
        e["actor"] == "app-lead" and e["details"].get("run_id") == run_id
        for e in _events(lab, "recovery.access_denied")
    )

    refused = _as(
        lab,
        "dr-coordinator",
        *("runbook", "approve", run_id, "--step", "change", "--refuse"),
        *("--reason", "not during the freeze", "--json"),
    )
    assert refused.returncode == 0, refused.stderr
    data = json.loads(refused.stdout)
    assert data["status"] == "aborted"
    assert "refused by dr-coordinator (not during the freeze)" in data["reason"]
    assert [s["attempts"] for s in data["steps"]] == [1, 0, 0]  # change and confirm never ran
    (ev,) = [
        e for e in _events(lab, "runbook.approval.refused") if e["details"]["run_id"] == run_id
    ]
    assert ev["details"]["by"] == "dr-coordinator"
    assert ev["details"]["reason"] == "not during the freeze"

    # a refused run is not resumed, nor approved afterwards (exit 2)
    again = _as(lab, "infra-lead", "runbook", "resume", run_id)
    assert again.returncode == 2 and "refused" in again.stderr
    late = _as(lab, "dr-coordinator", "runbook", "approve", run_id, "--step", "change")
    assert late.returncode == 2 and "aborted" in late.stderr


def test_the_requester_may_refuse_their_own_run(lab: LabHandle) -> None:
    res = _as(lab, "dr-coordinator", "runbook", "run", "approval-selftest", "--yes", "--json")
    assert res.returncode == 1, res.stderr
    run_id = json.loads(res.stdout)["run_id"]
    args = ("runbook", "approve", run_id, "--step", "change", "--refuse", "--json")
    refused = _as(lab, "dr-coordinator", *args)
    assert refused.returncode == 0, refused.stderr
    assert json.loads(refused.stdout)["status"] == "aborted"


def test_recovery_commands_need_execute_on_their_runbook(lab: LabHandle) -> None:
    res = _as(lab, "app-lead", "recover", "breach", "--all-clients", "--reason", "x", "--yes")
    assert res.returncode == 3, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "security-breach" in res.stderr
    denied = [e for e in _events(lab, "recovery.access_denied") if e["actor"] == "app-lead"]
    assert denied[-1]["details"]["runbook"] == "security-breach"

    # recover component acts as --as too: EAPI's runbook is the application lead's
    res = _as(lab, "security-lead", "recover", "component", "eapi", "--yes")
    assert res.returncode == 3, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "component-eapi" in res.stderr
    denied = [e for e in _events(lab, "recovery.access_denied") if e["actor"] == "security-lead"]
    assert denied[-1]["details"]["runbook"] == "component-eapi"
