"""`payapi incident` end to end through the real command, with no server at all (the
database "stopped": nothing listens anywhere), the outbox as the channel."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLAN = ROOT / "tests" / "data" / "dr-plan-contacts.yaml"
DOWN = "127.0.0.1:1"  # nothing listens on port 1


def payapi(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "payapi", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def config(tmp_path: Path, plan: Path | None = PLAN) -> Path:
    cfg = tmp_path / "payapi.toml"
    lines = [f'plan_file = "{plan}"'] if plan else []
    lines += [
        "[eapi]",
        f'url = "http://{DOWN}"',
        "[sapi]",
        f'url = "http://{DOWN}"',
        "[vault]",
        f'url = "http://{DOWN}"',
        "[redis]",
        f'url = "redis://{DOWN}/0"',
        "[postgres]",
        f'payment_dsn = "postgresql://payapi@{DOWN}/payment_db"',
    ]
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def test_declare_and_complete_with_every_server_down(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    res = payapi(
        cfg,
        "incident",
        "declare",
        "--description",
        "Primary database lost",
        "--impact",
        "Payments are refused",
        "--services",
        "sapi,db",
        "--now",
        "2026-05-01T14:05:00Z",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["incident_id"] == "INC-20260501-001" and out["state"] == "declared"
    assert out["declared_at"].startswith("2026-05-01T14:05")
    assert out["message"].startswith("DISASTER RECOVERY INITIATED: INC-20260501-001")
    # No [[incident.channels]]: the one channel is the file outbox beside the config.
    assert out["sent"] and all(s["channel"] == "outbox" and s["ok"] for s in out["sent"])
    assert out["unreachable_roles"] == ["vendor-coordinator"]
    assert "vendor-coordinator" in res.stderr
    written = "".join(f.read_text() for f in (tmp_path / "outbox").iterdir())
    assert "DR Coordinator: Ada Lovelace" in written

    res = payapi(
        cfg,
        "incident",
        "complete",
        "INC-20260501-001",
        "--outcome",
        "Recovered",
        "--follow-up",
        "Review",
        "--review-at",
        "2026-05-04T09:00:00Z",
        "--now",
        "2026-05-01T17:47:30Z",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    done = json.loads(res.stdout)
    assert done["total_recovery_duration"] == "03:42"
    assert done["state"] == "recovered"
    states = {s["service"]: s["state"] for s in done["recovered_services"]}
    assert set(states) == {"payment-sapi", "database"}
    assert all(state != "Fully operational" for state in states.values())
    assert "unreachable" in states["payment-sapi"]
    assert "Fully operational" not in done["message"]

    listed = json.loads(payapi(cfg, "incident", "list", "--json").stdout)
    assert [i["state"] for i in listed] == ["recovered"]
    timeline = json.loads(payapi(cfg, "incident", "timeline", "INC-20260501-001", "--json").stdout)
    types = [e["type"] for e in timeline]
    assert types[:3] == ["declared", "message_rendered", "message_sent"]
    assert "completed" in types and "repository_copy" in types
    sent = [e for e in timeline if e["type"] == "message_sent"]
    assert all(len(e["sha256"]) == 64 and e["channel"] == "outbox" for e in sent)
    shown = json.loads(payapi(cfg, "incident", "show", "INC-20260501-001", "--json").stdout)
    assert shown["incident_id"] == "INC-20260501-001"
    verified = payapi(cfg, "incident", "verify", "--json")
    assert verified.returncode == 0 and json.loads(verified.stdout)["ok"]


def test_drill_ack_and_bad_usage(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    res = payapi(
        cfg,
        "incident", "declare", "--description", "d", "--impact", "i",
        "--services", "eapi", "--drill", "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["message"].startswith("[DRILL] DISASTER RECOVERY INITIATED")
    inc = out["incident_id"]
    res = payapi(cfg, "incident", "ack", inc, "--role", "dr-coordinator", "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["role"] == "dr-coordinator"
    res = payapi(cfg, "incident", "ack", inc, "--role", "nobody")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    res = payapi(cfg, "incident", "show", "INC-20990101-001")
    assert res.returncode == 2 and "no incident" in res.stderr
    res = payapi(
        cfg, "incident", "declare", "--description", "d", "--impact", "i", "--services", "nope"
    )
    assert res.returncode == 2 and "unknown component" in res.stderr


def test_an_edited_journal_fails_verify(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    args = ["incident", "declare", "--description", "d", "--impact", "i", "--services", "eapi"]
    assert payapi(cfg, *args).returncode == 0
    journal = tmp_path / "incidents" / "incidents.jsonl"
    journal.write_text(journal.read_text().replace('"impact":"i"', '"impact":"nothing"', 1))
    res = payapi(cfg, "incident", "verify", "--json")
    assert res.returncode == 1
    problem = json.loads(res.stdout)["problem"]
    assert problem["kind"] == "edited" and problem["seq"] == 1


def test_the_packaged_plan_declares_and_says_who_cannot_be_reached(tmp_path: Path) -> None:
    cfg = config(tmp_path, plan=None)
    res = payapi(
        cfg, "incident", "declare", "--description", "d", "--impact", "i", "--services", "eapi",
        "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert "dr-coordinator" in out["unreachable_roles"]
    assert [(x["channel"], x["ok"]) for x in out["sent"]] == [("outbox", True)]
    check = payapi(cfg, "plan", "check", "--feasibility", "--json")
    assert check.returncode in (0, 1)
    assert "placeholder contacts" in check.stderr


def test_the_channels_module_is_used_when_present_and_no_channel_is_exit_1(
    tmp_path: Path,
) -> None:
    """A fake ``payapi.incident.notify`` (the channels half's interface): its results are
    the ones recorded; when none is ok the command fails."""
    import types
    from dataclasses import dataclass

    import pytest
    from typer.testing import CliRunner

    from payapi.cli.main import app

    @dataclass(frozen=True)
    class Message:
        subject: str
        body: str
        drill: bool

    @dataclass(frozen=True)
    class Recipient:
        role: str
        name: str
        contact: str

    @dataclass(frozen=True)
    class SendResult:
        channel: str
        kind: str
        role: str
        ok: bool
        sha256: str
        error: str | None
        fallback: bool

    seen: list[tuple[Message, list[Recipient]]] = []

    def deliver(
        settings: object, plan: object, message: Message, to: list[Recipient]
    ) -> list[SendResult]:
        seen.append((message, list(to)))
        return [SendResult("smtp", "smtp", r.role, False, "0" * 64, "refused", False) for r in to]

    fake = types.ModuleType("payapi.incident.notify")
    fake.Message = Message  # type: ignore[attr-defined]
    fake.Recipient = Recipient  # type: ignore[attr-defined]
    fake.deliver = deliver  # type: ignore[attr-defined]
    mp = pytest.MonkeyPatch()
    mp.setitem(sys.modules, "payapi.incident.notify", fake)
    try:
        cfg = config(tmp_path)
        res = CliRunner().invoke(
            app,
            ["--config", str(cfg), "incident", "declare", "--description", "d",
             "--impact", "i", "--services", "eapi", "--drill", "--json"],
        )  # fmt: skip
    finally:
        mp.undo()
    assert res.exit_code == 1
    ((message, to),) = seen
    assert message.drill and message.subject.startswith("[DRILL] ")
    assert {"dr-coordinator", "communications-lead"} <= {r.role for r in to}
    assert {r.contact for r in to} >= {"ada@example.com"}
    incident_id = json.loads(res.stdout)["incident_id"]
    timeline = json.loads(payapi(cfg, "incident", "timeline", incident_id, "--json").stdout)
    sent = [e for e in timeline if e["type"] == "message_sent"]
    assert sent and all(e["channel"] == "smtp" and not e["ok"] for e in sent)
    assert sent[0]["error"] == "refused"


def test_sweep_escalates_an_unacknowledged_page_once_and_not_an_acked_one(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    declared = payapi(
        cfg, "incident", "declare", "--description", "Region lost", "--impact", "No payments",
        "--services", "eapi", "--next-update", "2h", "--now", "2026-05-01T14:00:00Z", "--json",
    )  # fmt: skip
    assert declared.returncode == 0, declared.stderr
    inc = json.loads(declared.stdout)["incident_id"]
    acked = payapi(cfg, "incident", "ack", inc, "--role", "dr-coordinator",
                   "--now", "2026-05-01T14:05:00Z")  # fmt: skip
    assert acked.returncode == 0, acked.stderr
    early = payapi(cfg, "incident", "sweep", "--json", "--now", "2026-05-01T14:05:00Z")
    assert early.returncode == 0, early.stderr
    assert json.loads(early.stdout)["escalations"] == []  # within the delay
    late = payapi(cfg, "incident", "sweep", "--json", "--now", "2026-05-01T14:30:00Z")
    assert late.returncode == 0, late.stderr
    roles = {e["role"] for e in json.loads(late.stdout)["escalations"]}
    assert roles and "dr-coordinator" not in roles  # acked: not escalated
    again = payapi(cfg, "incident", "sweep", "--json", "--now", "2026-05-01T14:31:00Z")
    assert json.loads(again.stdout)["escalations"] == []  # each role escalated once
    timeline = payapi(cfg, "incident", "timeline", inc, "--json")
    assert "sweep_sent" in timeline.stdout


def test_a_failed_primary_channel_falls_back_and_the_timeline_has_both(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    cfg.write_text(
        cfg.read_text()
        + '[[incident.channels]]\nname = "email"\nkind = "smtp"\nhost = "127.0.0.1"\n'
        'port = 1\nfrom = "dr@example.com"\ntimeout_seconds = 2\n'  # nothing listens: refused
        '[[incident.channels]]\nname = "outbox"\nkind = "file"\ntier = "backup"\n'
    )
    res = payapi(
        cfg, "incident", "declare", "--description", "Region lost", "--impact", "None",
        "--services", "eapi", "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr  # the backup channel took it
    out = json.loads(res.stdout)
    channels = {(s["channel"], s["ok"]) for s in out["sent"]}
    assert ("email", False) in channels and ("outbox", True) in channels
    timeline = json.loads(payapi(cfg, "incident", "timeline", out["incident_id"], "--json").stdout)
    events = timeline["timeline"] if isinstance(timeline, dict) else timeline
    sent = [e for e in events if e["type"] == "message_sent"]
    assert {e["channel"] for e in sent} == {"email", "outbox"}
