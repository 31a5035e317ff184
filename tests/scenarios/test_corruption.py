"""Data corruption recovery on the lab: ``payapi recover corruption``.

A full backup, payments made through the API, then at T a "corruption" (10 amounts
changed, 5 payments deleted, by SQL past the API), then 50 valid payments through the API.
``recover corruption --since T --apply --yes`` recovers a copy just before T beside
production (from the backup and the archived WAL), plans and applies: the 15 are back
exactly as they were, the 50 are all still there, nothing else changed — compared on full
table snapshots. The vault's secret versions the same way: a variable overwritten after T
gets its pre-T value back as a new version. Bad input is one line and exit 2.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from payapi.core.naming import ClientPaths
from payapi.core.settings import load_settings, read_secret_file
from payapi.lab.platform import ACCOUNT, ADMIN_LOGIN
from payapi.servers.postgres import pg_bin
from payapi.vault.client import VaultClient
from tests.scenarios.conftest import LabHandle

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _cli(lab: LabHandle, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "payapi", "--config", str(lab.config), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def _cli_json(lab: LabHandle, *args: str) -> dict[str, object]:
    res = _cli(lab, *args, "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)  # type: ignore[no-any-return]


def _psql(lab: LabHandle, sql: str, db: str = "payment_db") -> str:
    res = subprocess.run(
        [pg_bin("psql"), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d",
         lab.lab.pg.dsn(db), "-c", sql],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def _snapshot(lab: LabHandle) -> dict[str, str]:
    """Every payment, every column: id → its row as jsonb text (UTC)."""
    out = _psql(
        lab,
        "SET TIME ZONE 'UTC'; SELECT id::text || ' ' || to_jsonb(p)::text FROM payments p",
    )
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


def _pay(lab: LabHandle, client: object, refs: list[str]) -> None:
    with lab.http() as http:
        for ref in refs:
            res = http.post(
                "/api/v1/payments",
                headers=client.headers,  # type: ignore[attr-defined]
                json={"amount": "25.00", "currency": "EUR", "reference": ref},
            )
            assert res.status_code in (200, 201), res.text


@dataclass
class Corrupted:
    since: str
    before: dict[str, str]  # the whole table just before T
    changed: list[str]
    deleted: list[str]


@pytest.fixture(scope="module")
def backed_up(lab: LabHandle) -> str:
    """A full backup of the lab's database; returns the time it finished."""
    out = _cli_json(lab, "backup", "run", "--component", "db", "--full")
    return str(out["finished_at"])


@pytest.fixture(scope="module")
def corrupted(lab: LabHandle, backed_up: str) -> Corrupted:
    client = lab.create_client("corruption-lab")
    _pay(lab, client, [f"before-t-{i:02d}" for i in range(30)])
    before = _snapshot(lab)
    ids = sorted(before)
    since = _psql(lab, "SELECT clock_timestamp()")
    time.sleep(0.2)
    changed, deleted = ids[:10], ids[10:15]
    in_list = lambda xs: ", ".join(f"'{x}'" for x in xs)  # noqa: E731
    _psql(
        lab,
        f"BEGIN; UPDATE payments SET amount = amount + 1000 WHERE id IN ({in_list(changed)}); "
        f"DELETE FROM payments WHERE id IN ({in_list(deleted)}); COMMIT;",
    )
    _pay(lab, client, [f"after-t-{i:02d}" for i in range(50)])
    return Corrupted(since, before, changed, deleted)


def _as(lab: LabHandle, login: str, *args: str) -> subprocess.CompletedProcess[str]:
    """payapi as the team member ``login`` (``--as`` with their key file)."""
    key = lab.lab.secrets_dir / f"{login}.api_key"
    return _cli(lab, "--as", login, "--api-key-file", str(key), *args)


def test_corruption_is_corrected_and_later_payments_are_kept(
    lab: LabHandle, corrupted: Corrupted, outside_tmp: Path
) -> None:
    before_recover = _snapshot(lab)
    later = {k: v for k, v in before_recover.items() if k not in corrupted.before}
    assert len(later) == 50
    assert all(before_recover[k] != corrupted.before[k] for k in corrupted.changed)

    plan_file = outside_tmp / "plan.json"
    work = outside_tmp / "work"
    out = _cli_json(
        lab, "recover", "corruption", "--component", "db", "--since", corrupted.since,
        "--apply", "--yes", "--verify", "--plan-file", str(plan_file), "--work-dir", str(work),
    )  # fmt: skip

    # The 15 are back exactly as before T; the 50 are all still there; nothing else.
    after_apply = _snapshot(lab)
    assert after_apply == {**corrupted.before, **later}
    assert out["applied"] is True
    assert (out["restored_rows"], out["deleted_rows_restored"], out["kept_rows"]) == (15, 5, 50)
    for key in ("restored_rows", "deleted_rows_restored", "kept_rows"):
        assert type(out[key]) is int
    assert out["plan_file"] == str(plan_file)
    assert out["integrity"]["ok"] is True  # type: ignore[index]
    assert out["audit"]["seq"]  # type: ignore[index]
    assert datetime.fromisoformat(str(out["target_time"])) < datetime.fromisoformat(
        corrupted.since.replace(" ", "T", 1)
    )
    # The scratch copy is gone: no data directory left, nothing listening on its port.
    assert out["scratch"]["removed"] and list(work.iterdir()) == []  # type: ignore[index]
    port = int(out["scratch"]["port"])  # type: ignore[index]
    assert not Path("/proc/net/tcp").read_text().count(f":{port:04X} 00000000:0000 0A")

    plan = json.loads(plan_file.read_text())
    assert plan_file.stat().st_mode & 0o777 == 0o600
    (table,) = plan["tables"]
    actions = sorted(c["action"] for c in table["changes"])
    assert actions == ["insert"] * 5 + ["update"] * 10
    update = next(c for c in table["changes"] if c["action"] == "update")
    assert set(update["diff"]) == {"amount"}
    assert len(table["kept"]) == 50

    events = _cli_json(lab, "audit", "list", "--type", "recovery.corruption.applied")
    assert events[-1]["details"]["restored_rows"] == 15  # type: ignore[index]

    # Run again (for people this time): nothing left to correct; one later payment
    # marked by the operator would be dropped, the 49 others kept.
    marked = outside_tmp / "drop-ids.txt"
    marked.write_text(f"# created by mistake\n{sorted(later)[0]}\n")
    again = _cli(
        lab, "recover", "corruption", "--component", "db", "--since", corrupted.since,
        "--drop-ids", str(marked), "--plan-file", str(outside_tmp / "plan2.json"),
        "--work-dir", str(work),
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "payments: 0 restored" in again.stdout
    assert "49 created after T kept, 1 dropped" in again.stdout
    assert "not applied" in again.stdout
    assert _snapshot(lab) == after_apply  # a plan alone changes nothing


def _started(journal: Path, step: str) -> bool:
    for line in journal.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # being written
        if rec.get("type") == "start" and rec.get("step") == step:
            return True
    return False


def test_a_correction_killed_mid_step_resumes_and_completes(
    lab: LabHandle, corrupted: Corrupted, outside_tmp: Path
) -> None:
    """SIGKILL in the middle of the point-in-time recovery (the CLI and everything in its
    session, as a dying host would): ``runbook resume`` re-runs that step from its start
    (a leftover copy is removed first) and the correction completes."""
    import os
    import signal

    before = _snapshot(lab)
    since = _psql(lab, "SELECT clock_timestamp()")
    time.sleep(0.2)
    hit = sorted(before)[20:23]
    ids = ", ".join(f"'{x}'" for x in hit)
    _psql(lab, f"UPDATE payments SET amount = amount + 500 WHERE id IN ({ids})")
    work = outside_tmp / "work-kill"
    journals = lab.config.parent / "runbooks"
    known = set(journals.glob("*.jsonl"))
    argv = [sys.executable, "-m", "payapi", "--config", str(lab.config), "recover",
            "corruption", "--component", "db", "--since", since, "--apply", "--yes",
            "--plan-file", str(outside_tmp / "plan-kill.json"), "--work-dir", str(work),
            "--json"]  # fmt: skip
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert time.monotonic() < deadline, "the pitr step did not start"
            assert proc.poll() is None, "the run ended before it could be killed"
            new = set(journals.glob("*.jsonl")) - known
            if new and _started(next(iter(new)), "pitr"):
                break
            time.sleep(0.05)
        time.sleep(0.5)  # into the restore
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    (journal,) = set(journals.glob("*.jsonl")) - known
    run_id = journal.stem
    assert _snapshot(lab) != before  # nothing was corrected yet

    res = _cli(lab, "runbook", "resume", run_id, "--json")
    assert res.returncode == 0, res.stderr
    run = json.loads(res.stdout)
    assert run["status"] == "succeeded"
    steps = {s["step"]: s for s in run["steps"]}
    assert steps["pitr"]["interrupted"] == 1 and steps["pitr"]["attempts"] == 2
    assert steps["apply"]["status"] == "ok" and steps["cleanup"]["status"] == "ok"
    assert _snapshot(lab) == before  # the 3 are back, nothing else changed
    assert list(work.iterdir()) == []  # no copy left, the killed attempt's neither


def test_an_operator_s_correction_waits_for_the_coordinator_s_approval(
    lab: LabHandle, corrupted: Corrupted, outside_tmp: Path
) -> None:
    """Run by a named operator, the apply step waits for the DR coordinator (four eyes);
    the approval applies it, with the scratch copy kept up meanwhile."""

    def as_(login: str, *args: str) -> subprocess.CompletedProcess[str]:
        return _as(lab, login, *args)

    before = _snapshot(lab)
    since = _psql(lab, "SELECT clock_timestamp()")
    time.sleep(0.2)
    (hit,) = sorted(before)[25:26]
    _psql(lab, f"DELETE FROM payments WHERE id = '{hit}'")
    work = outside_tmp / "work-approve"
    res = as_(
        "infra-lead", "recover", "corruption", "--component", "db", "--since", since,
        "--apply", "--yes", "--plan-file", str(outside_tmp / "plan-approve.json"),
        "--work-dir", str(work), "--json",
    )  # fmt: skip
    assert res.returncode == 1, res.stderr
    out = json.loads(res.stdout)
    assert out["applied"] is False and out["deleted_rows_restored"] == 1
    assert "waits for the approval of step apply" in res.stderr
    assert hit not in _snapshot(lab)
    denied = as_("app-lead", "runbook", "approve", out["run_id"], "--step", "apply")
    assert denied.returncode == 3, denied.stderr
    ok = as_("dr-coordinator", "runbook", "approve", out["run_id"], "--step", "apply", "--json")
    assert ok.returncode == 0, ok.stderr
    run = json.loads(ok.stdout)
    assert run["status"] == "succeeded"
    assert next(s for s in run["steps"] if s["step"] == "apply")["approved_by"] == (
        "dr-coordinator"
    )
    assert _snapshot(lab) == before and list(work.iterdir()) == []


def test_a_refused_correction_removes_its_scratch_copy_and_changes_nothing(
    lab: LabHandle, corrupted: Corrupted, outside_tmp: Path
) -> None:
    """The coordinator refuses the apply: the run ends aborted for good, the scratch copy
    is stopped and deleted (the apply's rollback, as its clean-up), live is untouched."""

    def as_(login: str, *args: str) -> subprocess.CompletedProcess[str]:
        return _as(lab, login, *args)

    since = _psql(lab, "SELECT clock_timestamp()")
    time.sleep(0.2)
    (hit,) = sorted(_snapshot(lab))[30:31]
    _psql(lab, f"DELETE FROM payments WHERE id = '{hit}'")
    after_delete = _snapshot(lab)
    work = outside_tmp / "work-refuse"
    res = as_(
        "infra-lead", "recover", "corruption", "--component", "db", "--since", since,
        "--apply", "--yes", "--plan-file", str(outside_tmp / "plan-refuse.json"),
        "--work-dir", str(work), "--json",
    )  # fmt: skip
    assert res.returncode == 1, res.stderr
    run_id = json.loads(res.stdout)["run_id"]
    assert list(work.iterdir()), "the copy is kept while the run waits"
    no = as_(
        "dr-coordinator", "runbook", "approve", run_id, "--step", "apply",
        "--refuse", "--reason", "wrong window", "--json",
    )  # fmt: skip
    assert no.returncode == 0, no.stderr
    run = json.loads(no.stdout)
    assert run["status"] == "aborted" and run["reason"].endswith("cleaned up by discard")
    assert list(work.iterdir()) == []
    assert _snapshot(lab) == after_delete  # nothing applied


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "2999-01-01T00:00:00Z"], "in the future"),
        (["--since", "2001-01-01T00:00:00Z"], "before the oldest database backup"),
        (["--since", "{now}", "--tables", "no_such_table"], "no such table"),
        (["--since", "{now}", "--tables", "audit_events"], "append-only"),
        (["--since", "yesterday"], "not an ISO 8601 time"),
        (["--since", "{now}", "--component", "redis"], "db or vault"),
        (["--since", "{now}", "--apply"], "--yes"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    lab: LabHandle, backed_up: str, args: list[str], message: str
) -> None:
    now = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    argv = [a.replace("{now}", now) for a in args]
    if "--component" not in argv:
        argv += ["--component", "db"]
    res = _cli(lab, "recover", "corruption", *argv, timeout=120)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert res.stdout == ""


def _admin(lab: LabHandle) -> VaultClient:
    config = load_settings(lab.config)
    key = read_secret_file(config.vault.admin_api_key_file, "vault admin API key")
    return VaultClient(lab.status["vault"]["url"], ACCOUNT, ADMIN_LOGIN, key)


def test_vault_variables_get_their_pre_t_value_as_a_new_version(
    lab: LabHandle, backed_up: str, outside_tmp: Path
) -> None:
    client = lab.create_client("vault-corruption")
    variable = ClientPaths(client.name).client_secret
    rid = f"{ACCOUNT}:variable:{variable}"
    versions = lambda: int(  # noqa: E731
        _psql(lab, f"SELECT max(version) FROM secrets WHERE resource_id = '{rid}'", "vault_db")
    )
    v_before = versions()
    since = _psql(lab, "SELECT clock_timestamp()")
    time.sleep(0.2)

    async def corrupt() -> None:
        async with _admin(lab) as admin:
            for i in range(3):
                await admin.set_secret(variable, SecretStr(f"garbage-{i}"))

    asyncio.run(corrupt())
    later = lab.create_client("vault-corruption-later")  # created after T: kept
    plan_file = outside_tmp / "vault-plan.json"
    res = _cli(
        lab, "recover", "corruption", "--component", "vault", "--since", since,
        "--apply", "--yes", "--verify", "--plan-file", str(plan_file), "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["applied"] and out["restored_rows"] >= 1
    assert out["new_versions"][rid] == v_before + 4  # history kept, one new version
    assert out["kept_rows"] >= 4  # the later client's variables

    async def read() -> tuple[str, str]:
        async with _admin(lab) as admin:
            a = await admin.get_secret(variable)
            b = await admin.get_secret(ClientPaths(later.name).client_secret)
            return a.get_secret_value(), b.get_secret_value()

    now_value, later_value = asyncio.run(read())
    assert now_value == client.client_secret
    assert later_value == later.client_secret
    secrets = (client.client_secret, later.client_secret, "garbage-")
    for text in (plan_file.read_text(), res.stdout, res.stderr):
        assert not any(s in text for s in secrets)
    plan = json.loads(plan_file.read_text())
    entry = next(v for v in plan["variables"] if v["variable"] == rid)
    assert entry["before"]["version"] == v_before
    assert len(entry["before"]["sealed_sha256_prefix"]) == 12
