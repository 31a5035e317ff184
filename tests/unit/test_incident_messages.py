"""The three messages, rendered from a plan with real contacts, against the seed's templates;
the state machine, id numbering and drill stamping of incidents (no server involved)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from payapi.core.errors import UsageError
from payapi.core.plan import Plan, load_plan
from payapi.incident import service
from payapi.incident.journal import IncidentJournal
from payapi.incident.model import IncidentState, ServiceState, next_id, transition
from payapi.incident.render import TemplateFieldError, Templates

ROOT = Path(__file__).resolve().parents[2]
PLAN = ROOT / "tests" / "data" / "dr-plan-contacts.yaml"
SEED_CANDIDATES = [
    ROOT / "seed" / "dr-plan-payment-api.md",
    Path("/work/shared/seed/dr-plan-payment-api.md"),
]
T0 = datetime(2026, 5, 1, 14, 5, 33, tzinfo=UTC)
TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d UTC"

# A copy of the seed's three templates (Communication Plan > Communication Templates), used
# when the seed file itself is not on this machine; when it is, it must equal this copy.
SEED_COPY = {
    "Disaster Declaration Template": """\
DISASTER RECOVERY INITIATED: [Incident ID] - [Brief Description]

Time Declared: [YYYY-MM-DD HH:MM UTC]
Impact: [Brief impact description]
Affected Services: [List of affected services]

DR Coordinator: [Name]
Communications Lead: [Name]

Current Status: DR plan activated, recovery in progress
Estimated Recovery Time: [Estimate or "Under assessment"]

Next Update: [Time]

Conference Bridge: [Link]
Slack Channel: #disaster-recovery""",
    "Status Update Template": """\
DR STATUS UPDATE: [Incident ID] - [Brief Description]

Time: [YYYY-MM-DD HH:MM UTC]
Current Status: [Recovery phase]

Progress:
- [Key milestone 1]
- [Key milestone 2]

Remaining Steps:
- [Step 1]
- [Step 2]

Revised Recovery Estimate: [Updated time]
Next Update: [Time]""",
    "Recovery Complete Template": """\
DR RECOVERY COMPLETE: [Incident ID] - [Brief Description]

Time Completed: [YYYY-MM-DD HH:MM UTC]
Total Recovery Duration: [HH:MM]

Recovered Services:
- [Service 1]: Fully operational
- [Service 2]: Fully operational

Outcome Summary:
- [Brief summary of recovery outcome]
- [Any remaining minor issues]

Follow-up Actions:
- [Action 1]
- [Action 2]

Post-Recovery Review scheduled for: [Date/Time]""",
}


def seed_template(title: str) -> str:
    """The template's text from the seed file (the code block after its title)."""
    for path in SEED_CANDIDATES:
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            m = re.search(rf"\*\*{re.escape(title)}\*\*:\n```\n(.*?)(?:\n```|\Z)", text, re.S)
            assert m, f"{title} not found in {path}"
            return m.group(1).rstrip("\n")
    return SEED_COPY[title]


@pytest.mark.parametrize("title", sorted(SEED_COPY))
def test_the_copy_is_the_seed(title: str) -> None:
    assert seed_template(title) == SEED_COPY[title]


def assert_matches_seed(rendered: str, title: str, values: dict[str, str]) -> None:
    """Line for line: literal text equal, each [placeholder] replaced. A run of "- [x N]"
    lines matches one or more "- ..." lines. ``values`` pins placeholders to exact text."""
    seed = seed_template(title).split("\n")
    got = rendered.rstrip("\n").split("\n")
    i = 0
    j = 0
    while i < len(seed):
        line = seed[i]
        is_item = line.startswith("- [")
        pattern = ""
        for part in re.split(r"(\[[^\]]*\])", line):
            if part.startswith("[") and part.endswith("]"):
                if part in values:
                    pattern += re.escape(values[part])
                elif part == "[YYYY-MM-DD HH:MM UTC]":
                    pattern += TIME
                else:
                    pattern += r"(?!\[).+"
            else:
                pattern += re.escape(part)
        if is_item:
            start = j
            while j < len(got) and got[j].startswith("- "):
                assert re.fullmatch(r"- (?!\[).+", got[j]), got[j]
                j += 1
            assert j > start, f"line {j + 1}: expected items for {line!r}"
            while i < len(seed) and seed[i].startswith("- ["):
                i += 1
            continue
        assert j < len(got), f"message ends before {line!r}"
        assert re.fullmatch(pattern, got[j]), f"line {j + 1}: {got[j]!r} vs seed {line!r}"
        i += 1
        j += 1
    assert j == len(got), f"extra lines: {got[j:]}"


@pytest.fixture
def plan() -> Plan:
    return load_plan(PLAN)


@pytest.fixture
def journal(tmp_path: Path) -> IncidentJournal:
    return IncidentJournal(tmp_path / "incidents")


def declare(journal: IncidentJournal, plan: Plan, **kw: object) -> service.Outcome:
    args: dict[str, object] = {
        "description": "Primary database lost",
        "impact": "Payments are refused",
        "services": ["sapi", "db"],
        "now": T0,
    }
    args.update(kw)
    return service.declare(journal=journal, plan=plan, templates=Templates(), **args)  # type: ignore[arg-type]


def test_the_declaration_matches_the_seed_line_for_line(
    journal: IncidentJournal, plan: Plan
) -> None:
    out = declare(journal, plan, estimate="2h")
    assert out.incident.id == "INC-20260501-001"
    assert_matches_seed(
        out.message.text,
        "Disaster Declaration Template",
        {
            "[Incident ID]": "INC-20260501-001",
            "[Brief Description]": "Primary database lost",
            "[YYYY-MM-DD HH:MM UTC]": "2026-05-01 14:05 UTC",
            "[Brief impact description]": "Payments are refused",
            "[List of affected services]": "Payment-SAPI, Database",
            '[Estimate or "Under assessment"]': "2h",
            "[Time]": "2026-05-01 14:35 UTC",
            "[Link]": "https://meet.example.com/dr-bridge",
        },
    )
    lines = out.message.text.splitlines()
    assert "DR Coordinator: Ada Lovelace" in lines
    assert "Communications Lead: Margaret Hamilton" in lines
    assert out.message.subject == lines[0]
    assert out.unreachable == ("vendor-coordinator",)
    assert {r.role for r in out.recipients} >= {"dr-coordinator", "communications-lead"}
    assert "vendor-coordinator" not in {r.role for r in out.recipients}


def test_the_estimate_defaults_to_under_assessment(journal: IncidentJournal, plan: Plan) -> None:
    out = declare(journal, plan)
    assert "Estimated Recovery Time: Under assessment" in out.message.text.splitlines()


def test_the_status_update_matches_the_seed(journal: IncidentJournal, plan: Plan) -> None:
    inc = declare(journal, plan).incident
    out = service.update(
        journal=journal,
        plan=plan,
        templates=Templates(),
        incident_id=inc.id,
        status="Restoring the database",
        progress=["Standby promoted", "SAPI restarted"],
        remaining=["Verify payments", "Fail back"],
        estimate="1h",
        now=T0 + timedelta(minutes=20),
        next_update=timedelta(minutes=15),
    )
    assert out.incident.state is IncidentState.RECOVERING
    assert_matches_seed(
        out.message.text,
        "Status Update Template",
        {
            "[Incident ID]": inc.id,
            "[Recovery phase]": "Restoring the database",
            "[Updated time]": "1h",
            "[Time]": "2026-05-01 14:40 UTC",
        },
    )
    assert "- Standby promoted" in out.message.text.splitlines()


def test_recovery_complete_matches_the_seed_and_reports_real_states(
    journal: IncidentJournal, plan: Plan
) -> None:
    inc = declare(journal, plan).incident
    health = {
        "payment-sapi": ServiceState("payment-sapi", "Payment-SAPI", True, "Fully operational"),
        "database": ServiceState("database", "Database", False, "not healthy: pg1 unreachable"),
    }
    out = service.complete(
        journal=journal,
        plan=plan,
        templates=Templates(),
        incident_id=inc.id,
        outcomes=["Recovered from the standby", "Reports delayed"],
        follow_ups=["Review the alerting"],
        health=health,
        now=T0 + timedelta(hours=2, minutes=7, seconds=50),
        review_at=datetime(2026, 5, 4, 9, 0, tzinfo=UTC),
    )
    assert out.incident.state is IncidentState.RECOVERED
    text = out.message.text
    assert "Total Recovery Duration: 02:07" in text.splitlines()
    assert "- Payment-SAPI: Fully operational" in text.splitlines()
    assert "- Database: not healthy: pg1 unreachable" in text.splitlines()
    assert "Post-Recovery Review scheduled for: 2026-05-04 09:00 UTC" in text.splitlines()
    # the seed's "- [Service N]: Fully operational" lines are a list: each item carries
    # the service's real state, so the comparison takes them as items
    assert_matches_seed(
        text,
        "Recovery Complete Template",
        {"[Incident ID]": inc.id, "[HH:MM]": "02:07", "[Date/Time]": "2026-05-04 09:00 UTC"},
    )
    types = [e.type for e in out.incident.timeline]
    assert types[0] == "declared" and "completed" in types
    assert types.count("message_rendered") == 2


def test_a_missing_template_field_is_an_error_naming_it(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "declaration.txt").write_text("INCIDENT {{ incident_id }} on {{ pager_number }}\n")
    with pytest.raises(TemplateFieldError, match="pager_number"):
        Templates(folder).render("declaration", {"incident_id": "INC-1"}, drill=False)


def test_an_operators_template_replaces_the_packaged_one(
    tmp_path: Path, journal: IncidentJournal, plan: Plan
) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "declaration.txt").write_text("DR {{ incident_id }}: {{ description }}\n")
    out = service.declare(
        journal=journal,
        plan=plan,
        templates=Templates(folder),
        description="x",
        impact="y",
        services=["eapi"],
        now=T0,
    )
    assert out.message.text == "DR INC-20260501-001: x\n"


def test_a_bad_template_declares_nothing(
    tmp_path: Path, journal: IncidentJournal, plan: Plan
) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "declaration.txt").write_text("{{ nope }}\n")
    with pytest.raises(TemplateFieldError, match="nope"):
        service.declare(
            journal=journal,
            plan=plan,
            templates=Templates(folder),
            description="x",
            impact="y",
            services=["eapi"],
            now=T0,
        )
    assert journal.entries() == ()


def test_drill_stamps_the_first_line_and_subject_of_every_message(
    journal: IncidentJournal, plan: Plan
) -> None:
    out = declare(journal, plan, drill=True)
    assert out.message.text.startswith("[DRILL] DISASTER RECOVERY INITIATED: ")
    assert out.message.subject.startswith("[DRILL] ")
    assert out.message.drill
    assert_matches_seed(
        out.message.text.removeprefix("[DRILL] "), "Disaster Declaration Template", {}
    )
    up = service.update(
        journal=journal,
        plan=plan,
        templates=Templates(),
        incident_id=out.incident.id,
        status="s",
        progress=["p"],
        remaining=[],
        now=T0,
    )
    assert up.message.subject.startswith("[DRILL] DR STATUS UPDATE")
    done = service.complete(
        journal=journal,
        plan=plan,
        templates=Templates(),
        incident_id=out.incident.id,
        outcomes=["o"],
        follow_ups=[],
        health={},
        now=T0,
    )
    assert done.message.text.startswith("[DRILL] DR RECOVERY COMPLETE")
    assert done.message.text.count("[DRILL]") == 1


def test_ids_count_per_day(journal: IncidentJournal, plan: Plan) -> None:
    a = declare(journal, plan).incident.id
    b = declare(journal, plan).incident.id
    c = declare(journal, plan, now=T0 + timedelta(days=1)).incident.id
    assert (a, b, c) == ("INC-20260501-001", "INC-20260501-002", "INC-20260502-001")
    assert next_id(["INC-20260501-009", "junk"], T0) == "INC-20260501-010"


def test_state_transitions_go_one_way() -> None:
    s = IncidentState
    assert transition(s.DECLARED, s.RECOVERING) is s.RECOVERING
    assert transition(s.RECOVERING, s.RECOVERED) is s.RECOVERED
    assert transition(s.RECOVERED, s.CLOSED) is s.CLOSED
    for a, b in [(s.DECLARED, s.CLOSED), (s.RECOVERED, s.RECOVERING), (s.CLOSED, s.DECLARED)]:
        with pytest.raises(UsageError):
            transition(a, b)


def test_a_completed_incident_takes_no_update_and_closes_once(
    journal: IncidentJournal, plan: Plan
) -> None:
    inc = declare(journal, plan).incident
    service.complete(
        journal=journal,
        plan=plan,
        templates=Templates(),
        incident_id=inc.id,
        outcomes=["o"],
        follow_ups=[],
        health={},
        now=T0,
    )
    with pytest.raises(UsageError, match="recovered"):
        service.update(
            journal=journal,
            plan=plan,
            templates=Templates(),
            incident_id=inc.id,
            status="s",
            progress=["p"],
            remaining=[],
            now=T0,
        )
    assert service.close(journal=journal, incident_id=inc.id, now=T0).state is IncidentState.CLOSED
    with pytest.raises(UsageError):
        service.close(journal=journal, incident_id=inc.id, now=T0)


def test_ack_records_a_known_role(journal: IncidentJournal, plan: Plan) -> None:
    inc = declare(journal, plan).incident
    acked = service.ack(journal=journal, incident_id=inc.id, role="DR-Coordinator", now=T0)
    assert "dr-coordinator" in acked.acks
    with pytest.raises(UsageError, match="not a role"):
        service.ack(journal=journal, incident_id=inc.id, role="janitor", now=T0)
